"""Evaluation throughput on the embedded backbone: batched greedy generation vs one sample at a time.

    python benchmarks/eval_throughput.py [--run RUN_DIR | --steps 250 | --preset llama-1b] [--threads 1]
                                         [--repeats 3] [--device cuda] [--limit N] [--workloads eval,4.6/page]
                                         [--no-floor] [--out DIR] [--stem NAME]
        -> results/bench/eval_throughput.{json,md}      (on a GPU: eval_throughput_cuda.{json,md};
                                                         --preset P: eval_throughput_P[_cuda].{json,md})

The model: an mlp connector trained as `alignbench run --connector mlp --task docvqa` trains it (same
TrainConfig defaults, data seed and init seed), or, with --run, the trained run directory of that command
(its backbone must be the embedded one; the run is named in the output), or, with --preset, a preset of
benchmarks/train_mfu.py (llama-1b: Llama 3.2 1B's shape, 729 visual tokens of width 1152 per page) with
random weights in bfloat16 (as --dtype auto loads an LLM on CUDA), an untrained mlp connector and random page
features: the speed of a ~1B LLM on the same
questions (the embedded pages' questions and prompts; greedy answers of random weights, compared token by
token, every id decoding to a text of its own). Three workloads (--workloads: a subset; --limit N: the first
N questions of each), each predicted once per repeat in every mode, the modes alternating after an untimed
warm-up:

  eval          the DocVQA-like evaluation split: 300 questions, one per page;
  eval+blind    what `alignbench run` evaluates: those 300 questions and their blind baseline (each question
                asked about the next page), 600 generations, every page read by two questions;
  4.6/page      the first 300 questions of the training split's pages, all questions of a page together:
                about 4.6 questions per page, as in DocVQA's validation set (5,349 questions, 1,286 pages).

Modes:
  one_at_a_time  one Hugging Face `generate` call per question (`VLM.generate_reference`), the way most
                 lmms-eval models evaluate;
  batched        `alignbench.evaluate.predict_passes` with EvalConfig's batch size: questions grouped by page,
                 each page through the connector and the LLM once (prefix sharing), prompts left-padded
                 after it, finished answers leaving the batch;
  ours_batch_1   the same code with batch size 1 (on the eval workload): what batching alone adds.
Figures: wall seconds (median and best of the repeats) and the process's CPU seconds (the machine may be
shared), samples/s and the speed-up from the median runs. Every prediction is compared with the
one-at-a-time prediction of the same question; differences are written out.

Compute floor. Each mode's floating-point work is counted once (torch.utils.flop_counter: matrix products
and attention), and the machine's best matrix-product rate (in the LLM's dtype) is measured on a few shapes
(the LLM's and a large square one). floor = work / best rate: the time no implementation of that work can beat on this
machine; one-at-a-time time / batched floor is the largest speed-up batching could give here. Batching
shares per-call overhead, not arithmetic: when one-at-a-time is already close to its floor, the bar is out
of reach for any batched implementation on that machine. The best rate comes from shapes the LLM does not
all run at, so a second floor is measured on the eval workload, where no page is shared: "prefill only", the
connector and one LLM forward over each question's [visual tokens | prompt], without a cache and without
generating anything (less work than any generation of those answers), at the batch size among 8 ... 256
where it runs fastest. --no-floor skips the counting and the prefill-only sweep (on a GPU a small model's time
is kernel launches, not arithmetic, and the counting runs every mode once more).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import time
from pathlib import Path

import torch

from alignbench.config.backbone import BackboneConfig
from alignbench.config.data import DataConfig
from alignbench.config.eval import EvalConfig
from alignbench.config.train import TrainConfig
from alignbench.connector import CONNECTORS, ConnectorContext, build_connector
from alignbench.data.batches import encode_prompt
from alignbench.data.splits import Sample, Split
from alignbench.errors import AlignBenchError
from alignbench.evaluate import predict_passes
from alignbench.model.checkpoint import load_trained
from alignbench.model.vlm import VLM, left_pad
from alignbench.run.outputs import machine
from alignbench.run.workspace import Workspace, quiet_libraries
from alignbench.task import TASKS
from alignbench.train.loop import TrainSource, train

ROOT = Path(__file__).resolve().parents[1]
BAR = 5.0  # batched samples/s over one-at-a-time samples/s
PREFILL_BATCHES = (8, 16, 32, 64, 128, 256)
WORKLOADS = ("eval", "eval+blind", "4.6/page")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_matmul_rate(hidden: int, mlp: int, device: str, dtype: torch.dtype, repeats: int = 5) -> dict:
    """The best matrix-product rate (FLOP/s, in the LLM's dtype) over the LLM's shapes and a square one."""
    rates = {}
    for m, k, n in [(8192, hidden, hidden), (8192, hidden, mlp), (8192, mlp, hidden), (2048, 2048, 2048)]:
        a, b = torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype)
        a @ b  # warm-up
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ b
        synchronize(device)
        rates[f"{m}x{k}x{n}"] = 2 * m * k * n * repeats / (time.perf_counter() - t0)
    return {
        "best": max(rates.values()),
        "dtype": str(dtype).removeprefix("torch."),
        "by_shape": {k: round(v / 1e9, 1) for k, v in rates.items()},
    }


def counted_flops(run, split) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run(split)
    return counter.get_total_flops()


def prefill_only(model: VLM, task, split: Split, features: torch.Tensor, batch_size: int) -> None:
    """Connector + one LLM forward over every question's [page | prompt] (prompts left-padded), no decoding."""
    tok, embed = model.tokenizer, model.llm.get_input_embeddings()
    prompts = [encode_prompt(tok, task, s.question) for s in split.samples]
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            chunk = range(start, min(start + batch_size, len(prompts)))
            ids = left_pad([prompts[i] for i in chunk], tok.pad_token_id, features.device)[0]
            visual = model.visual_tokens(features[[split.samples[i].image for i in chunk]])
            text = embed(ids)
            model.llm.base_model(inputs_embeds=torch.cat([visual.to(text.dtype), text], dim=1), use_cache=False)
    synchronize(str(features.device))


def one_at_a_time(model: VLM, task, split: Split, features: torch.Tensor, passes: dict) -> dict[str, list[str]]:
    """One `generate` call of Hugging Face per question, as lmms-eval models run."""
    tok = model.tokenizer
    out = {}
    for label, image_of in passes.items():
        preds = []
        for i, s in enumerate(split.samples):
            page = image_of(i) if image_of else s.image
            ids = model.generate_reference(
                features[page : page + 1], [encode_prompt(tok, task, s.question)], task.max_new_tokens
            )[0]
            preds.append(tok.decode(ids, skip_special_tokens=True).strip())
        out[label] = preds
    return out


def make_modes(
    model: VLM, task, features: torch.Tensor, passes: dict, cfg: EvalConfig, with_batch_1: bool, device: str
) -> dict:
    """Each mode as a function of the split it predicts."""
    modes = {
        "one_at_a_time": lambda split: one_at_a_time(model, task, split, features, passes),
        "batched": lambda split: predict_passes(model, task, split, features, cfg, passes, device=device),
    }
    if with_batch_1:
        one = dataclasses.replace(cfg, batch_size=1)
        modes["ours_batch_1"] = lambda split: predict_passes(model, task, split, features, one, passes, device=device)
    return modes


def compact(split: Split, samples: list[Sample]) -> tuple[Split, list[int]]:
    """`samples` alone, on their own pages renumbered in order (the identity when every page is used), and the
    original index of each page kept."""
    used = sorted({s.image for s in samples})
    index = {page: k for k, page in enumerate(used)}
    return dataclasses.replace(
        split,
        images=[split.images[p] for p in used],
        samples=[dataclasses.replace(s, image=index[s.image]) for s in samples],
    ), used


def workloads(
    ws: Workspace, task, names=WORKLOADS, limit: int | None = None, n_per_page: int = 300, random_features=None
) -> dict:
    """(split, features, passes) of each workload named. `random_features(n_pages)`: features of that many pages
    instead of the backbone's (a preset, which has no tower)."""

    def load(name: str, n: int | None):
        split, feats = (ws.data(task, name), None) if random_features else ws.split(task, name)
        if n is not None and n < len(split.samples):
            split, pages = compact(split, split.samples[:n])  # pages in order
            feats = None if feats is None else feats[pages]
        return split, random_features(len(split.images)) if random_features else feats

    out = {}
    if {"eval", "eval+blind"} & set(names):
        split, feats = load("eval", limit)
        n_img = len(split.images)
        blind = {"eval": None, "blind": lambda i: (split.samples[i].image + 1) % n_img}
        out |= {"eval": (split, feats, {"eval": None}), "eval+blind": (split, feats, blind)}
    if "4.6/page" in names:
        dense, dense_feats = load("train", min(n_per_page, limit or n_per_page))
        out["4.6/page"] = (dense, dense_feats, {"eval": None})
    return {name: out[name] for name in WORKLOADS if name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="docvqa")
    parser.add_argument("--run", type=Path, help="a trained mlp run directory (instead of training one here)")
    parser.add_argument("--steps", type=int, default=TrainConfig().steps, help="training steps when no --run")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu or cuda (default: cuda when there is one)",
    )
    parser.add_argument(
        "--preset",
        choices=("llama-1b", "smoke"),
        help="a preset of benchmarks/train_mfu.py with random weights instead of the embedded backbone",
    )
    parser.add_argument("--limit", type=int, help="the first N questions of each workload")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--no-floor", action="store_true", help="skip the compute floor (FLOP counting, prefill only)")
    parser.add_argument(
        "--train-docs",
        type=int,
        default=DataConfig().train_docs,
        help="pages of the embedded train split (the 4.6/page workload's pages)",
    )
    parser.add_argument(
        "--eval-questions",
        type=int,
        default=DataConfig().eval_questions,
        help="questions of the embedded evaluation split",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench", help="folder for the JSON and Markdown")
    parser.add_argument("--stem", help="file name without extension (default: eval_throughput[_PRESET][_cuda])")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine; use --device cpu")
    if args.preset and args.run:
        parser.error("--preset and --run exclude each other: a preset has random weights, a run its trained ones")
    names = [w for w in args.workloads.split(",") if w]
    if not names or set(names) - set(WORKLOADS):
        parser.error(f"--workloads {args.workloads!r}: use a comma-separated list of {', '.join(WORKLOADS)}")
    if (args.limit is not None and args.limit < 1) or args.repeats < 1:
        parser.error("--limit and --repeats must be at least 1")
    device = args.device
    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)

    # 1. backbone, data, the trained mlp connector (or a preset with random weights)
    task = TASKS.get(args.task)
    data_cfg = DataConfig(train_docs=args.train_docs, eval_questions=args.eval_questions)
    ws = Workspace(BackboneConfig(), data_cfg, "cpu" if args.preset else device, log=print)
    random_features = None
    if args.preset:
        from train_mfu import preset_backbone  # benchmarks/ is this script's folder

        # bfloat16, as --dtype auto loads an LLM on CUDA (on the CPU too: a rehearsal takes the same path)
        backbone = preset_backbone(args.preset, device, torch.bfloat16, every_id_decodes=True)
        backbone.llm.eval()
        ctx = ConnectorContext(backbone.vision_dim, backbone.llm_dim, backbone.num_patches, backbone.llm)
        model = VLM(backbone, build_connector("mlp", ctx, {}, TrainConfig().init_seed).to(device))
        gen = torch.Generator().manual_seed(0)

        def random_features(n: int) -> torch.Tensor:  # [n, patches, width]
            return torch.randn(n, backbone.num_patches, backbone.vision_dim, generator=gen)

        provenance = {"run": None, "trained_steps": 0, "weights": f"random weights (the {args.preset} preset's config)"}
    elif args.run:
        backbone = ws.backbone
        try:
            model, config = load_trained(args.run, backbone, device)
        except (AlignBenchError, OSError, ValueError, KeyError) as exc:
            parser.error(f"--run {args.run}: {exc}")
        if config["connector"] != "mlp" or config["task"] != task.name:
            parser.error(f"--run {args.run} is a {config['connector']} run on {config['task']}, not mlp on {task.name}")
        provenance = {"run": args.run.name, "trained_steps": config["train"]["steps"]}
    else:
        backbone = ws.backbone
        ctx = ConnectorContext(backbone.vision_dim, backbone.llm_dim, backbone.num_patches, backbone.llm)
        model = VLM(backbone, build_connector("mlp", ctx, {}, TrainConfig().init_seed).to(device))
        train_split, train_feats = ws.split(task, "train")
        cfg = TrainConfig(steps=args.steps, lr=CONNECTORS.get("mlp").default_lr)
        train(model, [TrainSource(task, train_split, train_feats)], cfg, DataConfig().seed, device, None, print)
        provenance = {"run": None, "trained_steps": args.steps}
    model.eval()
    eval_cfg = EvalConfig(blind=False)
    llm_cfg = model.llm.config
    rate = None
    if not args.no_floor:
        rate = best_matmul_rate(
            llm_cfg.hidden_size, llm_cfg.intermediate_size, device, next(model.llm.parameters()).dtype
        )
        print(f"best matrix-product rate: {rate['best'] / 1e9:.1f} GFLOP/s ({rate['by_shape']})", flush=True)

    # 2. each workload in each mode, alternating, after a warm-up
    report_rows, diffs_all = {}, {}
    work = workloads(ws, task, names, args.limit, random_features=random_features)
    for name, (split, feats, passes) in work.items():
        feats = feats.to(device)
        modes = make_modes(model, task, feats, passes, eval_cfg, with_batch_1=name == "eval", device=device)
        for run in modes.values():  # warm-up
            run(dataclasses.replace(split, samples=split.samples[:8]))
        # untimed
        flops = {mode: None if args.no_floor else counted_flops(run, split) for mode, run in modes.items()}
        walls = {m: [] for m in modes}
        cpus = {m: [] for m in modes}
        preds = {}
        loads = [os.getloadavg()[0]]
        for rep in range(args.repeats):
            for mode, run in modes.items():
                c0, t0 = cpu_seconds(), time.perf_counter()
                out = run(split)
                synchronize(device)
                walls[mode].append(time.perf_counter() - t0)
                cpus[mode].append(cpu_seconds() - c0)
                if mode in preds and preds[mode] != out:
                    print(f"warning: {name} {mode} predictions changed between repeats")
                preds[mode] = out
                print(f"{name} repeat {rep + 1} {mode}: {walls[mode][-1]:.2f} s", flush=True)
            loads.append(os.getloadavg()[0])
        n = sum(len(split.samples) for _ in passes)
        rows = {}
        for mode in modes:
            med, best = statistics.median(walls[mode]), min(walls[mode])
            rows[mode] = {
                "wall_s_median": round(med, 3),
                "wall_s_best": round(best, 3),
                "samples_per_s": round(n / med, 2),
                "cpu_s_median": round(statistics.median(cpus[mode]), 3),
                "wall_runs_s": [round(w, 3) for w in walls[mode]],
                "cpu_runs_s": [round(c, 3) for c in cpus[mode]],
                "gflop": None if rate is None else round(flops[mode] / 1e9, 2),
                "floor_s": None if rate is None else round(flops[mode] / rate["best"], 3),
            }
        ref = rows["one_at_a_time"]
        for row in rows.values():
            row["speedup"] = round(ref["wall_s_median"] / row["wall_s_median"], 2)
            row["cpu_speedup"] = round(ref["cpu_s_median"] / max(row["cpu_s_median"], 1e-9), 2)
            # were this mode at its floor
            row["max_speedup"] = None if rate is None else round(ref["wall_s_median"] / max(row["floor_s"], 1e-9), 2)
        diffs = {
            mode: [
                {"pass": label, "index": i, "question": split.samples[i].question, mode: b, "one_at_a_time": o}
                for label in passes
                for i, (b, o) in enumerate(zip(preds[mode][label], preds["one_at_a_time"][label]))
                if b != o
            ]
            for mode in modes
            if mode != "one_at_a_time"
        }
        for mode, d in diffs.items():
            rows[mode]["identical_to_one_at_a_time"] = not d
        pages = len(
            {(passes[label](i) if passes[label] else s.image) for label in passes for i, s in enumerate(split.samples)}
        )
        if name == "eval" and rate is not None:  # no page shared: every question needs its own prefill
            prefill_only(model, task, split, feats, eval_cfg.batch_size)  # warm-up
            by_batch = {}
            for size in PREFILL_BATCHES:
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    prefill_only(model, task, split, feats, size)
                    times.append(time.perf_counter() - t0)
                by_batch[size] = statistics.median(times)
            prefill_s = min(by_batch.values())
            rows["batched"]["prefill_only_s_by_batch"] = {k: round(v, 3) for k, v in by_batch.items()}
            rows["batched"]["prefill_only_s"] = round(prefill_s, 3)
            rows["batched"]["max_speedup_prefill"] = round(ref["wall_s_median"] / prefill_s, 2)
            print(
                f"eval: prefill only {prefill_s:.2f} s -> at most "
                f"{rows['batched']['max_speedup_prefill']}x over one at a time",
                flush=True,
            )
        same = not any(diffs.values())
        report_rows[name] = {
            "generations": n,
            "pages": pages,
            "modes": rows,
            "predictions_identical": same,
            "n_different": sum(map(len, diffs.values())),
            "loadavg_1min": [round(x, 2) for x in loads],
        }
        diffs_all[name] = {mode: d[:50] for mode, d in diffs.items()}
        print(
            f"{name}: {n} generations on {pages} pages, speed-up {rows['batched']['speedup']}x "
            f"(CPU {rows['batched']['cpu_speedup']}x), identical: {same}",
            flush=True,
        )

    # 3. write
    command = "python benchmarks/eval_throughput.py" + (
        f" --run {args.run}" if args.run else f" --preset {args.preset}" if args.preset else f" --steps {args.steps}"
    )
    command += (f" --threads {args.threads}" if args.threads else "") + f" --repeats {args.repeats}"
    command += f" --device {device}" if device != "cpu" else ""
    command += (f" --limit {args.limit}" if args.limit else "") + (" --no-floor" if args.no_floor else "")
    command += f" --workloads {args.workloads}" if names != list(WORKLOADS) else ""
    command += f" --train-docs {args.train_docs}" if args.train_docs != DataConfig().train_docs else ""
    command += f" --eval-questions {args.eval_questions}" if args.eval_questions != DataConfig().eval_questions else ""
    tok = model.tokenizer
    split = next(iter(work.values()))[0]
    prompt_tokens = statistics.mean(len(encode_prompt(tok, task, s.question)) for s in split.samples)
    matmul = (
        None if rate is None else {"best": round(rate["best"] / 1e9, 1), "dtype": rate["dtype"], **rate["by_shape"]}
    )
    report = {
        "command": command,
        "backbone_key": backbone.key,
        "task": task.name,
        "connector": "mlp",
        **provenance,
        "batch_size": eval_cfg.batch_size,
        "max_new_tokens": task.max_new_tokens,
        "visual_tokens": backbone.num_patches,
        "prompt_tokens_mean": round(prompt_tokens, 1),
        "llm_params": sum(p.numel() for p in model.llm.parameters()),
        "llm_dtype": str(next(model.llm.parameters()).dtype).removeprefix("torch."),
        "matmul_rate_gflops": matmul,
        "workloads": report_rows,
        "bar": {
            "speedup_at_least": BAR,
            "met": {
                k: v["modes"]["batched"]["speedup"] >= BAR and v["predictions_identical"]
                for k, v in report_rows.items()
            },
        },
        "differences": diffs_all,
        "machine": {**machine(), "device": device},
        "timing": "wall seconds of a whole workload after an untimed warm-up; samples/s and speed-ups from the "
        "median repeat; the modes alternate within each repeat",
    }
    m = report["machine"]
    weights = (
        f"{report['llm_params'] / 1e9:.2f} B-parameter LLM ({report['llm_dtype']}) and mlp connector, "
        f"{provenance['weights']}, random page features"
        if args.preset
        else f"mlp connector trained {provenance['trained_steps']} steps"
        + (f" (run {provenance['run']})" if provenance["run"] else "")
    )
    md = [
        "# Evaluation throughput: batched vs one sample at a time\n",
        f"`{command}`\n",
        f"Machine: {m['cpu']}, {m['cpu_count']} cores, torch {m['torch']} ({m['torch_threads']} thread(s))"
        + (f", GPU {m['gpu']} (the models run there)" if device.startswith("cuda") else "")
        + ".\n",
        f"Backbone {backbone.key}; {weights}; task {task.name} (embedded questions); greedy, up "
        f"to {task.max_new_tokens} new tokens; each page is {backbone.num_patches} visual tokens, a prompt "
        f"{prompt_tokens:.0f} tokens on average; batch size {eval_cfg.batch_size}.\n",
        "| workload | generations | pages | mode | median wall s | best wall s | samples/s | CPU s | speed-up | "
        "CPU speed-up | identical to one-at-a-time | GFLOP | floor s | speed-up at floor |",
        "|" + "---|" * 14,
    ]

    def num(x, fmt: str) -> str:
        return "–" if x is None else format(x, fmt)

    for name, r in report_rows.items():
        for mode, row in r["modes"].items():
            same = str(row.get("identical_to_one_at_a_time", "–"))
            md.append(
                f"| {name} | {r['generations']} | {r['pages']} | {mode} | {row['wall_s_median']:.2f} | "
                f"{row['wall_s_best']:.2f} | {row['samples_per_s']:.1f} | {row['cpu_s_median']:.2f} | "
                f"{row['speedup']:.2f} | {row['cpu_speedup']:.2f} | {same} | {num(row['gflop'], '.1f')} | "
                f"{num(row['floor_s'], '.2f')} | {num(row['max_speedup'], '.2f')} |"
            )
    if rate is None:
        md += ["", "Compute floor: not measured (--no-floor).", ""]
    else:
        md += [
            "",
            "Compute floor: " + __doc__.split("Compute floor. ")[1].strip().replace("\n", " "),
            f"Best matrix-product rate measured ({rate['dtype']}): {rate['best'] / 1e9:.1f} GFLOP/s "
            f'(by shape: {", ".join(f"{k} {v}" for k, v in rate["by_shape"].items())}). "speed-up at floor" = '
            "one-at-a-time median wall / this mode's floor.",
            "",
        ]
    prefill = report_rows.get("eval", {}).get("modes", {}).get("batched", {})
    if "prefill_only_s" in prefill:
        md += [
            f"Prefill only (eval workload, median of {args.repeats} at each batch size: "
            + ", ".join(f"{k}: {v:.2f} s" for k, v in prefill["prefill_only_s_by_batch"].items())
            + f"): at best {prefill['prefill_only_s']:.2f} s, so batching can make the eval workload at most "
            f"{prefill['max_speedup_prefill']:.2f}x faster than one at a time on this machine "
            f"(batched now: {prefill['speedup']:.2f}x).",
            "",
        ]
    md += [
        f"Bar (batched >= {BAR}x one-at-a-time, identical predictions): "
        + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in report["bar"]["met"].items())
        + ".",
        "1-minute load average during each workload: "
        + "; ".join(f"{k} {v['loadavg_1min']}" for k, v in report_rows.items())
        + ".",
    ]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    stem = args.stem or "eval_throughput" + (f"_{args.preset}" if args.preset else "") + (
        "" if device == "cpu" else "_cuda"
    )
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
