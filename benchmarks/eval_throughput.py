"""Evaluation throughput on the embedded backbone: batched greedy generation vs one sample at a time.

    python benchmarks/eval_throughput.py [--task docvqa] [--steps 250] [--n 300] [--repeats 3] [--sweep 8,16,...]
        -> results/bench/eval_throughput.{json,md}

An mlp connector is trained as `alignbench run --connector mlp` trains it (same TrainConfig defaults,
data seed and init seed; `--steps 0` keeps it freshly initialised), then the evaluation split is
predicted by `alignbench.evaluate.predict` once per repeat in each mode, the modes alternating after an
untimed warm-up: with EvalConfig's batch size (left-padded batches sorted by prompt length) and with
batch_size=1. Figures: wall seconds (median and best of the repeats), samples/s and the speed-up from the
median runs, and the process's CPU seconds (the machine may be shared). The two modes' predictions are
compared one by one and every difference is written out. A few other batch sizes (--sweep) are timed
too, with the number of prefill and generated tokens per sample, which bound what batching can gain.
A run with another --steps or --n writes eval_throughput_steps{N}[_n{n}].{json,md} instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import torch

from alignbench.backbone import BackboneConfig
from alignbench.connector import CONNECTORS, ConnectorContext, build_connector
from alignbench.data import DataConfig, encode_prompt
from alignbench.evaluate import EvalConfig, predict
from alignbench.model import VLM
from alignbench.pipeline import Workspace, quiet_libraries
from alignbench.task import TASKS
from alignbench.train import TrainConfig, TrainSource, train

ROOT = Path(__file__).resolve().parents[1]
BAR = 5.0  # batched samples/s over one-at-a-time samples/s


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine() -> dict:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="docvqa")
    parser.add_argument("--steps", type=int, default=TrainConfig().steps, help="training steps (0: fresh init)")
    parser.add_argument("--n", type=int, default=None, help="evaluate the first N questions (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep", type=lambda v: [int(x) for x in v.split(",") if x], default=[8, 16, 32, 128, 300],
                        help="further batch sizes to time (comma-separated; empty: none)")
    args = parser.parse_args()
    quiet_libraries()

    # 1. backbone, data, connector (as `alignbench run --connector mlp` builds them)
    task = TASKS.get(args.task)
    data_cfg, train_cfg, eval_cfg = DataConfig(eval_limit=args.n), TrainConfig(steps=max(args.steps, 1)), EvalConfig()
    ws = Workspace(BackboneConfig(), data_cfg, "cpu")
    backbone = ws.backbone
    ctx = ConnectorContext(backbone.vision_dim, backbone.llm_dim, backbone.num_patches, backbone.llm)
    connector = build_connector("mlp", ctx, {}, train_cfg.init_seed)
    model = VLM(backbone, connector)
    # 2. train (or not)
    if args.steps > 0:
        train_split, train_feats = ws.split(task, "train")
        cfg = TrainConfig(steps=args.steps, lr=CONNECTORS.get("mlp").default_lr)
        t0 = time.time()
        train(model, [TrainSource(task, train_split, train_feats)], cfg, data_cfg.seed, "cpu", None, print)
        print(f"trained {args.steps} steps in {time.time() - t0:.1f} s")
    split, feats = ws.split(task, "eval")
    model.eval()

    # 3. predictions, batched and one at a time, alternating (after an untimed warm-up of each)
    modes = {"batched": EvalConfig(batch_size=eval_cfg.batch_size, blind=False),
             "one_at_a_time": EvalConfig(batch_size=1, blind=False)}
    warmup = dataclasses.replace(split, samples=split.samples[: eval_cfg.batch_size])
    for cfg in modes.values():
        predict(model, task, warmup, feats, cfg)
    walls: dict[str, list[float]] = {m: [] for m in modes}
    cpus: dict[str, list[float]] = {m: [] for m in modes}
    preds: dict[str, list[str]] = {}
    loads = [os.getloadavg()[0]]
    for rep in range(args.repeats):
        for mode, cfg in modes.items():
            c0, t0 = cpu_seconds(), time.perf_counter()
            out = predict(model, task, split, feats, cfg)
            walls[mode].append(time.perf_counter() - t0)
            cpus[mode].append(cpu_seconds() - c0)
            if mode in preds and preds[mode] != out:
                print(f"warning: {mode} predictions changed between repeats")
            preds[mode] = out
            print(f"repeat {rep + 1} {mode}: {walls[mode][-1]:.1f} s", flush=True)
        loads.append(os.getloadavg()[0])
    # other batch sizes, to show where batching stops paying (best of two runs each, after a warm-up)
    sweep = {}
    for bs in args.sweep:
        cfg = EvalConfig(batch_size=bs, blind=False)
        predict(model, task, warmup, feats, cfg)
        runs = []
        for _ in range(2):
            t0 = time.perf_counter()
            out = predict(model, task, split, feats, cfg)
            runs.append(time.perf_counter() - t0)
        sweep[bs] = {"wall_s_best": round(min(runs), 2), "samples_per_s": round(len(split.samples) / min(runs), 2),
                     "identical_to_batch_1": out == preds["one_at_a_time"]}
        print(f"batch size {bs}: {sweep[bs]}", flush=True)

    # the prefill alone (one new token): what batching cannot share, since its arithmetic grows with the samples
    prefill_task = dataclasses.replace(task, max_new_tokens=1)
    prefill = {}
    for mode, cfg in modes.items():
        runs = []
        for _ in range(2):
            t0 = time.perf_counter()
            predict(model, prefill_task, split, feats, cfg)
            runs.append(time.perf_counter() - t0)
        prefill[mode] = round(min(runs), 2)
    print(f"prefill only (max_new_tokens=1), best of 2: {prefill}", flush=True)

    # 4. compare and write
    n = len(split.samples)
    tok = model.tokenizer
    prompt_tokens = statistics.mean(len(encode_prompt(tok, task, s.question)) for s in split.samples)
    answer_tokens = statistics.mean(len(tok(p, add_special_tokens=False)["input_ids"]) + 1 for p in preds["batched"])
    workload = {"visual_tokens": backbone.num_patches, "prompt_tokens_mean": round(prompt_tokens, 1),
                "generated_tokens_mean": round(answer_tokens, 1), "prefill_only_wall_s": prefill,
                "speedup_ceiling": round(statistics.median(walls["one_at_a_time"]) / prefill["batched"], 2),
                "note": "each sample is a prefill of visual + prompt tokens, then about generated_tokens_mean "
                        "decoding steps (the answer and EOS); batching shares the per-step overhead of decoding, "
                        "not the prefill's arithmetic. speedup_ceiling = one-at-a-time median wall / batched "
                        "prefill-only wall: the speed-up if batched decoding cost nothing"}
    diffs = [{"index": i, "uid": s.uid, "question": s.question, "batched": b, "one_at_a_time": o}
             for i, (s, b, o) in enumerate(zip(split.samples, preds["batched"], preds["one_at_a_time"])) if b != o]
    rows = {}
    for mode in modes:
        best, med = min(walls[mode]), statistics.median(walls[mode])
        rows[mode] = {"batch_size": modes[mode].batch_size, "wall_s_best": round(best, 2),
                      "wall_s_median": round(med, 2), "samples_per_s": round(n / med, 2),
                      "samples_per_s_best": round(n / best, 2),
                      "cpu_s_median": round(statistics.median(cpus[mode]), 2),
                      "wall_runs_s": [round(w, 2) for w in walls[mode]],
                      "cpu_runs_s": [round(c, 2) for c in cpus[mode]]}
    one, batched = rows["one_at_a_time"], rows["batched"]
    speedup = one["wall_s_median"] / batched["wall_s_median"]  # the bar is checked on the median runs
    best_speedup = one["wall_s_best"] / batched["wall_s_best"]
    cpu_speedup = one["cpu_s_median"] / batched["cpu_s_median"]
    verdict = "met" if speedup >= BAR else "NOT met"
    command = f"python benchmarks/eval_throughput.py --task {args.task} --steps {args.steps}" + \
        (f" --n {args.n}" if args.n else "") + f" --repeats {args.repeats}"
    report = {"command": command, "backbone_key": backbone.key, "task": task.name, "connector": "mlp",
              "trained_steps": args.steps,
              "n": n, "max_new_tokens": task.max_new_tokens, "modes": rows, "speedup": round(speedup, 2),
              "speedup_best_runs": round(best_speedup, 2), "cpu_time_speedup": round(cpu_speedup, 2),
              "bar": {"speedup_at_least": BAR, "met": speedup >= BAR},
              "batch_size_sweep": sweep, "workload": workload,
              "predictions_identical": not diffs, "n_different": len(diffs), "differences": diffs,
              "loadavg_1min": loads, "machine": machine(),
              "timing": "wall seconds of alignbench.evaluate.predict over the whole split after an untimed "
                        "warm-up; samples/s and the speed-up from the median repeat; the two modes alternate"}

    header = ["mode", "batch size", "median wall s", "best wall s", "samples/s", "CPU s"]
    lines = [[m, str(r["batch_size"]), f"{r['wall_s_median']:.2f}", f"{r['wall_s_best']:.2f}",
              f"{r['samples_per_s']:.2f}", f"{r['cpu_s_median']:.2f}"] for m, r in rows.items()]
    print("\n" + "".join(f"{h:>15}" for h in header))
    for line in lines:
        print("".join(f"{x:>15}" for x in line))
    summary = (f"Speed-up (median runs) {speedup:.2f}x, bar >= {BAR}x {verdict}; best runs {best_speedup:.2f}x; "
               f"CPU time {cpu_speedup:.2f}x. Predictions identical between batch sizes: {not diffs} "
               f"({len(diffs)} of {n} differ).")
    print(summary)

    m = report["machine"]
    md = ["# Evaluation throughput: batched vs one sample at a time\n", f"`{command}`\n",
          f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads); "
          f"1-minute load average during the runs {', '.join(f'{x:.1f}' for x in loads)}.\n",
          f"Backbone {backbone.key}; task {task.name} (embedded), mlp connector trained {args.steps} steps, "
          f"n = {n} questions, up to "
          f"{task.max_new_tokens} new tokens, greedy.\n",
          "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(line) + " |" for line in lines]
    md += ["", summary, "",
           f"Workload per sample: {workload['visual_tokens']} visual tokens + {workload['prompt_tokens_mean']} prompt "
           f"tokens of prefill (mean), then {workload['generated_tokens_mean']} generated tokens (mean, EOS included). "
           f"The prefill alone (max_new_tokens=1) takes {prefill['batched']:.2f} s batched and "
           f"{prefill['one_at_a_time']:.2f} s one at a time: even with free decoding, batching could not beat "
           f"{workload['speedup_ceiling']:.2f}x here.",
           "", "| batch size | best wall s | samples/s | predictions identical to batch size 1 |", "|---|---|---|---|"]
    md += [f"| {bs} | {r['wall_s_best']:.2f} | {r['samples_per_s']:.2f} | {r['identical_to_batch_1']} |"
           for bs, r in sweep.items()]
    md += [f"- #{d['index']} {d['question']!r}: batched {d['batched']!r}, one at a time {d['one_at_a_time']!r}"
           for d in diffs[:20]]
    out = ROOT / "results" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    stem = "eval_throughput" if args.steps == TrainConfig().steps and not args.n else \
        f"eval_throughput_steps{args.steps}" + (f"_n{args.n}" if args.n else "")
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")
    print(f"wrote {out / stem}.json and .md")


if __name__ == "__main__":
    main()
