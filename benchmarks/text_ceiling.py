"""Ceiling of an embedded backbone: the language model reading the *text form* of each evaluation page (what a
perfect connector would hand it), scored with each task's metric on the embedded evaluation questions.

- `tiny`: the page's characters, one per cell.
Besides the task's metric, `contains` counts a prediction right when a gold answer appears in it (case ignored):
a small chat LLM answers zero-shot in sentences ("The QTY of RICE is 359"), which ANLS scores near 0 although
the page was read.

- `smollm2`: the token page's cells, one token id per cell (blank = the space token), inside the chat prompt the
  runs use (`alignbench.prompt`); for comparison also the page's text tokenised normally (lines joined by
  newlines), the form the LLM was pretrained on.

    python benchmarks/text_ceiling.py [--backbone tiny|smollm2] [--n 300]
        -> results/bench/text_ceiling_BACKBONE.json
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from alignbench.backbone import BackboneConfig, load_backbone
from alignbench.data import DataConfig, embedded_seed
from alignbench.embedded import PageSpec, sample_docs
from alignbench.metrics import get_metric, mean_stderr
from alignbench.model import left_pad
from alignbench.prompt import prompt_format, stop_ids
from alignbench.results import machine
from alignbench.task import TASKS
from alignbench.tiny import page_ids

parser = argparse.ArgumentParser()
parser.add_argument("--backbone", default="tiny", choices=["tiny", "smollm2"])
parser.add_argument("--n", type=int, default=300, help="evaluation questions per task (one per page)")
parser.add_argument("--batch-size", type=int, default=32)
args = parser.parse_args()
if args.n < 1 or args.batch_size < 1:
    parser.error("--n and --batch-size must be at least 1")

backbone = load_backbone(BackboneConfig(args.backbone))
tok, llm = backbone.tokenizer, backbone.llm.eval()
fmt = prompt_format(tok)
stop = sorted(stop_ids(tok, llm))
renderer = backbone.info.get("renderer")


def forms(doc, prompt: str) -> dict[str, list[int]]:
    question = fmt.prompt_ids(tok, prompt)
    if renderer is None:
        return {"text form": page_ids(tok, doc.page.text()) + question}
    from alignbench.embedded.tokens import cell_ids

    lines = "\n".join(line.replace("\u2588", " ").rstrip() for line in doc.page.lines() if line.strip("\u2588 "))
    return {"text form": fmt.prefix + cell_ids(renderer.cells(doc), tok) + question,
            "ordinary text": fmt.prefix + tok(lines + "\n", add_special_tokens=False)["input_ids"] + question}


@torch.no_grad()
def generate(prompts: list[list[int]], max_new_tokens: int) -> list[str]:
    out = []
    for i in range(0, len(prompts), args.batch_size):
        ids, mask = left_pad(prompts[i : i + args.batch_size], tok.pad_token_id, "cpu")
        gen = llm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                           pad_token_id=tok.pad_token_id, eos_token_id=stop)
        for row in gen[:, ids.shape[1]:].tolist():
            ends = [k for k, t in enumerate(row) if t in stop]
            out.append(tok.decode(row[: ends[0]] if ends else row, skip_special_tokens=True).strip())
    return out


t0 = time.time()
cfg = DataConfig()
report = {}
for name in ("docvqa", "infovqa", "chartqa"):
    task = TASKS.get(name)
    # the same pages and questions as the embedded evaluation split (`data._embedded_rows`)
    seed = embedded_seed(name, "eval", cfg.seed)
    docs = sample_docs(name, args.n, seed, PageSpec())
    rng = np.random.default_rng(seed + 1)
    qas = [doc.qas[rng.integers(len(doc.qas))] for doc in docs]
    metric = get_metric(task.metric)
    report[name] = {"metric": task.metric}
    for form in forms(docs[0], ""):
        preds = generate([forms(d, task.prompt(qa.question))[form] for d, qa in zip(docs, qas)], task.max_new_tokens)
        scores = [metric(p, qa.answers) for p, qa in zip(preds, qas)]
        m, e, n = mean_stderr(scores)
        contains = mean_stderr([float(any(a.lower() in p.lower() for a in qa.answers)) for p, qa in zip(preds, qas)])
        kinds = sorted({qa.kind for qa in qas})
        per_kind = {k: round(mean_stderr([s for s, qa in zip(scores, qas) if qa.kind == k])[0], 4) for k in kinds}
        report[name][form] = {"score": round(m, 4), "stderr": round(e, 4), "n": n, "per_kind": per_kind,
                              "contains": round(contains[0], 4), "contains_stderr": round(contains[1], 4),
                              "examples": [[qa.question, qa.answers[0], p] for qa, p in zip(qas[:5], preds[:5])]}
        print(name, form, {k: report[name][form][k] for k in ("score", "stderr", "contains")}, flush=True)
out = Path(__file__).resolve().parents[1] / "results" / "bench" / f"text_ceiling_{args.backbone}.json"
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps({"backbone": backbone.key, "command": f"python benchmarks/text_ceiling.py --backbone "
                           f"{args.backbone} --n {args.n}", "seconds": round(time.time() - t0, 1),
                           "machine": machine(), **report}, indent=2) + "\n")
print(f"-> {out}")
