"""Several processes, launched for real on the CPU (gloo): torchrun, accelerate launch, and the sweep launchers.

* Two-process evaluation equals one-process evaluation sample for sample (batches that leave the ranks
  uneven, the blind baseline, a journal written by one process and finished by two).
* Two-process training without accumulation equals one-process training with accumulation 2 (and with
  accumulation 2 against 4), for DDP and FSDP2, with ALIGN reading the embedding matrix of an LLM sharded by
  FSDP; a two-process run crashed at step 3 resumes from rank 0's checkpoint to the same weights.
* `torchrun -m alignbench run`, `accelerate launch -m alignbench run` and `torchrun -m alignbench eval` give the
  single process's weights and predictions, write one run directory and one leaderboard row, and record the
  world size and the accumulation; a layout that does not divide is one line, exit code 2.
* `alignbench sweep --launcher local|submitit` run each job as its own process(es) and collect every result into
  the one leaderboard.
"""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file

from alignbench.config.backbone import BackboneConfig
from alignbench.config.parallel import batch_layout
from alignbench.dist.context import SINGLE, Dist, rank_slices
from alignbench.errors import AlignBenchError
from alignbench.evaluate import evaluate
from alignbench.run.workspace import Workspace
from tests.distributed import cases
from tests.support.cli import cli_env, command
from tests.support.runs import only_run_dir

WORKER = Path(__file__).resolve().parent / "worker.py"  # run by path: torchrun starts it as a script
BIN = Path(sys.executable).parent
# Float tolerances of "the same weights". Summing micro-batch gradients on one process or across two
# (all-reduce, reduce-scatter) rounds differently, and Adam turns the rounding of tiny gradients into larger
# weight differences: in float64 (the training cases) the measured differences after 3 steps are below 1e-10,
# against 7.5e-3 moved by training; the commands train in float32, where they measured 0 and 6e-8.
ATOL = 1e-8
ATOL_FLOAT32 = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, nproc: int = 2) -> list[str]:
    return [str(BIN / "torchrun"), f"--nproc-per-node={nproc}", f"--master-port={_free_port()}", *map(str, args)]


def run_cmd(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # one thread per process (two processes on a small machine); the single-process references use one too
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=900, env=cli_env())
    port = next((a for a in cmd if a.startswith("--master-port=")), None)
    if res.returncode and port and "address already in use" in res.stderr.lower():  # the free port was taken
        return run_cmd([f"--master-port={_free_port()}" if a == port else a for a in cmd], cwd)
    return res


@pytest.fixture(scope="module")
def ws():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Workspace(BackboneConfig(), cases.DATA, "cpu", log=lambda *a, **k: None)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def two_ranks(ws, tmp_path_factory):
    """One torchrun of tests/distributed/worker.py (2 processes), after one process wrote part of a journal."""
    out = tmp_path_factory.mktemp("two-ranks")
    journal = out / "predictions.partial.jsonl"
    task, split, feats, model = cases.eval_setup(ws)
    real, calls = model.generate, {"n": 0}

    def crash_after(*args, **kwargs):
        if calls["n"] == cases.JOURNAL_CRASH_AFTER:
            raise RuntimeError("killed")
        calls["n"] += 1
        return real(*args, **kwargs)

    model.generate = crash_after
    with pytest.raises(RuntimeError, match="killed"):
        evaluate(model, task, split, feats, cases.eval_config(cases.JOURNAL_BATCH), journal=journal)
    res = run_cmd(torchrun(WORKER, out, journal), cwd=out)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out


# ---------------------------------------------------------------- layout (one process, no launch)


@given(world=st.integers(1, 4), accum=st.integers(1, 4), micro=st.integers(1, 4), seed=st.integers(0, 10**6))
def test_every_world_size_cuts_the_same_pages_into_the_same_micro_batches(world, accum, micro, seed):
    """The micro-batches of all ranks, in rank order, are those of one process accumulating world x accum."""
    import random

    batch = world * accum * micro
    pages = random.Random(seed).sample(range(10 * batch), batch)
    assert batch_layout(batch, micro, None, world) == (micro, accum)
    spread = [mb for r in range(world) for mb in rank_slices(pages, Dist(r, world, r), micro, accum)]
    alone = rank_slices(pages, SINGLE, micro, world * accum)
    assert spread == alone and sum(spread, []) == pages


@pytest.mark.parametrize(
    "batch,micro,accum,world,needle",
    [
        (
            6,
            None,
            None,
            4,
            "--batch-size 6 (pages per step, all processes together) does not divide over 4 processes; "
            "use a multiple of 4",
        ),
        (
            8,
            3,
            None,
            2,
            "--micro-batch-size 3 does not divide the 4 pages each of 2 processes takes per step "
            "(--batch-size 8); use one of 1, 2, 4",
        ),
        (8, None, 3, 1, "--grad-accum 3 does not divide the 8 pages each of 1 process takes per step"),
        (8, 2, 3, 1, "--micro-batch-size 2 x --grad-accum 3 must equal --batch-size 8 / 1 processes = 8"),
        (8, 0, None, 1, "--micro-batch-size must be at least 1"),
    ],
)
def test_a_layout_that_does_not_divide_is_one_message(batch, micro, accum, world, needle):
    with pytest.raises(AlignBenchError) as info:
        batch_layout(batch, micro, accum, world)
    assert needle in str(info.value)


def test_layout_defaults():
    assert batch_layout(16, None, None, 1) == (16, 1)
    assert batch_layout(16, None, None, 4) == (4, 1)
    assert batch_layout(16, None, 2, 4) == (2, 2)
    assert batch_layout(16, 2, None, 2) == (2, 4)


@pytest.mark.parametrize(
    "env,args,needle",
    [
        (
            {"WORLD_SIZE": "2", "RANK": "0"},
            ["run", "--batch-size", "3"],
            "--batch-size 3 (pages per step, all processes together) does not divide over 2 processes",
        ),
        ({"WORLD_SIZE": "2", "RANK": "0"}, ["leaderboard"], "alignbench leaderboard runs as one process"),
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, ["run", "--steps", "1"], "accelerate is configured for DeepSpeed"),
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, ["run", "--steps", "1"], "set fsdp_version: 2"),
        ({}, ["run", "--parallel", "zero3"], "unknown --parallel 'zero3'; use auto, ddp, fsdp"),
        ({}, ["sweep", "--launcher", "slurm"], "unknown --launcher 'slurm'; use inline, local, submitit"),
        (
            {},
            ["sweep", "--nproc-per-job", "2"],
            "--nproc-per-job and --nodes-per-job need --launcher local or submitit",
        ),
    ],
)
def test_bad_distributed_input_is_one_line_exit_2(env, args, needle, tmp_path):
    res = subprocess.run(
        command(*args, "--output", tmp_path / "out") if args[0] != "leaderboard" else command(*args),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env=cli_env(env),
    )
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr + res.stdout, res.stderr
    assert needle in " ".join(res.stderr.split())
    assert not (tmp_path / "out" / "leaderboard.csv").exists()


# ---------------------------------------------------------------- two processes against one (torchrun)


@pytest.mark.parametrize("batch", cases.EVAL_BATCHES)
def test_two_process_evaluation_equals_one_process_sample_for_sample(two_ranks, ws, batch):
    task, split, feats, model = cases.eval_setup(ws)
    result, records = evaluate(model, task, split, feats, cases.eval_config(batch))
    two = json.loads((two_ranks / f"eval-{batch}.json").read_text())
    assert len(records) == len(split.samples) == 7 and len({r["uid"] for r in two["records"]}) == 7
    assert two["records"] == records  # every question once, same prediction, blind prediction and score
    assert two["result"] == cases.scores(result)
    assert result["score"] > 0.3  # a trained connector: real answers are compared, not empty strings


def test_a_journal_started_by_one_process_is_finished_by_two(two_ranks, ws):
    task, split, feats, model = cases.eval_setup(ws)
    result, records = evaluate(model, task, split, feats, cases.eval_config(cases.JOURNAL_BATCH))
    two = json.loads((two_ranks / "journal.json").read_text())
    assert two["records"] == records and two["result"] == cases.scores(result)
    assert two["from_journal"] == cases.JOURNAL_CRASH_AFTER * cases.JOURNAL_BATCH
    written = [json.loads(line) for line in two["journal_lines"][1:]]
    keys = [(w["pass"], w["i"]) for w in written]
    assert len(keys) == len(set(keys)) == 2 * len(split.samples)  # rank 0 appended each prediction once


def test_an_error_on_one_rank_stops_every_rank_with_the_same_message(two_ranks):
    checks = json.loads((two_ranks / "checks.json").read_text())
    assert checks["map_error_0"] == checks["map_error_1"]
    assert "rank 1: ZeroDivisionError" in checks["map_error_0"]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), a.keys() ^ b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _single_reference(ws, case) -> dict:
    model = cases.train_case(ws, case, SINGLE)  # one process, accumulating the micro-batches of both
    return {
        f"{k}.{n}": t.detach()
        for k, m in cases.trained_modules(model, case).items()
        for n, t in m.state_dict().items()
        if not (k == "llm" and n == "lm_head.weight")
    }


@pytest.mark.parametrize("name", list(cases.TRAIN_CASES))
def test_two_process_training_equals_one_process_with_accumulation(two_ranks, ws, name):
    """2 processes x accumulation A = 1 process x accumulation 2A = 1 process without accumulation: the same
    weights (connector, and the LLM in stage full, FSDP-sharded with ALIGN reading its embedding matrix) within
    float tolerance. The last equality holds because the loss is divided by the answer tokens of the whole step
    (micro-batches hold different numbers of them)."""
    case = cases.TRAIN_CASES[name]
    ref = _single_reference(ws, case)
    two = load_file(str(two_ranks / f"{name}.safetensors"))
    whole_batch = _single_reference(ws, case | {"micro": 4})
    assert _max_diff(ref, whole_batch) < ATOL
    start = cases.connector(case["connector"], cases.full_backbone(ws, cases.DTYPE), cases.DTYPE).state_dict()
    assert _max_diff(ref, two) < ATOL
    # and training moved the weights by far more than the tolerance
    moved = max((ref[f"connector.{k}"] - v).abs().max().item() for k, v in start.items())
    assert moved > 1e-3


@pytest.mark.parametrize("name", cases.RESUMED)
def test_two_processes_resume_from_rank_0s_checkpoint(two_ranks, name):
    whole = load_file(str(two_ranks / f"{name}.safetensors"))
    resumed = load_file(str(two_ranks / f"{name}-resumed.safetensors"))
    assert _max_diff(whole, resumed) < ATOL
    assert not list((two_ranks / f"ckpt-{name}").glob("checkpoints/.*tmp*"))  # rank 0 alone wrote, completely


def test_align_refuses_an_embedding_matrix_sharded_outside_its_unit(two_ranks):
    checks = json.loads((two_ranks / "checks.json").read_text())
    for rank in (0, 1):
        for called in ("align_sharded", "align_sharded_model"):  # the connector alone, and through the model
            assert (
                "ALIGN reads the LLM's input-embedding matrix, but it is sharded here (DTensor"
                in checks[f"{called}_{rank}"]
            )


# ---------------------------------------------------------------- the commands, launched as users launch them

RUN = [
    "--steps",
    3,
    "--batch-size",
    4,
    "--micro-batch-size",
    2,
    "--train-docs",
    6,
    "--eval-questions",
    7,
    "--eval-batch-size",
    3,
    "--device",
    "cpu",
    "--checkpoint-every",
    1,
]


def _compare_runs(one: Path, two: Path, world: int, accum_one: int, strategy: str) -> None:
    a, b = only_run_dir(one), only_run_dir(two)
    for file in ("connector.safetensors", "llm.safetensors"):
        if (a / file).exists():
            assert _max_diff(load_file(str(a / file)), load_file(str(b / file))) < ATOL_FLOAT32, file
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    assert ra["distributed"] == {"world_size": 1, "grad_accum": accum_one, "micro_batch_size": 2, "strategy": "single"}
    fsdp = {"fsdp_reshard_after_forward": True, "fsdp_cpu_offload": False} if strategy == "fsdp" else {}
    assert rb["distributed"] == {
        "world_size": world,
        "grad_accum": accum_one // world,
        "micro_batch_size": 2,
        "strategy": strategy,
        **fsdp,
    }
    assert json.loads((b / "config.json").read_text())["distributed"] == rb["distributed"]
    preds_a, preds_b = ((d / "predictions.jsonl").read_text().splitlines() for d in (a, b))
    assert preds_a == preds_b and len(preds_b) == 7
    assert abs(ra["final_loss"] - rb["final_loss"]) < 1e-3
    assert {k: ra[k] for k in ("score", "n", "blind")} == {k: rb[k] for k in ("score", "n", "blind")}
    board = pd.read_csv(two / "leaderboard.csv")
    assert list(board.run_id) == [b.name]  # one row, written once
    assert sorted(p.name for p in b.iterdir()) == sorted(p.name for p in a.iterdir())  # no journal, no checkpoints
    assert not (b / "checkpoints").exists() and not (b / "predictions.partial.jsonl").exists()


def test_torchrun_run_equals_one_process_with_accumulation(tmp_path):
    args = ["run", "--connector", "mlp", *RUN]
    one = run_cmd(command(*args, "--output", tmp_path / "one"), cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    two = run_cmd(torchrun("-m", "alignbench", *args, "--output", tmp_path / "two"), cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("AlignBench results") == 1  # rank 0 alone prints
    assert "2 processes (ddp), 4 pages per step: micro-batches of 2 pages, gradient accumulation 1" in " ".join(
        two.stdout.split()
    )
    _compare_runs(tmp_path / "one", tmp_path / "two", 2, 2, "ddp")


def test_accelerate_launch_fsdp_trains_the_llm_with_align_like_one_process(tmp_path):
    """`accelerate launch` with an FSDP (version 2) configuration: ALIGN and the LLM train sharded."""
    args = ["run", "--connector", "align", "--stage", "full", "--llm-lr", "1e-3", *RUN]
    one = run_cmd(command(*args, "--output", tmp_path / "one"), cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    config = tmp_path / "fsdp.yaml"
    config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nnum_machines: 1\n"
        "num_processes: 2\nmachine_rank: 0\nmixed_precision: 'no'\nuse_cpu: false\n"
        "fsdp_config:\n  fsdp_version: 2\n  fsdp_reshard_after_forward: true\n"
        "  fsdp_offload_params: false\n"
    )
    cmd = [
        str(BIN / "accelerate"),
        "launch",
        "--config_file",
        str(config),
        "--main_process_port",
        str(_free_port()),
        "-m",
        "alignbench",
        *map(str, args),
        "--output",
        str(tmp_path / "two"),
    ]
    two = run_cmd(cmd, cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 processes (fsdp)" in " ".join(two.stdout.split())
    _compare_runs(tmp_path / "one", tmp_path / "two", 2, 2, "fsdp")


def test_torchrun_eval_of_a_checkpoint_equals_one_process(tmp_path):
    args = ["eval", "--checkpoint", cases.MLP_RUN, "--limit", 13, "--eval-batch-size", 4, "--device", "cpu"]
    one = run_cmd(command(*args, "--output", tmp_path / "one"), cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    two = run_cmd(torchrun("-m", "alignbench", *args, "--output", tmp_path / "two"), cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = only_run_dir(tmp_path / "one"), only_run_dir(tmp_path / "two")
    assert (a / "predictions.jsonl").read_text() == (b / "predictions.jsonl").read_text()
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    keys = ("score", "stderr", "n", "blind")
    assert {k: ra[k] for k in keys} == {k: rb[k] for k in keys}
    assert ra["n"] == 13 and ra["score"] > 0.3 and rb["distributed"] == {"world_size": 2}
    assert len(pd.read_csv(tmp_path / "two" / "leaderboard.csv")) == 1


# ---------------------------------------------------------------- sweep launchers

SWEEP = [
    "sweep",
    "--tasks",
    "docvqa",
    "--steps",
    2,
    "--batch-size",
    2,
    "--train-docs",
    4,
    "--eval-questions",
    5,
    "--device",
    "cpu",
]


def _sweep_board(output: Path, results_expected: int) -> pd.DataFrame:
    board = pd.read_csv(output / "leaderboard.csv")
    assert len(board) == results_expected and board.run_id.nunique() == results_expected
    sweep = json.loads((output / "sweep.json").read_text())
    assert sorted(sweep["runs"]) == sorted(board.run_id) and sweep["failed"] == []
    assert (output / "table.md").is_file()
    return board


def test_local_launcher_runs_each_job_as_its_own_processes(tmp_path):
    out = tmp_path / "out"
    res = run_cmd(
        command(*SWEEP, "--connectors", "mlp,ovis", "--launcher", "local", "--jobs", 2, "--output", out),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    board = _sweep_board(out, 2)
    assert sorted(board.connector) == ["mlp", "ovis"]
    logs = list((out / "launch").glob("sweep-*/*.log"))
    assert len(logs) == 2 and all("run directory:" in log.read_text() for log in logs)
    # a job of two processes (torchrun --standalone), in the same leaderboard
    res = run_cmd(
        command(*SWEEP, "--connectors", "mlp", "--launcher", "local", "--nproc-per-job", 2, "--output", out),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == 3
    latest = json.loads((out / "runs" / board.run_id.iloc[-1] / "results.json").read_text())
    assert latest["distributed"]["world_size"] == 2


def test_submitit_launcher_collects_every_job_into_the_leaderboard(tmp_path):
    out = tmp_path / "out"
    res = run_cmd(
        command(*SWEEP, "--connectors", "mlp,ovis", "--launcher", "submitit", "--cluster", "local", "--output", out),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert _sweep_board(out, 2).connector.tolist() in (["mlp", "ovis"], ["ovis", "mlp"])
    assert "submitted 000-docvqa-mlp-s0" in " ".join(res.stdout.split())
    # a job of two SLURM-style tasks (submitit's TorchDistributedEnvironment)
    res = run_cmd(
        command(
            *SWEEP,
            "--connectors",
            "mlp",
            "--launcher",
            "submitit",
            "--cluster",
            "local",
            "--nproc-per-job",
            2,
            "--output",
            out,
        ),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    board = pd.read_csv(out / "leaderboard.csv")
    latest = json.loads((out / "runs" / board.run_id.iloc[-1] / "results.json").read_text())
    assert len(board) == 3 and latest["distributed"]["world_size"] == 2


def test_failed_jobs_are_named_with_their_log_and_lose_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("a file of the user's")
    before = sorted(p.name for p in out.iterdir())
    res = run_cmd(
        command(
            *SWEEP,
            "--connectors",
            "mlp",
            "--launcher",
            "local",
            "--train-data",
            tmp_path / "missing.parquet",
            "--output",
            out,
        ),
        cwd=tmp_path,
    )
    assert res.returncode == 2
    msg = " ".join(res.stderr.split())
    assert "every job failed: 000-docvqa-mlp-s0: exit code 2: error: dataset" in msg and ".log)" in msg
    assert "Traceback" not in res.stderr
    assert not (out / "leaderboard.csv").exists() and sorted(p.name for p in out.iterdir()) == sorted(
        before + ["launch", "runs"]
    )


def test_an_error_under_torchrun_is_one_line_from_rank_0_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    res = run_cmd(
        torchrun(
            "-m", "alignbench", "run", "--train-data", tmp_path / "missing.parquet", "--device", "cpu", "--output", out
        ),
        cwd=tmp_path,
    )
    assert res.returncode != 0  # torchrun's own code (1), after its summary of the failed processes
    ours = [line for line in (res.stderr + res.stdout).splitlines() if line.startswith("error:")]
    assert len(ours) == 1 and "missing.parquet" in ours[0] and "(rank" not in ours[0], ours
    assert not (out / "leaderboard.csv").exists() and list((out / "runs").iterdir()) == []


def test_a_run_interrupted_on_one_process_resumes_on_two(ws, tmp_path, monkeypatch):
    """Checkpoints hold whole tensors and the step's pages do not depend on the processes: a run that one process
    left after step 2 of 3 is finished by `torchrun ... run --resume`, and ends as the uninterrupted run."""
    from alignbench.config.data import DataConfig
    from alignbench.config.eval import EvalConfig
    from alignbench.config.run import RunConfig
    from alignbench.config.train import TrainConfig
    from alignbench.model.vlm import VLM
    from alignbench.run.pipeline import run

    cfg = RunConfig(
        connector="ovis",
        data=DataConfig(train_docs=6, eval_questions=7),
        device="cpu",
        train=TrainConfig(steps=3, batch_size=4, micro_batch_size=2),
        eval=EvalConfig(batch_size=3),
    )
    quiet = {"log": lambda *a, **k: None}
    run(cfg, tmp_path / "whole", ws, checkpoint_every=1, **quiet)
    real_loss, calls = VLM.loss, {"n": 0}

    def crash_in_step_3(self, *args):
        calls["n"] += 1
        if calls["n"] == 5:  # two micro-batches per step on one process
            raise RuntimeError("killed")
        return real_loss(self, *args)

    with monkeypatch.context() as m:
        m.setattr(VLM, "loss", crash_in_step_3)
        with pytest.raises(RuntimeError, match="killed"):
            run(cfg, tmp_path / "cut", ws, checkpoint_every=1, **quiet)
    run_dir = only_run_dir(tmp_path / "cut")
    res = run_cmd(torchrun("-m", "alignbench", "run", "--resume", run_dir), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming from the checkpoint after step 2 of 3" in " ".join(res.stdout.split())
    whole = only_run_dir(tmp_path / "whole")
    assert (
        _max_diff(load_file(str(whole / "connector.safetensors")), load_file(str(run_dir / "connector.safetensors")))
        < ATOL_FLOAT32
    )
    assert (whole / "predictions.jsonl").read_text() == (run_dir / "predictions.jsonl").read_text()
    result = json.loads((run_dir / "results.json").read_text())
    assert result["resumed_from_step"] == 2 and result["distributed"]["world_size"] == 2
    assert list(pd.read_csv(tmp_path / "cut" / "leaderboard.csv").run_id) == [run_dir.name]
