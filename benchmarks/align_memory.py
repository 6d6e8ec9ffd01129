"""Naive vs chunked ALIGN: peak extra memory and time of one forward + backward pass.

    python benchmarks/align_memory.py [--quick] [--repeats 2] [--threads N] [--chunk-size 4096]
                                      [--strategy auto|gram|stream|hybrid] [--configs VxTxD,...]
        -> results/bench/align_memory.{json,md}      (--quick: align_memory_quick.{json,md};
                                                      --configs: align_memory_custom.{json,md})
    python benchmarks/align_memory.py --device cuda [--images 1,4,16] [--out DIR --stem align_memory_cuda]
        only the paper-scale rows, on that device (--device cpu --paper 8192x64x64: a rehearsal at a small size;
        --memory-cap-gb: a smaller memory, so that the out-of-memory rows are rehearsed too)

What runs: out = softmax(LN2(h · W2ᵀ + b2)) · E_text and its backward pass, for h of T tokens. W1 and LN1
come before h and are the same for both implementations, so they are left out. "naive" is the
connector's impl=naive code (it keeps the [T, V] probabilities); "chunked" is impl=chunked
(`alignbench.align_kernel.align_attention`). CPU grid: float32, V in {32000, 128256}, T in {729, 2916},
D in {1024, 2048}. With CUDA: also bf16 at paper scale (V = 128256, D = 3072, T = 6561 per image: 9 tiles of
729 patches) for 1, 4 and 16 images at once, where the naive form runs out of memory first (each row names
the GPU); without CUDA these rows are skipped and the output says so. A configuration that runs out of
memory is recorded as "OOM" (torch.OutOfMemoryError, or the CPU allocator's refusal), not as a failure.

Two measurements per configuration and implementation, each in a fresh subprocess:
* "all": the gradients of all six inputs (h, W2, b2, LN2's gain and bias, E_text), as when the LLM trains
  too. Gives the time and the total peak extra memory, which includes the two [V, D] gradients (W2 and
  E_text): they are outputs, the same for any implementation, and at V = 128k alone 1-2 GB.
* "activations": W2 and E_text frozen (gradients of h, b2, gain, bias only), the same forward and the same
  [T, V]-sized work in the backward pass, without the [V, D] gradient outputs. Its peak extra memory is
  what the implementation itself holds: for naive the [T, V] matrices, for chunked its chunk buffers.
  The memory bar (chunked <= 1/10 of naive at V = 128k) is checked on this; the totals are reported too.

How memory is measured.
* CPU: the subprocess runs glibc with MALLOC_MMAP_THRESHOLD_=131072 (and the same trim threshold), so
  every allocation above 128 KiB is mapped on allocation and unmapped on free: the resident set size
  (RSS) follows the tensors alive, not what the heap kept from earlier allocations. One small run of the
  same implementation (T = 16) goes first, so one-time costs (library buffers, autograd's threads) are
  not counted. Then the inputs are allocated (in place, without temporaries), the peak RSS is reset
  (writing 5 to /proc/self/clear_refs sets VmHWM to the current RSS) and the current RSS is the
  baseline; after forward + backward, with the gradients still held, peak extra = VmHWM - baseline
  (the largest over the repeats). If clear_refs is unavailable, ru_maxrss stands in for VmHWM (stated
  per row as "method").
* CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus memory_allocated after the
  inputs are allocated.
Time: wall seconds of forward + backward ("all"), the median of --repeats runs in the subprocess (the
first included: first-touching freshly allocated memory is part of every training step); the process's
CPU seconds and the load average are recorded beside it, since the machine may be shared (with a busy
machine, --threads 1 keeps the comparison from measuring the scheduler).

Passes. The chunked subprocess also times one "pass": a [T, D] x [D, V] matrix product, chunk by chunk, the
unit both forms are made of (the naive form makes 6 per forward + backward, the chunked strategy the number
`alignbench.align_kernel.passes` gives). "floor" = the strategy's passes x the measured pass time / naive
time: what the chunked form would take were everything but its matrix products free. Where the floor is
above the time bar, the strategy cannot meet it on that machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from alignbench.align_kernel import STRATEGIES

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "results" / "bench"
FULL_GRID = [(v, t, d) for v in (32000, 128256) for t in (729, 2916) for d in (1024, 2048)]
QUICK_GRID = [(v, t, d) for v in (8192, 32000) for t in (256,) for d in (512,)]
PAPER = (128256, 6561, 3072)  # Llama 3 vocabulary, 9 tiles x 729 patches, Llama 3.2 3B width
GPU_IMAGES = (1, 4, 16)  # images per batch at paper scale on a GPU (T = images x 6561): naive runs out first


def is_oom(exc: BaseException) -> bool:
    """Out of memory: CUDA's allocator (torch.OutOfMemoryError) or the CPU allocator's refusal."""
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "can't allocate memory" in str(exc)


def _cap_memory(cap_bytes: int, device: str) -> None:
    """Allow this process `cap_bytes` more memory than it holds now (CUDA: of the GPU's memory in all)."""
    import torch

    if device.startswith("cuda"):
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_bytes / total), device)
        return
    with open("/proc/self/status") as f:
        vm_size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm_size + cap_bytes, resource.getrlimit(resource.RLIMIT_AS)[1]))


def _status_kb() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    kb = _status_kb()
    return kb["VmHWM"] <= kb["VmRSS"] + 1024


def worker(spec: dict) -> dict:
    """One implementation on one configuration; runs in its own process."""
    import torch
    from torch.nn import functional as F

    from alignbench.align_kernel import align_attention

    D, impl, device = spec["D"], spec["impl"], spec["device"]
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    dtype = getattr(torch, spec["dtype"])
    gen = torch.Generator(device=device).manual_seed(0)

    def param(*shape, std=1.0, mean=0.0):
        return torch.empty(*shape, device=device, dtype=dtype).normal_(mean, std, generator=gen).requires_grad_()

    def make_step(V: int, T: int):
        h, w2, e_text = param(T, D), param(V, D, std=0.02), param(V, D, std=0.02)
        b2, gain, bias = param(V, std=0.02), param(V, std=0.1, mean=1.0), param(V, std=0.02)
        dout = param(T, D).detach()
        inputs = [h, w2, b2, gain, bias, e_text]
        if spec["grads"] == "activations":  # no [V, D] gradient outputs
            w2.requires_grad_(False)
            e_text.requires_grad_(False)
            inputs = [h, b2, gain, bias]

        def step():
            if impl == "naive":  # connectors/align.py, impl=naive
                logits = F.layer_norm(F.linear(h, w2, b2), (V,), gain, bias, 1e-5)
                out = torch.softmax(logits.float(), dim=-1).to(e_text.dtype) @ e_text
            else:
                out = align_attention(h, w2, b2, gain, bias, 1e-5, e_text, spec["chunk_size"], spec["strategy"])
            return torch.autograd.grad(out, inputs, dout)

        return step

    # A small run first, so that one-time costs (library buffers, autograd threads) stay out of the figures.
    make_step(spec["chunk_size"] + 7, 16)()
    if spec.get("memory_cap_bytes"):
        _cap_memory(spec["memory_cap_bytes"], device)
    try:
        return _measure(spec, make_step)
    except (RuntimeError, MemoryError) as exc:
        if not is_oom(exc):
            raise
        return {"grads": spec["grads"], "error": "OOM", "oom": True, "detail": str(exc).strip().splitlines()[0][:300]}


def _measure(spec: dict, make_step) -> dict:
    import torch

    V, T, D, impl, device = spec["V"], spec["T"], spec["D"], spec["impl"], spec["device"]
    dtype = getattr(torch, spec["dtype"])
    step = make_step(V, T)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base, method = torch.cuda.memory_allocated(), "torch.cuda.max_memory_allocated - memory_allocated after inputs"
    elif _reset_peak_rss():
        base, method = _status_kb()["VmRSS"] * 1024, "VmHWM after clear_refs=5, minus VmRSS after inputs"
    else:
        base = _status_kb()["VmRSS"] * 1024
        method = "ru_maxrss of a fresh process, minus VmRSS after inputs"
    walls, cpus, peaks, grad_bytes = [], [], [], 0
    for _ in range(spec["repeats"]):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        grads = step()
        if cuda:
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpus.append(after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime)
        if cuda:
            peaks.append(torch.cuda.max_memory_allocated() - base)
        elif method.startswith("VmHWM"):
            peaks.append(_status_kb()["VmHWM"] * 1024 - base)
        else:
            peaks.append(after.ru_maxrss * 1024 - base)
        grad_bytes = sum(g.numel() * g.element_size() for g in grads)
        del grads
    peak = max(peaks)
    extra = {}
    if impl == "chunked" and spec["grads"] == "all":
        del step
        extra["pass_s"] = _pass_seconds(T, D, V, spec["chunk_size"], dtype, spec["repeats"], device)
    return {
        **extra,
        "grads": spec["grads"],
        "peak_extra_bytes": peak,
        "gradient_bytes": grad_bytes,
        "wall_s": statistics.median(walls),
        "wall_runs_s": [round(w, 3) for w in walls],
        "cpu_s": statistics.median(cpus),
        "cpu_runs_s": [round(c, 3) for c in cpus],
        "method": method,
        "loadavg_1min": os.getloadavg()[0],
        "torch_threads": torch.get_num_threads(),
    }


def _pass_seconds(T: int, D: int, V: int, chunk: int, dtype, repeats: int, device: str = "cpu") -> float:
    """Median seconds of one [T, D] x [D, V] product, made chunk by chunk into one [T, chunk] buffer."""
    import torch

    x, w = torch.randn(T, D, dtype=dtype, device=device), torch.randn(V, D, dtype=dtype, device=device)
    buf = torch.empty(T, min(chunk, V), dtype=dtype, device=device)
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for s in range(0, V, chunk):
            torch.mm(x, w[s : s + chunk].t(), out=buf[:, : min(chunk, V - s)])
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def run_one(spec: dict) -> dict:
    # Every allocation above 128 KiB is mapped and unmapped at once (no adaptive threshold, no retained heap),
    # so the resident set follows the tensors alive, as torch.cuda.max_memory_allocated does on a GPU.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:  # out of memory, most likely: recorded, not fatal
        return {"error": (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def gb(n: float) -> str:
    return f"{n / 2**30:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small grid (seconds), for a smoke test")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per configuration")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads in each subprocess (default: torch's own choice)"
    )
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument(
        "--strategy",
        default="auto",
        choices=STRATEGIES,
        help="the chunked kernel's strategy (default: the cheapest for each T and D)",
    )
    parser.add_argument("--configs", help="VxTxD,... instead of the grid (e.g. 128256x2916x1024)")
    parser.add_argument("--no-cuda", action="store_true", help="skip the paper-scale GPU rows")
    parser.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        help="only the paper-scale rows (no CPU grid), on this device; cpu: a rehearsal, with --paper",
    )
    parser.add_argument(
        "--paper",
        default="x".join(map(str, PAPER)),
        help="VxTxD of the paper-scale rows, T per image (default: %(default)s)",
    )
    parser.add_argument(
        "--images",
        default=",".join(map(str, GPU_IMAGES)),
        help="images per batch of the paper-scale rows, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--dtype", default="bfloat16", choices=("bfloat16", "float32"), help="dtype of the paper-scale rows"
    )
    parser.add_argument(
        "--memory-cap-gb",
        type=float,
        help="each measurement may hold this many GB (2^30 bytes) more than after its warm-up "
        "(CUDA: of the whole GPU); rehearses the out-of-memory rows on a small machine",
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder for the JSON and Markdown files")
    parser.add_argument("--stem", help="file name without extension (default: align_memory[_quick|_custom])")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    try:
        paper = tuple(int(x) for x in args.paper.split("x"))
        images = [int(x) for x in args.images.split(",")]
    except ValueError:
        parser.error(
            f"--paper {args.paper!r} / --images {args.images!r}: use VxTxD and a comma-separated list of "
            "integers, e.g. --paper 128256x6561x3072 --images 1,4,16"
        )
    if len(paper) != 3 or min(paper) < 1 or not images or min(images) < 1:
        parser.error(f"--paper {args.paper!r} / --images {args.images!r}: three positive sizes and positive counts")

    import torch
    from rich.console import Console
    from rich.table import Table

    from alignbench.align_kernel import passes, resolve
    from alignbench.run.outputs import machine

    grid = QUICK_GRID if args.quick else FULL_GRID
    if args.configs:
        grid = [tuple(int(x) for x in c.split("x")) for c in args.configs.split(",")]
    jobs = [] if args.device else [("cpu", "float32", *cfg, False) for cfg in grid]
    V, T, D = paper
    paper_device, paper_note = "cuda", None
    if args.device:
        paper_device = args.device
        if args.device == "cuda" and not torch.cuda.is_available():
            sys.exit(
                "align_memory: --device cuda, but CUDA is not available on this machine; use --device cpu "
                "(a rehearsal) or run it on a GPU"
            )
    elif args.no_cuda:
        paper_note = "skipped: --no-cuda"
    elif not torch.cuda.is_available():
        paper_note = "skipped: CUDA is not available on this machine"
    if paper_note:
        print(f"GPU rows ({args.dtype}, paper scale V={V}, T = images x {T}, D={D}): {paper_note}", flush=True)
    else:
        jobs += [(paper_device, args.dtype, V, T * n, D, True) for n in images]
    cap = int(args.memory_cap_gb * 2**30) if args.memory_cap_gb else None
    rows = []
    for device, dtype, V, T, D, is_paper in jobs:
        strategy = resolve(args.strategy, D, T)
        row = {
            "device": device,
            "dtype": dtype,
            "V": V,
            "T": T,
            "D": D,
            "paper": is_paper,
            "chunk_size": args.chunk_size,
            "strategy": strategy,
            "strategy_passes": round(passes(strategy, D, T), 3),
            "naive_passes": 6,
        }
        for impl in ("naive", "chunked"):
            for grads, repeats in (("all", args.repeats), ("activations", 1)):
                spec = {
                    "impl": impl,
                    "grads": grads,
                    "device": device,
                    "dtype": dtype,
                    "V": V,
                    "T": T,
                    "D": D,
                    "chunk_size": args.chunk_size,
                    "strategy": args.strategy,
                    "repeats": repeats,
                    "threads": args.threads,
                    "memory_cap_bytes": cap if is_paper else None,
                }
                row[f"{impl}_{grads}"] = result = run_one(spec)
                print(f"{device} {dtype} V={V} T={T} D={D} {impl} {grads}: {result}", flush=True)
        row["naive_oom"] = bool(row["naive_all"].get("oom") or row["naive_activations"].get("oom"))
        row["chunked_oom"] = bool(row["chunked_all"].get("oom") or row["chunked_activations"].get("oom"))
        parts = [row[k] for k in ("naive_all", "chunked_all", "naive_activations", "chunked_activations")]
        if not any("error" in p for p in parts[:2]):
            row["memory_ratio"] = parts[1]["peak_extra_bytes"] / parts[0]["peak_extra_bytes"]
        if not any("error" in p for p in parts):
            na, ca, nact, cact = parts
            row["memory_ratio"] = ca["peak_extra_bytes"] / na["peak_extra_bytes"]
            row["activation_ratio"] = cact["peak_extra_bytes"] / nact["peak_extra_bytes"]
            row["time_ratio"] = ca["wall_s"] / na["wall_s"]
            row["cpu_time_ratio"] = ca["cpu_s"] / na["cpu_s"]
            if "pass_s" in ca:
                row["naive_in_passes"] = na["wall_s"] / ca["pass_s"]
                row["chunked_in_passes"] = ca["wall_s"] / ca["pass_s"]
                row["floor_ratio"] = row["strategy_passes"] * ca["pass_s"] / na["wall_s"]
        row["machine"] = machine()
        rows.append(row)

    big = [r for r in rows if r["V"] == 128256 and not r["paper"] and "time_ratio" in r]

    def bar(key: str, limit: float):
        return all(r[key] <= limit for r in big) if big else None

    gpu = [r for r in rows if r["paper"]]

    def gpu_bar():  # chunked runs where naive runs out of memory, or holds <= 1/10 of naive's memory
        if not gpu:
            return None
        return all(
            "error" not in r["chunked_all"] and (r["naive_oom"] or r.get("memory_ratio", 1.0) <= 0.1) for r in gpu
        )

    bars = {
        "activation memory: chunked <= 1/10 of naive (V = 128256, CPU)": bar("activation_ratio", 0.1),
        "total peak extra, [V, D] gradients included: chunked <= 1/10 of naive (V = 128256, CPU)": bar(
            "memory_ratio", 0.1
        ),
        "time: chunked <= 1.2 x naive (V = 128256, CPU)": bar("time_ratio", 1.2),
        "CPU seconds (robust to a shared machine): chunked <= 1.2 x naive (V = 128256, CPU)": bar(
            "cpu_time_ratio", 1.2
        ),
        f"paper scale ({paper_device}, {args.dtype}): chunked runs where naive runs out of memory, or uses "
        "<= 1/10 of its memory": gpu_bar(),
    }
    command = (
        "python benchmarks/align_memory.py"
        + (" --quick" if args.quick else "")
        + (f" --configs {args.configs}" if args.configs else "")
        + f" --repeats {args.repeats}"
        + (f" --threads {args.threads}" if args.threads else "")
        + (f" --chunk-size {args.chunk_size}" if args.chunk_size != 4096 else "")
        + (f" --strategy {args.strategy}" if args.strategy != "auto" else "")
        + (f" --device {args.device}" if args.device else "")
        + (f" --paper {args.paper}" if paper != PAPER else "")
        + (f" --images {args.images}" if images != list(GPU_IMAGES) else "")
        + (f" --dtype {args.dtype}" if args.dtype != "bfloat16" else "")
        + (f" --memory-cap-gb {args.memory_cap_gb}" if args.memory_cap_gb else "")
    )
    ooms = [r["T"] // paper[1] for r in gpu if r["naive_oom"]]
    naive_oom = (
        f"naive runs out of memory from {min(ooms)} image(s) per batch on (T = {min(ooms) * paper[1]})"
        if ooms
        else "naive ran at every size measured"
        if gpu
        else "not measured"
    )
    method = __doc__.split("How memory is measured.")[1].split("Time:")[0].strip()
    report = {
        "command": command,
        "what": __doc__.split("What runs: ")[1].split("How memory")[0].strip(),
        "memory_method": method,
        "time_method": "median wall seconds of the 'all' run over --repeats "
        "(first run included); cpu_s = the process's CPU seconds",
        "repeats": args.repeats,
        "threads": args.threads,
        "bars": {k: v for k, v in bars.items()},
        "rows": rows,
        "paper": {
            "V": paper[0],
            "T_per_image": paper[1],
            "D": paper[2],
            "images": images,
            "device": paper_device,
            "dtype": args.dtype,
            "memory_cap_gb": args.memory_cap_gb,
            "naive_oom": naive_oom,
        },
        "gpu_rows": paper_note or f"measured on {_where(gpu)}",
    }

    header = [
        "device",
        "dtype",
        "V",
        "T",
        "D",
        "naive act. GB",
        "chunked act. GB",
        "act. ratio",
        "naive total GB",
        "chunked total GB",
        "total ratio",
        "naive s",
        "chunked s",
        "time ratio",
        "naive CPU s",
        "chunked CPU s",
        "CPU-time ratio",
        "strategy",
        "pass s",
        "naive in passes",
        "chunked in passes",
        "strategy's passes",
        "floor ratio",
    ]

    def cell(x: dict, key: str, fmt) -> str:
        if "error" in x:
            return "OOM" if x.get("oom") or "out of memory" in x["error"].lower() else "error"
        return fmt(x[key])

    def ratio(r: dict, key: str, fmt: str) -> str:
        return format(r[key], fmt) if key in r else "–"

    lines = []
    for r in rows:
        device = f"{r['device']} ({r['machine'].get('gpu')})" if r["device"].startswith("cuda") else r["device"]
        na, ca, nact, cact = (r[k] for k in ("naive_all", "chunked_all", "naive_activations", "chunked_activations"))
        secs = lambda x: f"{x:.2f}"  # noqa: E731
        lines.append(
            [
                device,
                r["dtype"],
                str(r["V"]),
                str(r["T"]),
                str(r["D"]),
                cell(nact, "peak_extra_bytes", gb),
                cell(cact, "peak_extra_bytes", gb),
                ratio(r, "activation_ratio", ".3f"),
                cell(na, "peak_extra_bytes", gb),
                cell(ca, "peak_extra_bytes", gb),
                ratio(r, "memory_ratio", ".3f"),
                cell(na, "wall_s", secs),
                cell(ca, "wall_s", secs),
                ratio(r, "time_ratio", ".2f"),
                cell(na, "cpu_s", secs),
                cell(ca, "cpu_s", secs),
                ratio(r, "cpu_time_ratio", ".2f"),
                r["strategy"],
                f"{ca['pass_s']:.2f}" if "pass_s" in ca else "–",
                ratio(r, "naive_in_passes", ".2f"),
                ratio(r, "chunked_in_passes", ".2f"),
                f"{r['strategy_passes']:.2f}",
                ratio(r, "floor_ratio", ".2f"),
            ]
        )
    table = Table(title=f"ALIGN forward + backward, naive vs chunked (chunk {args.chunk_size})")
    for name in header:
        table.add_column(name, justify="right")
    for line in lines:
        table.add_row(*line)
    Console(width=300).print(table)
    verdicts = {name: "met" if ok else "NOT met" if ok is not None else "not measured" for name, ok in bars.items()}
    for name, verdict in verdicts.items():
        print(f"bar {name}: {verdict}")

    m = rows[0]["machine"] if rows else {}
    gpus = sorted({r["machine"]["gpu"] for r in rows if r["device"].startswith("cuda")})
    threads = args.threads or m.get("torch_threads")
    md = [
        "# ALIGN memory and time: naive vs chunked\n",
        f"`{command}`\n",
        f"Machine: {m.get('cpu')}, {m.get('cpu_count')} cores, torch {m.get('torch')}, {threads} torch thread(s) "
        f"per run{''.join(', GPU ' + g for g in gpus)}.\n",
        "act. = peak extra memory with W2 and E_text frozen (what the implementation itself holds); total = "
        "peak extra memory with all six gradients, the two [V, D] ones included; GB = 2^30 bytes. Times: "
        f"forward + backward with all six gradients, median of {args.repeats} runs.\n",
        f"Memory: {method}\n",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    md += ["| " + " | ".join(line) + " |" for line in lines]
    md += [""] + [f"- bar {name}: **{verdict}**" for name, verdict in verdicts.items()]
    floors = [r for r in big if "floor_ratio" in r]
    if floors:
        md += [
            "",
            "Passes: " + __doc__.split("Passes. ")[1].strip().replace("\n", " "),
            "Rows whose floor is above 1.2 (the strategy's matrix products alone exceed the time bar): "
            + (
                ", ".join(
                    f"T = {r['T']}, D = {r['D']} ({r['strategy']}, floor {r['floor_ratio']:.2f})"
                    for r in floors
                    if r["floor_ratio"] > 1.2
                )
                or "none"
            )
            + ".",
        ]
    md += [
        "",
        f"Paper-scale rows ({args.dtype}, V = {paper[0]}, D = {paper[2]}, T = images x {paper[1]} for images "
        f"in {images}): " + report["gpu_rows"] + f"; {naive_oom}.",
    ]
    stem = args.stem or (
        "align_memory_custom" if args.configs else "align_memory_quick" if args.quick else "align_memory"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text("\n".join(md) + "\n")
    print(f"wrote {args.out / stem}.json and .md")


def _where(rows: list[dict]) -> str:
    names = sorted({r["machine"].get("gpu") or r["machine"].get("cpu") for r in rows if r["device"].startswith("cuda")})
    return ", ".join(names) if names else "the CPU (" + ", ".join(sorted({r["machine"].get("cpu") for r in rows})) + ")"


if __name__ == "__main__":
    main()
