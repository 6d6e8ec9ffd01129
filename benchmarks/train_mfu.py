"""Training tokens/s and model FLOPs utilisation (MFU) of a ~1B-parameter preset, on a GPU.

    python benchmarks/train_mfu.py [--connector mlp] [--batch-size 8] [--steps 10] [--peak-tflops X]
        -> results/bench/train_mfu_{connector}.{json,md}
    python benchmarks/train_mfu.py --smoke     a tiny preset for 2 steps on the CPU: checks that the code runs

Without CUDA (and without --smoke) it prints why it does not run and writes nothing.

The preset "llama-1b" is Llama 3.2 1B's configuration, built from a config (no hub; random weights, which
do not change the speed): width 2048, 16 layers, 32 query and 8 key/value heads, MLP 8192, vocabulary
128,256, tied embeddings: 1.24 B parameters. The vision side is the shape of SigLIP-400M/14 at 384 px:
729 patches of width 1152 per image, fed as features (the tower is frozen in every stage, and its features
come from the feature cache), one image (one tile) per sequence.

A step is the project's own: `VLM.loss` (visual tokens prepended to the text, LM-head logits at answer tokens
only), stage `full` (connector and LLM train), fp32 weights with bf16 autocast, AdamW, gradient clipping,
as `alignbench.train` runs it. A sequence is 729 visual tokens + --text-tokens (default 256) text tokens,
the last --answer-tokens (64) of which are answers.

Model FLOPs per step (what the model needs, not what the hardware did; no recomputation):
  LLM weights     6 x (attention + MLP weights) x tokens        (forward 2, backward 4 per weight and token)
  attention       6 x layers x width x L per token, L = sequence length (causal: half of 12 x layers x width x L)
  LM head         6 x width x V x answer tokens                 (logits are computed at answer tokens only)
  connector       6 x its parameters x visual tokens            (mlp; for align, see its passes in align_kernel)
MFU = model FLOPs per second / the GPU's peak dense bf16 FLOP/s (a table of known GPUs, or --peak-tflops).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, max_position_embeddings=4096, tie_word_embeddings=True,
                     rope_theta=500000.0),
    "smoke": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=1000, max_position_embeddings=512, tie_word_embeddings=True),
}
VISION = {"llama-1b": (729, 1152), "smoke": (16, 32)}  # (patches, width) of the vision features
# Dense bf16 peak of known GPUs (vendor data sheets), FLOP/s; matched on the device name, first match wins.
PEAKS = [("H200", 989.4e12), ("H100 PCIe", 756.0e12), ("H100", 989.4e12), ("A100", 312.0e12), ("L40S", 362.1e12)]
BAR = 0.35


def model_flops(config, tokens: int, seq_len: int, answer_tokens: int, visual_tokens: int,
                connector_params: int) -> dict:
    d, layers, heads, kv = config.hidden_size, config.num_hidden_layers, config.num_attention_heads, \
        config.num_key_value_heads
    head_dim = d // heads
    attn_weights = d * heads * head_dim + 2 * d * kv * head_dim + heads * head_dim * d  # q, k, v, o
    mlp_weights = 3 * d * config.intermediate_size
    return {"llm_weights": 6 * layers * (attn_weights + mlp_weights) * tokens,
            "attention": 6 * layers * d * seq_len * tokens,
            "lm_head": 6 * d * config.vocab_size * answer_tokens,
            "connector": 6 * connector_params * visual_tokens}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connector", default="mlp")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences (images) per step")
    parser.add_argument("--text-tokens", type=int, default=256)
    parser.add_argument("--answer-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after 3 warm-up steps)")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if not in the table")
    parser.add_argument("--smoke", action="store_true", help="tiny preset, 2 steps, CPU: a check of the code")
    args = parser.parse_args(argv)
    if args.smoke:
        preset, device, warmup, steps = "smoke", "cpu", 1, 1
        args.batch_size, args.text_tokens, args.answer_tokens = 2, 12, 4
    elif not torch.cuda.is_available():
        print("train_mfu: skipped, CUDA is not available on this machine (MFU is a GPU figure); run it on a GPU, "
              "or with --smoke to check the code on the CPU")
        return 0
    else:
        preset, device, warmup, steps = "llama-1b", "cuda", 3, args.steps

    from transformers import LlamaConfig, LlamaForCausalLM

    from alignbench.backbone import Backbone
    from alignbench.connector import CONNECTORS, ConnectorContext, build_connector
    from alignbench.model import VLM
    from alignbench.tiny import make_tokenizer

    # 1. the preset, built from its config on the device
    config = LlamaConfig(**PRESETS[preset], pad_token_id=0, eos_token_id=1, bos_token_id=None)
    torch.manual_seed(0)
    with torch.device(device):
        llm = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in llm.parameters())
    patches, width = VISION[preset]
    # The embedded character tokenizer: no prompt prefix before the visual tokens (the batch's ids are random).
    backbone = Backbone(vision=torch.nn.Identity(), llm=llm, tokenizer=make_tokenizer(), image_transform=None,
                        key=f"preset-{preset}", info={"vision_dim": width, "num_patches": patches})
    ctx = ConnectorContext(width, config.hidden_size, patches, llm)
    connector = build_connector(args.connector, ctx, {}, 1234).to(device)
    model = VLM(backbone, connector)
    model.llm.train()
    model.connector.train()
    params = [p for p in model.parameters() if p.requires_grad]
    connector_params = sum(p.numel() for p in connector.parameters())
    opt = torch.optim.AdamW([{"params": list(connector.parameters()), "lr": CONNECTORS.get(args.connector).default_lr},
                             {"params": list(llm.parameters()), "lr": 1e-5}])

    # 2. a fixed batch: features, text ids, answer labels on the last answer_tokens positions
    gen = torch.Generator(device=device).manual_seed(0)
    B, L = args.batch_size, args.text_tokens
    feats = torch.randn(B, patches, width, device=device, generator=gen)
    ids = torch.randint(3, config.vocab_size, (B, L), device=device, generator=gen)
    mask = torch.ones(B, L, dtype=torch.long, device=device)
    labels = torch.full((B, L), -100, dtype=torch.long, device=device)
    labels[:, L - args.answer_tokens :] = ids[:, L - args.answer_tokens :]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu",
                                                                                                  enabled=False)

    def step() -> float:
        with autocast:
            loss = model.loss(feats, ids, mask, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()  # synchronises

    # 3. warm-up, then timed steps
    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    seq_len = patches + L
    tokens = B * seq_len
    flops = model_flops(config, tokens, seq_len, B * args.answer_tokens, B * patches, connector_params)
    per_step = sum(flops.values())
    seconds = statistics.median(times)
    name = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or platform.machine()
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next((p for k, p in PEAKS if k in name), None)
    result = {"preset": preset, "llm_params": n_params, "connector": args.connector,
              "connector_params": connector_params, "batch_size": B, "sequence": {"visual": patches, "text": L,
                                                                                  "answer": args.answer_tokens},
              "step_seconds_median": round(seconds, 4), "step_seconds": [round(t, 4) for t in times],
              "tokens_per_s": round(tokens / seconds, 1), "model_flops_per_step": flops,
              "achieved_tflops": round(per_step / seconds / 1e12, 2),
              "peak_tflops": peak / 1e12 if peak else None,
              "mfu": round(per_step / seconds / peak, 4) if peak else None,
              "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
              "machine": {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
                          "platform": platform.platform()},
              "command": "python benchmarks/train_mfu.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    print(json.dumps(result, indent=2))
    if args.smoke:
        print("smoke run finished (CPU, tiny preset): nothing written")
        return 0
    mfu = "n/a (unknown GPU; pass --peak-tflops)" if result["mfu"] is None else f"{100 * result['mfu']:.1f} %"
    md = ["# Training throughput and MFU, ~1B preset\n", f"`{result['command']}`\n",
          f"Machine: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}.\n",
          f"Preset {preset} ({n_params / 1e9:.2f} B parameters), connector {args.connector} ({connector_params:,} "
          f"parameters), stage full, bf16 autocast, AdamW; {B} sequences of {patches} visual + {L} text tokens "
          f"({args.answer_tokens} answer tokens) per step.\n",
          "| step s (median) | tokens/s | achieved TFLOP/s | peak TFLOP/s | MFU | peak memory GB |",
          "|---|---|---|---|---|---|",
          f"| {seconds:.3f} | {result['tokens_per_s']:.0f} | {result['achieved_tflops']:.1f} | "
          f"{result['peak_tflops'] or 'n/a'} | {mfu} | {result['peak_memory_gb']} |", "",
          f"Aim: MFU >= {100 * BAR:.0f} %: " + ("n/a" if result["mfu"] is None else
                                                  "met" if result["mfu"] >= BAR else "NOT met") + "."]
    out = ROOT / "results" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"train_mfu_{args.connector}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"train_mfu_{args.connector}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
