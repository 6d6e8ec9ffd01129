"""How distinguishable each connector's visual tokens are, at initialisation and after training.

For the evaluation pages of a task, the mean cosine similarity between the output tokens of different
patches of the same page (1 = every patch hands the LLM the same vector). A frozen LLM finds an answer on
a page by content, so tokens that all look alike give it nothing to attend to, and little gradient
towards making them differ.

    python benchmarks/token_diversity.py [--runs results/embedded] [--task docvqa]
        -> results/bench/token_diversity_TASK.json
"""

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from alignbench.config.run import RunConfig
from alignbench.connector import ConnectorContext, build_connector
from alignbench.model.checkpoint import load_trained
from alignbench.model.vlm import VLM
from alignbench.run.outputs import machine
from alignbench.run.workspace import Workspace
from alignbench.task import TASKS

parser = argparse.ArgumentParser()
parser.add_argument("--runs", default="results/embedded")
parser.add_argument("--task", default="docvqa")
parser.add_argument("--pages", type=int, default=32)
args = parser.parse_args()


@torch.no_grad()
def similarity(model, feats) -> float:
    tokens = torch.nn.functional.normalize(model.visual_tokens(feats).float(), dim=-1)  # [B, T, D]
    sim = tokens @ tokens.transpose(1, 2)  # [B, T, T]
    t = sim.shape[-1]
    off_diagonal = sim.sum((1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(-1)
    return (off_diagonal / (t * (t - 1))).mean().item()


runs = Path(args.runs)
board = pd.read_csv(runs / "leaderboard.csv")
board = board[board.task == args.task].drop_duplicates(["connector", "seed"], keep="last")
cfg = RunConfig(task=args.task)
ws = Workspace(cfg.backbone, cfg.data, "cpu", log=lambda *a: None)
task = TASKS.get(args.task)
_, feats = ws.split(task, "eval")
feats = feats[: args.pages]
bb = ws.backbone
rows = []
for _, r in board.iterrows():
    run_dir = runs / "runs" / r.run_id
    trained, config = load_trained(run_dir, bb)
    ctx = ConnectorContext(bb.vision_dim, bb.llm_dim, bb.num_patches, bb.llm)
    fresh = VLM(bb, build_connector(r.connector, ctx, config.get("connector_args", {}), config["train"]["init_seed"]))
    row = {
        "connector": r.connector,
        "run": r.run_id,
        "score": r.score,
        "similarity_at_init": similarity(fresh, feats),
        "similarity_trained": similarity(trained, feats),
    }
    rows.append(row)
    print(
        f"{r.connector:10s} init {row['similarity_at_init']:.3f}  trained {row['similarity_trained']:.3f}  "
        f"score {100 * r.score:.1f}"
    )
out = Path(__file__).resolve().parents[1] / "results" / "bench" / f"token_diversity_{args.task}.json"
out.write_text(
    json.dumps(
        {
            "command": "python benchmarks/token_diversity.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
            "backbone": bb.key,
            "pages": len(feats),
            "rows": rows,
            "machine": machine(),
        },
        indent=2,
    )
    + "\n"
)
print(f"written {out}")
