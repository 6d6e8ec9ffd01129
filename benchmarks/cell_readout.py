"""Do trained connectors hand the LLM the tokens on the page?

Read every visual token back as its nearest text embedding.

For each trained run given (any connector that makes one visual token per patch: on the embedded pages, token i
stands for cell i), the connector's output for every cell of the run's evaluation pages is compared with the LLM's
input embedding table E: the share of ink cells whose nearest row of E (cosine) is the cell's own token, the same on
blank cells, the mean cosine between a cell's visual token and its token's embedding, and the mean norm of the
visual tokens against E's mean row norm. A connector can pass a page on without landing on E's rows (the LLM's
first layers may read other directions), so a low share is not proof of a blind connector; a high one is proof of
a reading one. Connectors with fewer tokens than patches are listed with their token count and no per-cell figure.

    python benchmarks/cell_readout.py RUN_DIR [RUN_DIR ...] [--docs 64] [--out results/bench/cell_readout_smollm2]
"""

import argparse
import json
import time
from pathlib import Path

import torch

from alignbench.config.backbone import BackboneConfig
from alignbench.config.data import DataConfig
from alignbench.model.checkpoint import load_trained
from alignbench.probes.vocab import _page_cell_ids
from alignbench.run.outputs import machine
from alignbench.run.workspace import Workspace, quiet_libraries
from alignbench.task import TASKS

parser = argparse.ArgumentParser()
parser.add_argument("runs", nargs="+", type=Path)
parser.add_argument("--docs", type=int, default=64)
DEFAULT_OUT = "results/bench/cell_readout_smollm2"
parser.add_argument("--out", default=DEFAULT_OUT)
args = parser.parse_args()
quiet_libraries()

rows, workspaces = [], {}
for run in args.runs:
    config = json.loads((run / "config.json").read_text())
    key = json.dumps([config["backbone"], config["data"]], sort_keys=True)
    if key not in workspaces:
        workspaces[key] = Workspace(
            BackboneConfig(**config["backbone"]), DataConfig(**config["data"]), "cpu", log=lambda *a: None
        )
    ws = workspaces[key]
    t0 = time.time()
    model, config = load_trained(run, ws.backbone, "cpu")
    task = TASKS.get(config["task"])
    split, feats = ws.split(task, "eval")
    n = min(args.docs, len(split.images))
    tok = ws.backbone.tokenizer
    emb = model.llm.get_input_embeddings().weight.detach().float()  # [V, D]
    row = {
        "run": run.name,
        "connector": config["connector"],
        "task": task.name,
        "tokens": model.connector.num_tokens(ws.backbone.num_patches),
        "patches": ws.backbone.num_patches,
    }
    cells = _page_cell_ids(ws, task.name, split, tok)
    if cells is None or row["tokens"] != row["patches"]:
        rows.append(row)
        print(json.dumps(row))
        continue
    ids = torch.tensor(cells[0][:n])  # [n, N]
    blank = cells[1]
    with torch.no_grad():
        vis = torch.cat(
            [model.connector(feats[i : min(i + 16, n)].to(torch.float32)).float() for i in range(0, n, 16)]
        )  # [n, N, D]
    unit = torch.nn.functional.normalize(emb, dim=-1)
    cos = torch.nn.functional.normalize(vis, dim=-1) @ unit.T  # [n, N, V]
    nearest = cos.argmax(-1)
    own = cos.gather(-1, ids.unsqueeze(-1)).squeeze(-1)  # [n, N]
    ink = ids != blank
    row.update(
        {
            "ink_cells": int(ink.sum()),
            "ink_nearest_is_cell_token": round((nearest == ids)[ink].float().mean().item(), 4),
            "blank_nearest_is_blank": round((nearest == ids)[~ink].float().mean().item(), 4),
            "ink_cosine_to_cell_token": round(own[ink].mean().item(), 4),
            "ink_distinct_nearest": int(nearest[ink].unique().numel()),
            "ink_distinct_cell_tokens": int(ids[ink].unique().numel()),
            "visual_norm": round(vis.norm(dim=-1).mean().item(), 3),
            "embedding_norm": round(emb.norm(dim=-1).mean().item(), 3),
            "seconds": round(time.time() - t0, 1),
        }
    )
    rows.append(row)
    print(json.dumps(row))

out = Path(args.out)
out.parent.mkdir(parents=True, exist_ok=True)
command = (
    "python benchmarks/cell_readout.py "
    + " ".join(str(r) for r in args.runs)
    + f" --docs {args.docs}"
    + (f" --out {args.out}" if args.out != DEFAULT_OUT else "")
)
out.with_suffix(".json").write_text(json.dumps({"command": command, "machine": machine(), "rows": rows}, indent=2))
lines = [
    "| run | connector | ink cells read as their token | blank cells as blank | cosine to the cell's token | "
    "distinct nearest / distinct on page | visual norm / E norm |",
    "|---|---|---|---|---|---|---|",
]
for r in rows:
    if "ink_cells" not in r:
        lines.append(f"| {r['run']} | {r['connector']} | ({r['tokens']} tokens for {r['patches']} cells) | | | | |")
        continue
    lines.append(
        f"| {r['run']} | {r['connector']} | {100 * r['ink_nearest_is_cell_token']:.1f} % | "
        f"{100 * r['blank_nearest_is_blank']:.1f} % | {r['ink_cosine_to_cell_token']:.2f} | "
        f"{r['ink_distinct_nearest']} / {r['ink_distinct_cell_tokens']} | {r['visual_norm']:.2f} / "
        f"{r['embedding_norm']:.2f} |"
    )
out.with_suffix(".md").write_text(f"`{command}`\n\n" + "\n".join(lines) + "\n")
print("\n".join(lines))
