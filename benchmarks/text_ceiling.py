"""Ceiling of the embedded backbone: the language model reading the *text form* of each evaluation
page (the exact characters, as if a connector were perfect), scored with each task's metric.

    python benchmarks/text_ceiling.py [--n 300]      -> results/bench/text_ceiling_BACKBONE.json
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from alignbench.data import SPLIT_OFFSET, DataConfig
from alignbench.embedded import sample_docs
from alignbench.metrics import get_metric, mean_stderr
from alignbench.task import TASKS
from alignbench.tiny import TinyConfig, load_tiny, page_ids

parser = argparse.ArgumentParser()
parser.add_argument("--n", type=int, default=300)
args = parser.parse_args()

backbone = load_tiny()
tok, llm = backbone.tokenizer, backbone.llm.eval()
cfg = DataConfig()
report = {}
for name in ("docvqa", "infovqa", "chartqa"):
    task = TASKS.get(name)
    # the same pages and questions as the embedded evaluation split
    seed = cfg.seed * 100003 + SPLIT_OFFSET["eval"] + sum(map(ord, name))
    docs = sample_docs(name, args.n, seed, TinyConfig().page)
    rng = np.random.default_rng(seed + 1)
    metric, scores, kinds = get_metric(task.metric), [], []
    for doc in docs:
        qa = doc.qas[rng.integers(len(doc.qas))]
        ids = page_ids(tok, doc.page.text()) + tok(task.prompt(qa.question), add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = llm.generate(torch.tensor([ids]), max_new_tokens=task.max_new_tokens, do_sample=False,
                               pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        pred = tok.decode(out[0, len(ids):], skip_special_tokens=True).strip()
        scores.append(metric(pred, qa.answers))
        kinds.append(qa.kind)
    m, e, n = mean_stderr(scores)
    per_kind = {k: round(mean_stderr([s for s, kk in zip(scores, kinds) if kk == k])[0], 4) for k in sorted(set(kinds))}
    report[name] = {"metric": task.metric, "score": round(m, 4), "stderr": round(e, 4), "n": n, "per_kind": per_kind}
    print(name, report[name])
out = Path(__file__).resolve().parents[1] / "results" / "bench" / f"text_ceiling_{backbone.key}.json"
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps({"backbone": backbone.key, "command": "python benchmarks/text_ceiling.py", **report},
                          indent=2) + "\n")
