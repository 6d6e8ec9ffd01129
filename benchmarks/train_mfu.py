"""Training tokens/s and model FLOPs utilisation (MFU) of a ~1B-parameter preset, on a GPU.

    python benchmarks/train_mfu.py [--connector mlp[,align]] [--stage full[,connector]] [--batch-size 8]
                                   [--steps 10] [--peak-tflops X] [--out DIR] [--stem NAME]
        -> results/bench/train_mfu_{connectors}[_{stages}].{json,md}   (stage full alone: train_mfu_{connectors})
    python benchmarks/train_mfu.py --smoke     a tiny preset for 1 step on the CPU (bf16 autocast there too):
                                               checks that the code runs (writes its files only with --out)

Without CUDA (and without --smoke) it prints why it does not run and writes nothing.

The preset "llama-1b" is Llama 3.2 1B's configuration, built from a config (no hub; random weights, which
do not change the speed): width 2048, 16 layers, 32 query and 8 key/value heads, MLP 8192, vocabulary
128,256, tied embeddings: 1.24 B parameters. The vision side is the shape of SigLIP-400M/14 at 384 px:
729 patches of width 1152 per image, fed as features (the tower is frozen in every stage, and its features
come from the feature cache), one image (one tile) per sequence.

A step is the project's own: `VLM.loss` (visual tokens prepended to the text, LM-head logits at answer tokens
only), AdamW over the connector's parameter groups (and the LLM's at 1e-5 in stage full), gradient clipping,
bf16 autocast, as `alignbench.train.loop` runs it. The LLM's weights are what a run holds in each stage: bfloat16
and frozen in stage `connector` (`--dtype auto` on CUDA), a float32 copy that trains in stage `full`.
Each (stage, connector) pair gets a fresh connector and optimizer; the LLM is built once per stage.
A sequence is 729 visual tokens + --text-tokens (default 256) text tokens, the last --answer-tokens (64) of
which are answers.

Model FLOPs per step (what the model needs, not what the hardware did; no recomputation). w = 6 where the
weights train (forward 2, backward 4 per weight and token), 4 where they are frozen (the backward pass still
carries the gradient to the connector: 2 for the inputs' gradient, none for the weights'):
  LLM weights     w x (attention + MLP weights) x tokens
  attention       6 x layers x width x L per token, L = sequence length (causal: half of 12 x layers x width x L)
  LM head         w x width x V x answer tokens                 (logits are computed at answer tokens only)
  connector       6 x its parameters x visual tokens
  align mixing    w x V x width x visual tokens                 (align: P · E_text, E_text trains with the LLM)
MFU = model FLOPs per second / the GPU's peak dense bf16 FLOP/s (a table of known GPUs, or --peak-tflops).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {
    "llama-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        rope_theta=500000.0,
    ),
    "smoke": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=1000,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    ),
}
VISION = {"llama-1b": (729, 1152), "smoke": (16, 32)}  # (patches, width) of the vision features
# Dense bf16 peak of known GPUs (vendor data sheets), FLOP/s; matched on the device name, first match wins.
PEAKS = [("H200", 989.4e12), ("H100 PCIe", 756.0e12), ("H100", 989.4e12), ("A100", 312.0e12), ("L40S", 362.1e12)]
BAR = 0.35
STAGES = ("connector", "full")


def preset_backbone(preset: str, device: str, dtype: torch.dtype = torch.float32, every_id_decodes: bool = False):
    """The preset's LLM built from its config on `device` (random weights), behind the embedded character
    tokenizer (no prompt prefix before the visual tokens). `every_id_decodes`: filler tokens up to the vocabulary
    size, so that any generated id decodes to a text of its own (greedy answers of random weights compare)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignbench.backbones.base import Backbone
    from alignbench.backbones.tiny import make_tokenizer

    config = LlamaConfig(**PRESETS[preset], pad_token_id=0, eos_token_id=1, bos_token_id=None)
    torch.manual_seed(0)
    with torch.device(device):
        llm = LlamaForCausalLM(config)
    llm.to(dtype)
    tokenizer = make_tokenizer()
    if every_id_decodes:
        tokenizer.add_tokens([f"<t{i}>" for i in range(len(tokenizer), config.vocab_size)])
    patches, width = VISION[preset]
    # No tower: the connector is fed features of the tower's shape directly, so N and d are the preset's.
    return Backbone(
        vision=torch.nn.Identity(),
        llm=llm,
        tokenizer=tokenizer,
        image_transform=None,
        key=f"preset-{preset}",
        image_size=(0, 0),
        num_patches=patches,
        vision_dim=width,
    )


def model_flops(
    config,
    tokens: int,
    seq_len: int,
    answer_tokens: int,
    visual_tokens: int,
    connector_params: int,
    stage: str = "full",
    connector: str = "mlp",
) -> dict:
    d, layers, heads, kv = (
        config.hidden_size,
        config.num_hidden_layers,
        config.num_attention_heads,
        config.num_key_value_heads,
    )
    head_dim = d // heads
    attn_weights = d * heads * head_dim + 2 * d * kv * head_dim + heads * head_dim * d  # q, k, v, o
    mlp_weights = 3 * d * config.intermediate_size
    w = 6 if stage == "full" else 4
    flops = {
        "llm_weights": w * layers * (attn_weights + mlp_weights) * tokens,
        "attention": 6 * layers * d * seq_len * tokens,
        "lm_head": w * d * config.vocab_size * answer_tokens,
        "connector": 6 * connector_params * visual_tokens,
    }
    if connector == "align":
        flops["align_mixing"] = w * config.vocab_size * d * visual_tokens
    return flops


def measure(backbone, name: str, stage: str, args, device: str, warmup: int, steps: int) -> dict:
    """Tokens/s and model FLOPs of one (stage, connector) on the preset."""
    from alignbench.connector import CONNECTORS, ConnectorContext, build_connector
    from alignbench.model.vlm import VLM

    llm, config = backbone.llm, backbone.llm.config
    patches, width = backbone.num_patches, backbone.vision_dim
    ctx = ConnectorContext(width, config.hidden_size, patches, llm)
    connector = build_connector(name, ctx, {}, 1234).to(device)
    model = VLM(backbone, connector)
    llm.requires_grad_(stage == "full")
    llm.train(stage == "full")
    connector.train()
    groups = connector.param_groups(CONNECTORS.get(name).default_lr)
    if stage == "full":
        groups.append({"params": list(llm.parameters()), "lr": 1e-5})
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups)
    connector_params = sum(p.numel() for p in connector.parameters())

    # a fixed batch: features, text ids, answer labels on the last answer_tokens positions
    gen = torch.Generator(device=device).manual_seed(0)
    B, L = args.batch_size, args.text_tokens
    feats = torch.randn(B, patches, width, device=device, generator=gen)
    ids = torch.randint(3, config.vocab_size, (B, L), device=device, generator=gen)
    mask = torch.ones(B, L, dtype=torch.long, device=device)
    labels = torch.full((B, L), -100, dtype=torch.long, device=device)
    labels[:, L - args.answer_tokens :] = ids[:, L - args.answer_tokens :]
    cuda = device == "cuda"
    autocast = torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16)

    def step() -> float:
        with autocast:
            loss = model.loss(feats, ids, mask, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()  # synchronises

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    seq_len = patches + L
    tokens = B * seq_len
    flops = model_flops(config, tokens, seq_len, B * args.answer_tokens, B * patches, connector_params, stage, name)
    seconds = statistics.median(times)
    row = {
        "stage": stage,
        "connector": name,
        "connector_params": connector_params,
        "llm_weights": str(next(llm.parameters()).dtype).removeprefix("torch."),
        "step_seconds_median": round(seconds, 4),
        "step_seconds": [round(t, 4) for t in times],
        "tokens_per_s": round(tokens / seconds, 1),
        "model_flops_per_step": flops,
        "achieved_tflops": round(sum(flops.values()) / seconds / 1e12, 4),
        "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
    }
    return row


def _shown_args(argv: list[str] | None) -> list[str]:
    """The command's arguments without where its files go (--out, --stem)."""
    args, shown = list(argv if argv is not None else sys.argv[1:]), []
    while args:
        a = args.pop(0)
        if a in ("--out", "--stem"):
            args[:1] = []
        elif not a.startswith(("--out=", "--stem=")):
            shown.append(a)
    return shown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--connector",
        "--connectors",
        dest="connectors",
        default="mlp",
        help="connector(s), comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--stage",
        "--stages",
        dest="stages",
        default="full",
        help="connector and/or full, comma-separated, in this order (default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="sequences (images) per step")
    parser.add_argument("--text-tokens", type=int, default=256)
    parser.add_argument("--answer-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after 3 warm-up steps)")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if not in the table")
    parser.add_argument("--smoke", action="store_true", help="tiny preset, 1 step, CPU: a check of the code")
    parser.add_argument("--out", type=Path, help="folder for the JSON and Markdown files (default: results/bench)")
    parser.add_argument("--stem", help="file name without extension")
    args = parser.parse_args(argv)
    connectors = [c for c in args.connectors.split(",") if c]
    stages = [s for s in args.stages.split(",") if s]
    if not connectors or not stages or any(s not in STAGES for s in stages):
        parser.error(
            f"--connector {args.connectors!r} --stage {args.stages!r}: name at least one connector, and "
            f"stages among {', '.join(STAGES)}"
        )
    if args.smoke:
        preset, device, warmup, steps = "smoke", "cpu", 1, 1
        args.batch_size, args.text_tokens, args.answer_tokens = 2, 12, 4
    elif not torch.cuda.is_available():
        print(
            "train_mfu: skipped, CUDA is not available on this machine (MFU is a GPU figure); run it on a GPU, "
            "or with --smoke to check the code on the CPU"
        )
        return 0
    else:
        preset, device, warmup, steps = "llama-1b", "cuda", 3, args.steps

    from alignbench.connector import CONNECTORS
    from alignbench.errors import AlignBenchError

    try:
        for name in connectors:
            CONNECTORS.get(name)
    except AlignBenchError as exc:
        parser.error(str(exc))

    # 1. each stage's LLM, built from the preset's config on the device; 2. each connector on it
    rows, n_params = [], 0
    for stage in stages:
        weights = torch.bfloat16 if stage == "connector" else torch.float32
        backbone = preset_backbone(preset, device, weights)
        n_params = sum(p.numel() for p in backbone.llm.parameters())
        for name in connectors:
            row = measure(backbone, name, stage, args, device, warmup, steps)
            print(
                f"stage {stage}, {name}: {row['step_seconds_median']:.4f} s/step, {row['tokens_per_s']:.0f} tokens/s",
                flush=True,
            )
            rows.append(row)
            gc.collect()  # the connector, its optimizer and gradients, before the next one
            if device == "cuda":
                torch.cuda.empty_cache()
        del backbone
        gc.collect()

    # 3. MFU against the device's peak
    name = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or platform.machine()
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next((p for k, p in PEAKS if k in name), None)
    for row in rows:
        row["mfu"] = round(row["achieved_tflops"] * 1e12 / peak, 4) if peak else None
    B, L, patches = args.batch_size, args.text_tokens, VISION[preset][0]
    result = {
        "preset": preset,
        "llm_params": n_params,
        "batch_size": B,
        "sequence": {"visual": patches, "text": L, "answer": args.answer_tokens},
        "warmup_steps": warmup,
        "timed_steps": steps,
        "peak_tflops": peak / 1e12 if peak else None,
        "rows": rows,
        "machine": {
            "device": name,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "platform": platform.platform(),
        },
        "command": " ".join(["python benchmarks/train_mfu.py", *_shown_args(argv)]),
    }
    print(json.dumps(result, indent=2))
    if args.smoke and args.out is None:
        print("smoke run finished (CPU, tiny preset): nothing written")
        return 0

    def mfu(row: dict) -> str:
        return "n/a (unknown device; pass --peak-tflops)" if row["mfu"] is None else f"{100 * row['mfu']:.1f} %"

    md = [
        "# Training throughput and MFU, ~1B preset\n",
        f"`{result['command']}`\n",
        f"Machine: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}.\n",
        f"Preset {preset} ({n_params / 1e9:.2f} B parameters, random weights from its config), bf16 autocast, "
        f"AdamW; {B} sequences of {patches} visual + {L} text tokens ({args.answer_tokens} answer tokens) per "
        f"step; median of {steps} steps after {warmup} warm-up steps. Peak: "
        f"{f'{peak / 1e12:.1f} TFLOP/s dense bf16' if peak else 'unknown'}.\n",
        "| stage | connector | connector params | LLM weights | step s (median) | tokens/s | achieved TFLOP/s | "
        "MFU | peak memory GB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    md += [
        f"| {r['stage']} | {r['connector']} | {r['connector_params']:,} | {r['llm_weights']} | "
        f"{r['step_seconds_median']:.3f} | {r['tokens_per_s']:.0f} | {r['achieved_tflops']:.1f} | {mfu(r)} | "
        f"{r['peak_memory_gb']} |"
        for r in rows
    ]
    full = [r for r in rows if r["stage"] == "full" and r["mfu"] is not None]
    md += [
        "",
        f"Aim: MFU >= {100 * BAR:.0f} % in stage full: "
        + (", ".join(f"{r['connector']} {'met' if r['mfu'] >= BAR else 'NOT met'}" for r in full) or "n/a")
        + ".",
    ]
    out = args.out or ROOT / "results" / "bench"
    stem = args.stem or "train_mfu_" + "_".join(connectors) + ("" if stages == ["full"] else "_" + "_".join(stages))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
