"""Integrity under faults, each fault injected: a damaged leaderboard (cut inside a quoted field, not a
leaderboard, saved by a spreadsheet, a row cut short, binary) stops a run before it trains and `leaderboard
--repair` rebuilds it; one writer per run directory; file-system errors (disk full at the leaderboard or at a
checkpoint, a leaderboard that is a directory, an unusable cache, a missing folder) and bad option values are one
line with exit 2; Ctrl-C names the exact resume command; paths read back from the output directory stay inside
it; a flipped bit in a checkpoint and a missing checkpoint pointer are refused, not resumed or restarted."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from alignbench.run.leaderboard import read_leaderboard
from tests.support.cli import cli, cli_start, flags, one_line_error

SMALL = ["--steps", "2", "--batch-size", "2", "--train-docs", "4", "--eval-questions", "6", "--no-blind"]


def start_until_checkpoint(output: Path, connector: str) -> subprocess.Popen:
    """A long run started in the background, returned once its first checkpoint is published."""
    small = flags(steps=3000, batch_size=2, train_docs=4, eval_questions=6, checkpoint_every=2)
    run = cli_start("run", "--connector", connector, *small, "--no-blind", "--output", output)
    deadline = time.time() + 120
    while time.time() < deadline and not list(output.glob("runs/*/checkpoints/latest.json")):
        assert run.poll() is None, run.communicate()
        time.sleep(0.05)
    return run


def runs_in(output: Path) -> list[Path]:
    return sorted((output / "runs").iterdir()) if (output / "runs").is_dir() else []


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """An output directory with two finished runs (ChartQA's row carries a quoted per-split cell)."""
    out = tmp_path_factory.mktemp("finished")
    for task in ("docvqa", "chartqa"):
        done = cli("run", "--connector", "mlp", "--task", task, *SMALL, "--output", out)
        assert done.returncode == 0, done.stderr
    return out


@pytest.fixture
def output(finished, tmp_path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    return out


def _cut_inside_quotes(text: str) -> str:
    start = text.index('"{')  # the first quoted per_split cell
    return text[: start + 8]


DAMAGES = {
    "cut inside a quoted field": (_cut_inside_quotes, "cut short"),
    "not a leaderboard": (lambda text: "name,age\nada,36\n", "not a leaderboard header"),
    "saved by a spreadsheet": (lambda text: "\ufeff" + text.replace("\n", "\r\n"), "byte-order mark"),
    "CRLF line ends": (lambda text: text.replace("\n", "\r\n"), "CRLF"),
    "a row cut short without quotes": (lambda text: text.rstrip("\n").rsplit(",", 3)[0] + "\n", "ragged row at line"),
    "a row without a score": (
        lambda text: text + "x-run" + "," * (text.splitlines()[0].count(",")) + "\n",
        "no finite score",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES) + ["binary"])
def test_a_damaged_leaderboard_stops_the_run_before_training(output, damage):
    board = output / "leaderboard.csv"
    if damage == "binary":
        board.write_bytes(os.urandom(300) + b"\0")
        needle = "binary data"
    else:
        cut, needle = DAMAGES[damage]
        board.write_bytes(cut(board.read_text()).encode())
    before, runs_before = board.read_bytes(), runs_in(output)
    done = cli("run", "--connector", "mlp", *SMALL, "--output", output)
    one_line_error(done, str(board), needle, "leaderboard --repair")
    assert board.read_bytes() == before and runs_in(output) == runs_before  # nothing trained, nothing appended
    one_line_error(cli("leaderboard", "--output", output), needle)


def test_repair_rebuilds_the_leaderboard_from_the_run_directories(output):
    board = output / "leaderboard.csv"
    original = read_leaderboard(board)
    board.write_bytes(_cut_inside_quotes(board.read_text()).encode())
    damaged = board.read_bytes()
    done = cli("leaderboard", "--repair", "--output", output)
    assert done.returncode == 0, done.stderr
    backups = list(output.glob("leaderboard.csv.damaged-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == damaged
    rebuilt = read_leaderboard(board)
    assert sorted(rebuilt.run_id) == sorted(original.run_id) == sorted(d.name for d in runs_in(output))
    merged = rebuilt.merge(original, on="run_id", suffixes=("", "_was"))
    for column in ("score", "stderr", "n", "connector", "task", "per_split"):
        assert list(merged[column]) == list(merged[f"{column}_was"]), column
    done = cli("run", "--connector", "mlp", *SMALL, "--output", output)  # the repaired file takes new rows
    assert done.returncode == 0, done.stderr
    assert len(read_leaderboard(board)) == len(original) + 1


def test_an_append_never_merges_into_a_cut_row(output, monkeypatch):
    """Damage made while a run trains (after its start-up check) is caught at the append: the run's results are
    in its directory, the leaderboard is left as it was found, and the message names the repair."""
    from alignbench.run import leaderboard as results

    board = output / "leaderboard.csv"
    board.write_bytes(_cut_inside_quotes(board.read_text()).encode())
    before = board.read_bytes()
    with pytest.raises(results.AlignBenchError, match="cut short"):
        results.append_leaderboard(
            output, {"run_id": "x", "connector": "mlp", "task": "docvqa", "metric": "anls", "score": 0.5}
        )
    assert board.read_bytes() == before


def test_a_second_writer_is_refused_naming_the_pid(output):
    small = flags(steps=4000, batch_size=2, train_docs=4, eval_questions=6)
    first = cli_start("run", "--connector", "mlp", *small, "--no-blind", "--output", output)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            fresh = [d for d in runs_in(output) if (d / ".writer.pid").is_file()]
            if fresh:
                break
            assert first.poll() is None, first.communicate()
            time.sleep(0.05)
        run_dir = fresh[0]
        done = cli("run", "--resume", run_dir)
        one_line_error(done, "being written by another process", f"PID {first.pid}")
        assert first.poll() is None  # the first writer goes on
    finally:
        first.kill()
        first.communicate()


def test_ctrl_c_names_the_exact_resume_command_and_the_run_resumes(output):
    run = start_until_checkpoint(output, "mlp")
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    line = err.strip().splitlines()
    assert run.returncode == 130 and len(line) == 1, err
    run_dir = next(d for d in runs_in(output) if (d / "checkpoints").is_dir())
    assert line[0].endswith(f"alignbench run --resume '{run_dir.resolve()}'") and "intact" in line[0]
    assert not (run_dir / ".writer.pid").exists()  # the writer lock went with the process
    board = read_leaderboard(output / "leaderboard.csv")
    assert run_dir.name not in set(board.run_id)


def test_disk_full_at_the_leaderboard_is_one_line_and_loses_nothing(output, tmp_path):
    """ENOSPC from the leaderboard's write (os.fsync patched by a sitecustomize in the child process)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import errno, os\n"
        "_fsync = os.fsync\n"
        "def fsync(fd):\n"
        "    if 'leaderboard' in os.readlink(f'/proc/self/fd/{fd}'):\n"
        "        raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "    return _fsync(fd)\n"
        "os.fsync = fsync\n"
    )
    board = output / "leaderboard.csv"
    before = board.read_bytes()
    done = cli(
        "run",
        "--connector",
        "mlp",
        *SMALL,
        "--output",
        output,
        env={"PYTHONPATH": f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )
    one_line_error(done, "No space left on device", str(board))
    assert board.read_bytes() == before and not list(output.glob(".leaderboard.csv.tmp*"))
    newest = max(runs_in(output), key=lambda d: d.stat().st_mtime)
    assert json.loads((newest / "results.json").read_text())["score"] >= 0  # the run's own results are written
    done = cli("run", "--resume", newest)  # and its row is added once there is space
    assert done.returncode == 0, done.stderr
    assert newest.name in set(read_leaderboard(board).run_id)


def test_disk_full_at_a_checkpoint_keeps_the_previous_one(ws, tmp_path, monkeypatch):
    from safetensors import SafetensorError

    import alignbench.model.checkpoint as checkpoint
    from alignbench.config.train import TrainConfig
    from alignbench.connector import build_connector
    from alignbench.errors import AlignBenchError
    from alignbench.model.vlm import VLM
    from alignbench.task import TASKS
    from alignbench.train.loop import TrainSource, train

    task = TASKS.get("docvqa")
    split, feats = ws.split(task, "train")
    cfg = TrainConfig(steps=4, batch_size=2, lr=3e-3, warmup_steps=1)
    model = VLM(ws.backbone, build_connector("mlp", ws.backbone.connector_context(), {}, 1234))
    import safetensors.torch as st

    real = st.save_file

    def full_disk(tensors, path, *a, **k):
        if "step-0000004" in str(path):
            raise SafetensorError("Error while serializing: IoError(No space left on device)")
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(st, "save_file", full_disk)
    with pytest.raises(
        AlignBenchError, match="could not write the checkpoint of step 4.*previous checkpoint is intact"
    ):
        train(
            model,
            [TrainSource(task, split, feats)],
            cfg,
            0,
            checkpoint_dir=tmp_path,
            checkpoint_every=2,
            log=lambda *a: None,
        )
    assert checkpoint.latest_checkpoint(tmp_path)[0] == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest.json", "step-0000002"]


def test_file_system_errors_are_one_line(output, tmp_path):
    board = output / "leaderboard.csv"
    board.unlink()
    board.mkdir()
    one_line_error(cli("run", "--connector", "mlp", *SMALL, "--output", output), "is a directory")
    a_file = tmp_path / "plain-file"
    a_file.write_text("")
    done = cli(
        "run",
        "--connector",
        "mlp",
        *SMALL,
        "--output",
        tmp_path / "o2",
        env={"ALIGNBENCH_CACHE": str(a_file / "cache")},
    )
    one_line_error(done, str(a_file))
    shutil.rmtree(board)
    done = cli("leaderboard", "--repair", "--output", output)
    assert done.returncode == 0, done.stderr
    one_line_error(
        cli("leaderboard", "--output", output, "--markdown", tmp_path / "missing" / "board.md"),
        str(tmp_path / "missing" / "board.md"),
    )


def test_a_config_field_of_the_wrong_type_is_refused_on_resume(output):
    run_dir = runs_in(output)[0]
    config = json.loads((run_dir / "config.json").read_text())
    config["train"]["steps"] = "many"
    (run_dir / "config.json").write_text(json.dumps(config))
    one_line_error(cli("run", "--resume", run_dir), "config.json", "--steps must be at least 1")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--seed", "-1"], "--seed must be an integer from 0 to 4294967295"),
        (["--seed", str(2**64 + 1)], "--seed must be an integer from 0 to 4294967295"),
        (["--init-seed", "-5"], "--init-seed must be an integer"),
        (["--connector", "perceiver", "--connector-arg", "num_latents=-3"], "num_latents=-3 must be a positive"),
        (["--connector", "perceiver", "--connector-arg", "num_latents=0"], "num_latents=0 must be a positive"),
        (["--connector", "perceiver", "--connector-arg", "depth=-1"], "depth=-1 must be a positive"),
        (["--connector", "perceiver", "--connector-arg", "heads=3"], "heads=3 must divide the LLM width 128"),
        (["--connector", "ovis", "--connector-arg", "vocab_size=0"], "vocab_size=0 must be an integer of at least 2"),
        (["--connector", "align", "--connector-arg", "ln2_lr_mult=-1"], "ln2_lr_mult=-1.0 must be positive"),
        (["--lr", "abc"], "'--lr'"),
        (["--lr", "-1"], "--lr must be a positive number, got -1.0"),
        (["--llm-lr", "nan", "--stage", "full"], "--llm-lr must be a positive number"),
        (["--checkpoint-every", "-1"], "--checkpoint-every must be 0"),
        (["--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_bad_option_values_stop_before_any_run_directory(tmp_path, args, needle):
    out = tmp_path / "out"
    one_line_error(cli("run", *SMALL, *args, "--output", out), needle)
    assert runs_in(out) == [] and not (out / "trained").exists()


def test_probe_vocab_refuses_non_positive_top_k(output):
    one_line_error(
        cli("probe", "vocab", "--run", runs_in(output)[0], "--top-k", "0,-5"), "--top-k '0,-5' must be positive"
    )


def test_paths_read_back_stay_inside_the_output_directory(output, tmp_path):
    """A trained/KEY.json naming a run outside OUTPUT/runs is refused, never loaded from (the checkpoint pointer:
    below)."""
    entry = next((output / "trained").glob("*.json"))
    key = json.loads(entry.read_text())
    entry.write_text(json.dumps(key | {"run_id": "../../elsewhere/run"}))
    run_dir = next(d for d in runs_in(output) if d.name == key["run_id"])
    config = json.loads((run_dir / "config.json").read_text())
    same = ["--connector", "mlp", "--task", config["task"], *SMALL, "--output", output]
    one_line_error(cli("run", *same), str(entry), "not a run directory under")


def test_a_flipped_bit_or_a_stray_pointer_is_refused_on_resume(output):
    run = start_until_checkpoint(output, "ovis")
    run.kill()
    run.communicate()
    pointer = next(output.glob("runs/*/checkpoints/latest.json"))
    run_dir = pointer.parent.parent
    folder = pointer.parent / json.loads(pointer.read_text())["dir"]
    weights = folder / "connector.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x80  # the sign bit of a float32 near the end of the tensor data
    weights.write_bytes(bytes(data))
    one_line_error(cli("run", "--resume", run_dir), "is corrupt", "connector.safetensors")
    data[-3] ^= 0x80
    weights.write_bytes(bytes(data))
    saved = pointer.read_text()
    pointer.write_text(json.dumps({"step": json.loads(saved)["step"], "dir": str(Path("/tmp").resolve())}))
    one_line_error(cli("run", "--resume", run_dir), "not a checkpoint folder of this run")
    pointer.unlink()
    one_line_error(cli("run", "--resume", run_dir), "but no latest.json", folder.name)
    assert weights.is_file()  # nothing was deleted by the refusals


def test_every_run_reports_both_metric_definitions(output):
    """results.json and the leaderboard carry the lmms-eval definition's score beside the task's metric."""
    board = read_leaderboard(output / "leaderboard.csv")
    assert board.score_lmms_eval.notna().all()
    for run_dir in runs_in(output):
        result = json.loads((run_dir / "results.json").read_text())
        variant = result["lmms_eval_metric"]
        assert (
            variant["metric"]
            == {"anls": "anls_lmms_eval", "relaxed_accuracy": "relaxed_accuracy_lmms_eval"}[result["metric"]]
        )
        assert 0 <= variant["score"] <= 1 and variant["n"] == result["n"]
        assert board.set_index("run_id").loc[run_dir.name, "score_lmms_eval"] == pytest.approx(variant["score"])
