"""How much text a visual token must carry on the embedded pages, for each built-in connector's token grid.

The tiny backbone's pages hold one character per cell, one cell per patch, and its LLM reads one character per
token. A connector that emits one token per patch can hand the LLM each character at its own position; a
compressing connector merges several cells into one token, so one input position must stand for several
characters. This script measures that on the evaluation pages of a task: for each connector's merge pattern
(derived from the connector itself: which patches change which token), the characters per page, the
characters per token, the share of tokens that carry two or more characters, and the share of questions whose
answer (found on the page) lies in tokens that each carry one character of it alone.

    python benchmarks/page_information.py [--task docvqa] [--n 300] [--output results/bench]
        -> OUTPUT/page_information_TASK.{json,md}; `alignbench report --runs OUTPUT` includes the table
"""

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from alignbench.backbones import load_backbone
from alignbench.config.backbone import BackboneConfig
from alignbench.connector import CONNECTORS, build_connector
from alignbench.data.embedded.dataset import embedded_seed
from alignbench.data.embedded.generators import sample_docs
from alignbench.io import atomic_write
from alignbench.reporting.tables import markdown_table
from alignbench.run.outputs import machine

parser = argparse.ArgumentParser()
parser.add_argument("--task", default="docvqa", choices=["docvqa", "infovqa", "chartqa"])
parser.add_argument("--n", type=int, default=300, help="evaluation pages")
parser.add_argument("--connectors", default="all")
parser.add_argument("--output", default="results/bench", help="folder for the JSON and Markdown tables")
args = parser.parse_args()
if args.n < 1:
    parser.error("--n must be at least 1")

backbone = load_backbone(BackboneConfig("tiny"))
ctx = backbone.connector_context()
spec = backbone.page
docs = sample_docs(args.task, args.n, embedded_seed(args.task, "eval", 0), spec)
names = CONNECTORS.builtins() if args.connectors == "all" else args.connectors.split(",")


def receptive_fields(name: str) -> list[set[int]]:
    """Which patches each output token depends on, measured: a patch belongs to a token when changing the patch
    changes the token (one patch at a time, on random features)."""
    conn = build_connector(name, ctx).eval()
    torch.manual_seed(0)
    base_feats = torch.randn(1, ctx.num_patches, ctx.vision_dim)
    with torch.no_grad():
        base = conn(base_feats)
        fields: list[set[int]] = [set() for _ in range(base.shape[1])]
        for p in range(ctx.num_patches):
            feats = base_feats.clone()
            feats[0, p] += torch.randn(ctx.vision_dim)
            moved = ((conn(feats) - base).abs().amax(-1)[0] > 1e-6).nonzero().flatten().tolist()
            for t in moved:
                fields[t].add(p)
    return fields


def answer_cells(doc, answer: str) -> list[int] | None:
    """Cells (row-major) of the first occurrence of the answer on the page, or None when it is not written there."""
    for r, line in enumerate(doc.page.grid):
        text = "".join(line)
        c = text.find(answer)
        if c >= 0:
            return [r * spec.cols + c + k for k in range(len(answer))]
    return None


rows = []
for name in names:
    fields = receptive_fields(name)
    chars_per_page, chars_per_token, shared, readable, found = [], [], [], [], 0
    for doc in docs:
        flat = [ch for line in doc.page.grid for ch in line]
        filled = {i for i, ch in enumerate(flat) if ch != " "}
        per_token = [len(f & filled) for f in fields]
        chars_per_page.append(len(filled))
        chars_per_token += [k for k in per_token if k]
        shared.append(np.mean([k >= 2 for k in per_token if k]))
        cells = answer_cells(doc, doc.qas[0].answers[0])
        if cells is None:
            continue
        found += 1
        # readable one character per position: every answer cell is the only filled cell of some token
        readable.append(all(any(f & filled == {c} for f in fields) for c in cells))
    rows.append(
        {
            "connector": name,
            "tokens_page": len(fields),
            "chars_page": float(np.mean(chars_per_page)),
            "chars_token": float(np.mean(chars_per_token)),
            "tokens_2plus": float(np.mean(shared)),
            "answers_readable": float(np.mean(readable)) if readable else float("nan"),
            "answers_found": found,
        }
    )

table = pd.DataFrame(rows)
out = Path(args.output)
out.mkdir(parents=True, exist_ok=True)
command = f"python benchmarks/page_information.py --task {args.task} --n {args.n} --output {args.output}"
atomic_write(
    out / f"page_information_{args.task}.json",
    json.dumps(
        {"command": command, "backbone": backbone.key, "grid": list(ctx.grid), "rows": rows, "machine": machine()},
        indent=2,
    ),
)
shown = table.rename(
    columns={
        "tokens_page": "visual tokens / page",
        "chars_page": "characters / page",
        "chars_token": "characters / token (tokens with any)",
        "tokens_2plus": "share of tokens with ≥ 2 characters",
        "answers_readable": "answers with one token per character",
        "answers_found": "answers found on the page",
    }
)
md = (
    f"Characters per visual token on the embedded {args.task} pages: `{command}` (backbone `{backbone.key}`, "
    f"{ctx.grid[0]} × {ctx.grid[1]} patches, one character per cell; a token's cells measured from the connector)."
    "\n\n" + markdown_table(shown, floatfmt=".3g") + "\n"
)
atomic_write(out / f"page_information_{args.task}.md", md)
print(md)
