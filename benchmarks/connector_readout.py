"""How fast each connector can learn to hand the frozen LLM a page it reads, given a teacher.

The embedded pages know the character in every cell, so a connector can be trained *directly* to emit, for
each visual token, the LLM's input embedding of the character it should stand for: token i of a
connector with one token per patch stands for cell i; a connector with T < N tokens (the Perceiver
resampler) stands for the first T cells in reading order, the best a frozen LLM reading a page in reading
order can get from T tokens. Every connector gets the same objective (mean squared error to those
embeddings), the same pages, steps, batch size and learning rate. This is a diagnostic, not a way to train
for the benchmark: it separates "the connector cannot learn this mapping in the budget" from "the LLM's
answer loss gives it too little signal".

Reported per connector, after training: the share of ink cells whose token's nearest text embedding
(cosine) is the right character, and the DocVQA-like score of the frozen LLM reading those tokens.

    python benchmarks/connector_readout.py [--connectors mlp,perceiver,ovis,align] [--steps 300]
        -> results/bench/connector_readout.{json,md}
"""

import argparse
import json
import time
from pathlib import Path

import torch

from alignbench.backbones.tiny_pretrain import page_ids
from alignbench.config.eval import EvalConfig
from alignbench.config.run import RunConfig
from alignbench.connector import ConnectorContext, build_connector
from alignbench.data.embedded.generators import sample_docs
from alignbench.data.embedded.page import render
from alignbench.data.splits import Split
from alignbench.evaluate import evaluate
from alignbench.model.vlm import VLM
from alignbench.run.outputs import machine
from alignbench.run.workspace import Workspace, quiet_libraries
from alignbench.task import TASKS

parser = argparse.ArgumentParser()
parser.add_argument("--connectors", default="mlp,perceiver,ovis,align")
parser.add_argument("--task", default="docvqa")
parser.add_argument("--steps", type=int, default=300)
parser.add_argument("--batch-size", type=int, default=16)
parser.add_argument("--lr", type=float, default=3e-3)
parser.add_argument("--pages", type=int, default=400, help="teacher pages (generated apart from every split)")
parser.add_argument("--eval-questions", type=int, default=150)
parser.add_argument("--connector-arg", action="append", default=[], help="CONNECTOR.OPTION=VALUE")
parser.add_argument("--threads", type=int, default=1)
DEFAULT_OUT = "results/bench/connector_readout"
parser.add_argument("--out", default=DEFAULT_OUT)
args = parser.parse_args()
torch.set_num_threads(args.threads)
quiet_libraries()

cfg = RunConfig(task=args.task)
ws = Workspace(cfg.backbone, cfg.data, "cpu", log=lambda *a: None)
bb = ws.backbone
task = TASKS.get(args.task)
space = bb.tokenizer.convert_tokens_to_ids(" ")
embeddings = bb.llm.get_input_embeddings().weight.detach()  # [V, D]


def teacher(seed: int, n: int):
    """Vision features and the character id of every cell, for n freshly generated pages."""
    docs = sample_docs(args.task, n, seed)
    feats = bb.encode_images([render(d.page) for d in docs])  # [n, N, d]
    return feats, torch.tensor([page_ids(bb.tokenizer, d.page.text()) for d in docs])  # [n, N]


@torch.no_grad()
def cell_accuracy(connector, feats, labels) -> float:
    tokens = connector(feats)  # [n, T, D]
    labels = labels[:, : tokens.shape[1]]
    nearest = (
        torch.nn.functional.normalize(tokens, dim=-1) @ torch.nn.functional.normalize(embeddings, dim=-1).T
    ).argmax(-1)  # [n, T]
    ink = labels != space
    return (nearest == labels)[ink].float().mean().item()


train_feats, train_labels = teacher(seed=31337, n=args.pages)
test_feats, test_labels = teacher(seed=4242, n=64)
eval_split, eval_feats = ws.split(task, "eval")
eval_split = Split(eval_split.images, eval_split.samples[: args.eval_questions])
overrides: dict[str, dict[str, str]] = {}
for item in args.connector_arg:
    name, _, kv = item.partition(".")
    key, _, value = kv.partition("=")
    overrides.setdefault(name, {})[key] = value

rows = []
for name in args.connectors.split(","):
    ctx = ConnectorContext(bb.vision_dim, bb.llm_dim, bb.num_patches, bb.llm)
    connector = build_connector(name, ctx, overrides.get(name, {}), 1234)
    opt = torch.optim.AdamW(connector.param_groups(args.lr))
    gen = torch.Generator().manual_seed(0)
    t0 = time.time()
    for _ in range(args.steps):
        idx = torch.randint(len(train_feats), (args.batch_size,), generator=gen)
        tokens = connector(train_feats[idx])  # [B, T, D]
        target = embeddings[train_labels[idx][:, : tokens.shape[1]]]  # [B, T, D]
        loss = ((tokens - target) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    connector.eval()
    model = VLM(bb, connector)
    result, _ = evaluate(model, task, eval_split, eval_feats, EvalConfig(), "cpu")
    row = {
        "connector": name,
        "options": overrides.get(name, {}),
        "tokens": connector.num_tokens(bb.num_patches),
        "final_loss": round(loss.item(), 4),
        "cell_accuracy": round(cell_accuracy(connector, test_feats, test_labels), 4),
        "score": round(result["score"], 4),
        "stderr": round(result["stderr"], 4),
        "n": result["n"],
        "blind": round(result["blind"]["score"], 4),
        "seconds": round(time.time() - t0, 1),
    }
    rows.append(row)
    print(json.dumps(row))

out = Path(args.out)
out.parent.mkdir(parents=True, exist_ok=True)
command = "python benchmarks/connector_readout.py " + " ".join(
    [f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "connector_arg")]
    + [f"--connector-arg {a}" for a in args.connector_arg]
    + ([f"--out {args.out}"] if args.out != DEFAULT_OUT else [])
)
out.with_suffix(".json").write_text(
    json.dumps(
        {
            "what": "connectors trained directly towards the LLM embedding of each cell's character (a teacher), "
            f"{args.steps} steps of {args.batch_size} pages, lr {args.lr}; cell accuracy on 64 held-out pages, "
            f"then the frozen LLM's {args.task} score reading those tokens",
            "command": command,
            "backbone": bb.key,
            "machine": machine(),
            "rows": rows,
        },
        indent=2,
    )
)
lines = ["| connector | tokens | ink cells read right | score (points) | blind |", "|---|---|---|---|---|"]
lines += [
    f"| {r['connector']} | {r['tokens']} | {100 * r['cell_accuracy']:.1f} % | "
    f"{100 * r['score']:.1f} ± {100 * r['stderr']:.1f} | {100 * r['blind']:.1f} |"
    for r in rows
]
out.with_suffix(".md").write_text(f"`{command}`\n\n" + "\n".join(lines) + "\n")
print("\n".join(lines))
