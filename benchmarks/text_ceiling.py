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

With `--train` (smollm2), the ceiling *after the training the connectors get*: LoRA adapters on the LLM (the
recipe's rank, targets and LLM learning rate) trained on the text form of the training pages in the LLM stage of
the recipe: the same batches, questions per page and steps as a run's last `llm_steps` steps, the connector stage
replaced by a perfect connector (the page's cell tokens themselves), which needs no training. `--seed S` is a study
seed's counterpart (`alignbench sweep --seeds S`): data seed S (the training pages, their order and the evaluation
pages) and LoRA initialisation seed 1234 + S. One file per seed, so that each seed lands on its own:

    python benchmarks/text_ceiling.py --backbone smollm2 --train --seed S
        -> results/bench/text_ceiling_smollm2_trained_sS.json

`--eval-dtype model` generates in the LLM's own precision (bfloat16 for smollm2, how the committed smollm2 study was
scored), `float32` upcasts the LLM first (what `--eval-dtype auto` does on the CPU); the file records which.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from alignbench.backbones import load_backbone
from alignbench.backbones.tiny_pretrain import page_ids
from alignbench.config.backbone import BackboneConfig
from alignbench.config.data import DataConfig
from alignbench.config.train import TrainConfig, connector_stage_sources
from alignbench.data.batches import BatchOrder
from alignbench.data.embedded.dataset import embedded_seed
from alignbench.data.embedded.generators import sample_docs
from alignbench.data.embedded.page import PageSpec
from alignbench.metrics import get_metric, mean_stderr
from alignbench.model import lora as lora
from alignbench.model.vlm import left_pad
from alignbench.prompt import prompt_format, stop_ids
from alignbench.run.outputs import machine
from alignbench.task import TASKS
from alignbench.train.loop import source_of_step, source_seed
from alignbench.train.recipes import RECIPES, recipe_train_tasks
from alignbench.train.schedule import warmup_cosine as lr_factor

parser = argparse.ArgumentParser()
parser.add_argument("--backbone", default="tiny", choices=["tiny", "smollm2"])
parser.add_argument("--n", type=int, default=300, help="evaluation questions per task (one per page)")
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--train", action="store_true", help="train LoRA on the text form first (the recipe's LLM stage)")
parser.add_argument("--seed", type=int, default=0, help="data seed S and LoRA init seed 1234 + S (a study seed)")
parser.add_argument("--eval-dtype", default="model", choices=["model", "float32"], help="precision of generation")
args = parser.parse_args()
if args.n < 1 or args.batch_size < 1 or args.seed < 0:
    parser.error("--n and --batch-size must be at least 1, --seed at least 0")
if args.train and args.backbone not in RECIPES:
    parser.error(f"--train follows a backbone's recipe; backbones with one: {', '.join(RECIPES)}")

backbone = load_backbone(BackboneConfig(args.backbone))
tok, llm = backbone.tokenizer, backbone.llm.eval()
fmt = prompt_format(tok)
stop = sorted(stop_ids(tok, llm))
renderer = backbone.renderer


def text_form(doc) -> list[int]:
    from alignbench.data.embedded.tokens import cell_ids

    return cell_ids(renderer.cells(doc), tok)


def train_lora() -> dict:
    """The recipe's LLM stage on text-form pages; returns what was trained (the LLM is adapted in place)."""
    recipe = RECIPES[args.backbone]
    cfg = TrainConfig(
        stage=recipe["stage"],
        steps=recipe["steps"],
        batch_size=recipe["batch_size"],
        questions_per_page=recipe["questions_per_page"],
        llm_steps=max(1, round(recipe["llm_share"] * recipe["steps"])),
        connector_tasks=recipe.get("connector_tasks"),
        init_seed=TrainConfig.init_seed + args.seed,  # as `alignbench sweep --seeds` seeds a run
    )
    data = DataConfig(seed=args.seed)
    names = recipe_train_tasks(args.backbone, ["docvqa", "infovqa", "chartqa"])
    sources = []
    for i, name in enumerate(names):
        docs = sample_docs(name, data.train_docs, embedded_seed(name, "train", data.seed), PageSpec())
        groups = [
            [(TASKS.get(name).prompt(qa.question), qa.answers[0]) for qa in d.qas[: cfg.questions_per_page]]
            for d in docs
        ]
        sources.append((docs, groups, BatchOrder(len(docs), cfg.batch_size, source_seed(data.seed, i))))
    lora.attach(llm, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets, cfg.init_seed)
    adapters = lora.adapters(llm)
    llm.requires_grad_(False)
    adapters.requires_grad_(True)
    opt = torch.optim.AdamW(adapters.parameters(), lr=cfg.llm_lr, weight_decay=cfg.weight_decay)
    start, losses = cfg.llm_start(), []
    stage_sources = connector_stage_sources(cfg, names)
    llm.train()
    t_train = time.time()
    for step in range(cfg.steps):
        docs, groups, order = sources[source_of_step(step, start, stage_sources, len(sources))]
        idx = order.next()  # every step draws its batch, so the LLM stage sees the steps' own batches
        if step < start:
            continue
        seqs, labels = [], []
        for k in idx:
            text, trained = fmt.sequence(tok, groups[k])
            page = fmt.prefix + text_form(docs[k])
            seqs.append(page + text)
            labels.append([-100] * len(page) + [t if keep else -100 for t, keep in zip(text, trained)])
        width = max(map(len, seqs))
        ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in seqs])
        lab = torch.tensor([lb + [-100] * (width - len(lb)) for lb in labels])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        for g in opt.param_groups:
            g["lr"] = cfg.llm_lr * lr_factor(step - start, cfg.steps - start, max(1, (cfg.steps - start) // 10))
        loss = llm(input_ids=ids, attention_mask=mask, labels=lab).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(adapters.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(round(loss.item(), 4))
    llm.eval()
    return {
        "seed": args.seed,
        "data_seed": data.seed,
        "init_seed": cfg.init_seed,
        "stage": cfg.stage,
        "llm_steps": cfg.steps - start,
        "of_steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "questions_per_page": cfg.questions_per_page,
        "lora_rank": cfg.lora_rank,
        "lora_alpha": cfg.lora_alpha,
        "lora_targets": cfg.lora_targets,
        "llm_lr": cfg.llm_lr,
        "train_tasks": names,
        "first_loss": losses[0],
        "final_loss": losses[-1],
        "train_seconds": round(time.time() - t_train, 1),
    }


def forms(doc, prompt: str) -> dict[str, list[int]]:
    question = fmt.prompt_ids(tok, prompt)
    if renderer is None:
        return {"text form": page_ids(tok, doc.page.text()) + question}
    lines = "\n".join(line.replace("\u2588", " ").rstrip() for line in doc.page.lines() if line.strip("\u2588 "))
    return {
        "text form": fmt.prefix + text_form(doc) + question,
        "ordinary text": fmt.prefix + tok(lines + "\n", add_special_tokens=False)["input_ids"] + question,
    }


@torch.no_grad()
def generate(prompts: list[list[int]], max_new_tokens: int) -> list[str]:
    out = []
    for i in range(0, len(prompts), args.batch_size):
        ids, mask = left_pad(prompts[i : i + args.batch_size], tok.pad_token_id, "cpu")
        gen = llm.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=stop,
        )
        for row in gen[:, ids.shape[1] :].tolist():
            ends = [k for k, t in enumerate(row) if t in stop]
            out.append(tok.decode(row[: ends[0]] if ends else row, skip_special_tokens=True).strip())
    return out


t0 = time.time()
cfg = DataConfig(seed=args.seed)
report = {"trained": train_lora()} if args.train else {}
if args.eval_dtype == "float32":
    llm.float()
eval_dtype = str(next(llm.parameters()).dtype).removeprefix("torch.")
for name in ("docvqa", "infovqa", "chartqa"):
    task = TASKS.get(name)
    # the same pages and questions as the embedded evaluation split (`data._embedded_rows`)
    seed = embedded_seed(name, "eval", cfg.seed)
    docs = sample_docs(name, args.n, seed, PageSpec())
    rng = np.random.default_rng(seed + 1)
    picked = [int(rng.integers(len(doc.qas))) for doc in docs]
    qas = [doc.qas[k] for doc, k in zip(docs, picked)]
    uids = [f"eval-{i}-{k}" for i, k in enumerate(picked)]  # the run's `uid` of the same question (pairing)
    metric = get_metric(task.metric)
    report[name] = {"metric": task.metric}
    for form in forms(docs[0], ""):
        preds = generate([forms(d, task.prompt(qa.question))[form] for d, qa in zip(docs, qas)], task.max_new_tokens)
        scores = [metric(p, qa.answers) for p, qa in zip(preds, qas)]
        m, e, n = mean_stderr(scores)
        contains = mean_stderr([float(any(a.lower() in p.lower() for a in qa.answers)) for p, qa in zip(preds, qas)])
        kinds = sorted({qa.kind for qa in qas})
        per_kind = {k: round(mean_stderr([s for s, qa in zip(scores, qas) if qa.kind == k])[0], 4) for k in kinds}
        report[name][form] = {
            "score": round(m, 4),
            "stderr": round(e, 4),
            "n": n,
            "per_kind": per_kind,
            "contains": round(contains[0], 4),
            "contains_stderr": round(contains[1], 4),
            "examples": [[qa.question, qa.answers[0], p] for qa, p in zip(qas[:5], preds[:5])],
            # one per evaluation page, in page order (`page` pairs them with a run's predictions)
            "questions": [
                {"page": i, "uid": u, "question": qa.question, "prediction": p, "score": s}
                for i, (u, qa, p, s) in enumerate(zip(uids, qas, preds, scores))
            ],
        }
        print(name, form, {k: report[name][form][k] for k in ("score", "stderr", "contains")}, flush=True)
suffix = ("_trained" if args.train else "") + (f"_s{args.seed}" if args.train or args.seed else "")
out = Path(__file__).resolve().parents[1] / "results" / "bench" / f"text_ceiling_{args.backbone}{suffix}.json"
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(
    json.dumps(
        {
            "backbone": backbone.key,
            "command": f"python benchmarks/text_ceiling.py --backbone "
            f"{args.backbone} --n {args.n}{' --train' if args.train else ''} --seed {args.seed} "
            f"--eval-dtype {args.eval_dtype}",
            "seed": args.seed,
            "eval_dtype": eval_dtype,
            "seconds": round(time.time() - t0, 1),
            "machine": machine(),
            **report,
        },
        indent=2,
    )
    + "\n"
)
print(f"-> {out}")
