"""Does the frozen LLM's gradient tell a connector which token each cell shows? Measured at initialisation.

On the smollm2 backbone's transcription pages (the connector stage's data), one batch goes through the VLM exactly as
training builds it (`alignbench.data.batches.collate`), and the loss's gradient g_i at every visual token i is read
back.
ALIGN's logit for token v at cell i moves, to first order, by p_v * (e_v - out_i) . (-g_i) (Eq. 1-2: the gradient
through the softmax and P . E): with a nearly flat p, the order in which the vocabulary's logits rise is the order
of (e_v - out_i) . (-g_i). This script ranks the cell's own token t_i in that order, among all V tokens, and reports
the share of ink cells where it is first / in the top 10 / top 1 %, the median rank (chance: V / 2), and the mean
probability p_{t_i} (chance: 1 / V). A connector that may output any vector (MLP) follows -g_i itself; ALIGN can only
move towards rows of E, so whether -g_i points at e_{t_i} is what its connector stage can learn from.

    python benchmarks/gradient_signal.py [--connector align] [--pages 16] [--connector-arg ln2_gain_init=1]
        [--out results/bench/gradient_signal_smollm2]
"""

import argparse
import json
import time
from pathlib import Path

import torch

from alignbench.config.backbone import BackboneConfig
from alignbench.config.data import DataConfig
from alignbench.connector import build_connector
from alignbench.data.batches import collate, pages
from alignbench.model.vlm import VLM
from alignbench.probes.vocab import _page_cell_ids
from alignbench.run.outputs import machine
from alignbench.run.workspace import Workspace, quiet_libraries
from alignbench.task import TASKS

parser = argparse.ArgumentParser()
parser.add_argument("--connector", default="align")
parser.add_argument("--connector-arg", action="append", default=[], help="OPTION=VALUE, as alignbench run takes it")
parser.add_argument("--pages", type=int, default=16)
parser.add_argument("--init-seed", type=int, default=1234)
parser.add_argument(
    "--toward-token",
    default="0,0.25,0.5,0.75,1",
    help="ALPHAS, comma-separated: the LLM receives ALPHA * e_t + (1 - ALPHA) * the connector's output at "
    "every cell (0: the connector alone; 1: the page's own tokens, the text-form ceiling's input); "
    "the same with a random token of the page's vocabulary in place of e_t is the control",
)
DEFAULT_OUT = "results/bench/gradient_signal_smollm2"
parser.add_argument("--out", default=DEFAULT_OUT)
args = parser.parse_args()
quiet_libraries()
torch.manual_seed(0)

t0 = time.time()
ws = Workspace(BackboneConfig(name="smollm2"), DataConfig(eval_questions=args.pages), "cpu", log=lambda *a: None)
task = TASKS.get("transcribe")
split, feats = ws.split(task, "eval")
tok = ws.backbone.tokenizer
cells = _page_cell_ids(ws, task.name, split, tok)
if cells is None:
    raise SystemExit("the transcription pages could not be regenerated to read their cells' tokens")
ids_per_page, blank = cells
connector_args = dict(a.split("=", 1) for a in args.connector_arg)
connector = build_connector(args.connector, ws.backbone.connector_context(), connector_args, init_seed=args.init_seed)
model = VLM(ws.backbone, connector)
model.llm.requires_grad_(False)

groups = pages(split, 1)[: args.pages]
chosen = [[split.samples[i] for i in g] for g in groups]
images = [page[0].image for page in chosen]
ids, mask, labels = collate(tok, task, chosen)
cell_ids = torch.tensor([ids_per_page[i] for i in images])  # [B, N]: the token each cell shows
V = model.llm.get_input_embeddings().weight.shape[0]
ink = cell_ids != blank
page_vocab = cell_ids[ink].unique()
gen = torch.Generator().manual_seed(0)
random_ids = torch.where(ink, page_vocab[torch.randint(len(page_vocab), cell_ids.shape, generator=gen)], cell_ids)


def measure(alpha: float, target: torch.Tensor) -> dict:
    """The loss with every cell moved `alpha` of the way to the embedding of `target`'s token, and where the cell's own
    token ranks among all V under the first-order score (e_v - out) . (-g) at that point."""
    captured = {}

    def hook(module, inputs, output):  # what the LLM receives in place of the connector's output
        emb = model.llm.get_input_embeddings().weight.detach()
        output = alpha * emb[target].to(output.dtype) + (1 - alpha) * output if alpha else output
        output.retain_grad()
        captured["out"] = output
        return output

    handle = connector.register_forward_hook(hook)
    try:
        loss = model.loss(feats[images].float(), ids, mask, labels)
        loss.backward()
    finally:
        handle.remove()
    connector.zero_grad(set_to_none=True)
    out, grad = captured["out"].detach().float(), captured["out"].grad.float()  # [B, N, D]
    emb = model.llm.get_input_embeddings().weight.detach().float()  # [V, D]
    ranks = []
    with torch.no_grad():
        for b in range(len(images)):  # [N, V] at a time, never all pages at once
            score = -(grad[b] @ emb.T) + (grad[b] * out[b]).sum(-1, keepdim=True)
            own = score.gather(-1, cell_ids[b].unsqueeze(-1))
            ranks.append((score > own).sum(-1)[ink[b]])
    rank = torch.cat(ranks).float()
    return {
        "loss": round(loss.item(), 4),
        "own_token_first": round((rank == 0).float().mean().item(), 4),
        "own_token_top1pct": round((rank < V / 100).float().mean().item(), 4),
        "median_rank": int(rank.median().item()),
    }


rows = []
for alpha in [float(a) for a in args.toward_token.split(",")]:
    own, control = measure(alpha, cell_ids), measure(alpha, random_ids)
    row = {"toward_token": alpha, **own, "loss_toward_random_token": control["loss"]}
    rows.append(row)
    print(json.dumps(row), flush=True)
command = (
    "python benchmarks/gradient_signal.py"
    + (f" --connector {args.connector}" if args.connector != "align" else "")
    + "".join(f" --connector-arg {a}" for a in args.connector_arg)
    + f" --pages {args.pages}"
    + (f" --toward-token {args.toward_token}" if args.toward_token != parser.get_default("toward_token") else "")
    + (f" --out {args.out}" if args.out != DEFAULT_OUT else "")
)
info = {
    "connector": args.connector,
    "connector_args": connector_args,
    "pages": len(images),
    "ink_cells": int(ink.sum()),
    "vocabulary": V,
    "chance_median_rank": V // 2,
    "seconds": round(time.time() - t0, 1),
}
out_path = Path(args.out)
out_path.parent.mkdir(parents=True, exist_ok=True)
out_path.with_suffix(".json").write_text(
    json.dumps({"command": command, "machine": machine(), **info, "rows": rows}, indent=2)
)
lines = [
    "| α towards the cell's token | transcription loss | own token first | own token in top 1 % | median rank "
    f"(chance {V // 2:,}) | loss, α towards a random page token |",
    "|---|---|---|---|---|---|",
]
lines += [
    f"| {r['toward_token']:g} | {r['loss']:.2f} | {100 * r['own_token_first']:.1f} % | "
    f"{100 * r['own_token_top1pct']:.1f} % | {r['median_rank']:,} | {r['loss_toward_random_token']:.2f} |"
    for r in rows
]
out_path.with_suffix(".md").write_text(
    f"`{command}` ({info['pages']} pages, {info['ink_cells']} ink cells, "
    f"{args.connector} at initialisation)\n\n" + "\n".join(lines) + "\n"
)
print("\n".join(lines))
