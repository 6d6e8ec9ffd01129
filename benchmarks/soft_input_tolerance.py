"""How much blending the embedded backbone's frozen LLM tolerates in its inputs.

ALIGN hands the LLM, for every patch, P · E_text: a convex combination of token embeddings. This script
feeds the LLM the *text form* of each evaluation page (the exact characters, as a perfect connector
would) with each page token's embedding replaced by

    alpha · e_token + (1 - alpha) · (P_other · E_text)

where P_other is uniform over the vocabulary ("uniform") or a random peaked distribution ("random"),
i.e. exactly what ALIGN outputs when its softmax puts probability alpha on the right glyph. The score at
each alpha says how peaked ALIGN's distribution must become before the LLM can read a page at all.

    python benchmarks/soft_input_tolerance.py [--task docvqa] [--n 100]
        -> results/bench/soft_input_tolerance_TASK_BACKBONE.json
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from alignbench.backbones.tiny import TinyConfig, load_tiny
from alignbench.backbones.tiny_pretrain import page_ids
from alignbench.config.data import DataConfig
from alignbench.data.embedded.dataset import embedded_seed
from alignbench.data.embedded.generators import sample_docs
from alignbench.metrics import get_metric, mean_stderr
from alignbench.run.outputs import machine
from alignbench.task import TASKS

parser = argparse.ArgumentParser()
parser.add_argument("--task", default="docvqa")
parser.add_argument("--n", type=int, default=100)
parser.add_argument("--alphas", default="1,0.8,0.6,0.5,0.4,0.3,0.2")
args = parser.parse_args()

t0 = time.time()
backbone = load_tiny(log=lambda *a: None)
tok, llm = backbone.tokenizer, backbone.llm.eval()
E = llm.get_input_embeddings().weight.detach()  # [V, D]
V = E.shape[0]
task = TASKS.get(args.task)
cfg = DataConfig()
seed = embedded_seed(args.task, "eval", cfg.seed)  # the embedded evaluation pages
docs = sample_docs(args.task, args.n, seed, TinyConfig().page)
metric = get_metric(task.metric)
rows = []
for mode in ("uniform", "random"):
    for alpha in [float(a) for a in args.alphas.split(",")]:
        rng, gen = np.random.default_rng(seed + 1), torch.Generator().manual_seed(0)
        scores = []
        for doc in docs:
            qa = doc.qas[rng.integers(len(doc.qas))]
            ids = torch.tensor(page_ids(tok, doc.page.text()))
            onehot = torch.nn.functional.one_hot(ids, V).float()
            if mode == "uniform":
                other = torch.full_like(onehot, 1.0 / V)
            else:  # a peaked distribution on random tokens (softmax of logits with std 2)
                other = torch.softmax(2 * torch.randn(onehot.shape, generator=gen), dim=-1)
            page = (alpha * onehot + (1 - alpha) * other) @ E  # [N, D]: what ALIGN would hand the LLM
            prompt = torch.tensor(tok(task.prompt(qa.question), add_special_tokens=False)["input_ids"])
            embeds = torch.cat([page, E[prompt]])[None]
            with torch.no_grad():
                out = llm.generate(
                    inputs_embeds=embeds,
                    attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                    max_new_tokens=task.max_new_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id,
                )
            scores.append(metric(tok.decode(out[0], skip_special_tokens=True).strip(), qa.answers))
        m, e, n = mean_stderr(scores)
        rows.append({"other": mode, "alpha": alpha, "score": round(m, 4), "stderr": round(e, 4), "n": n})
        print(f"{mode:8s} alpha {alpha:.2f}: {100 * m:5.1f} ± {100 * e:.1f}", flush=True)

out = (
    Path(__file__).resolve().parents[1]
    / "results"
    / "bench"
    / (f"soft_input_tolerance_{args.task}_{backbone.key}.json")
)
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(
    json.dumps(
        {
            "command": "python benchmarks/soft_input_tolerance.py "
            + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
            "backbone": backbone.key,
            "task": args.task,
            "metric": task.metric,
            "rows": rows,
            "seconds": round(time.time() - t0, 1),
            "machine": machine(),
        },
        indent=2,
    )
    + "\n"
)
print(f"written {out}")
