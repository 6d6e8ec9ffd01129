"""Task data: embedded sets (generated from a seed, cached on disk) in the real datasets' schema,
turned into model-ready samples. Images are de-duplicated by content before the vision tower runs
(many questions share one page).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .embedded import SCHEMAS, PageSpec, render, sample_docs, to_row
from .errors import AlignBenchError
from .task import Task

# Seeds of the embedded splits are offset so train and evaluation pages never share a stream.
SPLIT_OFFSET = {"train": 0, "eval": 7919, "val": 15401}  # "val": for learning-rate search


@dataclass
class DataConfig:
    source: str = "embedded"
    train_docs: int = 1200  # pages in the embedded train split (each carries several questions)
    eval_questions: int = 300  # questions in the embedded evaluation split
    seed: int = 0  # data seed: which pages are generated and the order of training batches
    eval_limit: int | None = None  # evaluate on the first N questions only
    eval_split: str = "eval"  # "val" scores a held-out validation split instead (learning-rate search)


@dataclass
class Sample:
    image: int  # index into the split's unique images
    question: str
    answers: list[str]
    split: str | None  # value of the task's split field (ChartQA: human/augmented)
    uid: str


@dataclass
class Split:
    images: list  # unique PIL images
    samples: list[Sample]


def _embedded_rows(task: str, split: str, cfg: DataConfig, spec: PageSpec) -> list[dict]:
    seed = cfg.seed * 100003 + SPLIT_OFFSET[split] + sum(map(ord, task))
    n_docs = cfg.train_docs if split == "train" else cfg.eval_questions  # eval: one question per page
    docs = sample_docs(task, n_docs, seed, spec)
    rng = np.random.default_rng(seed + 1)
    rows = []
    for doc_id, doc in enumerate(docs):
        image = render(doc.page)
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        qas = list(enumerate(doc.qas)) if split == "train" else [list(enumerate(doc.qas))[rng.integers(len(doc.qas))]]
        for qi, qa in qas:
            rows.append(to_row(task, split, doc_id, qi, doc, qa, {"bytes": buf.getvalue(), "path": None}))
    return rows


def embedded_dataset(task: str, split: str, cfg: DataConfig, spec: PageSpec, cache: Path):
    """A `datasets.Dataset` in the real schema, generated once and cached under a content key."""
    import datasets

    n_docs = cfg.train_docs if split == "train" else cfg.eval_questions
    key = hashlib.sha256(json.dumps([task, split, n_docs, cfg.seed, asdict(spec), "embedded-v1"],
                                    sort_keys=True).encode()).hexdigest()[:16]
    path = cache / "data" / f"{task}-{split}-{key}"
    if (path / "dataset_info.json").exists():
        return datasets.load_from_disk(str(path))
    rows = _embedded_rows(task, split, cfg, spec)
    features = datasets.Features({c: _feature(task, c) for c in SCHEMAS[task]})
    ds = datasets.Dataset.from_list(rows, features=features)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    ds.save_to_disk(str(tmp))
    try:
        os.replace(tmp, path)
    except OSError:  # another process finished the same dataset first: identical content, keep theirs
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return datasets.load_from_disk(str(path))


def _feature(task: str, column: str):
    import datasets

    if column == "image":
        return datasets.Image()
    if column in ("answers", "question_types", "answer_type", "operation/reasoning"):
        return datasets.Sequence(datasets.Value("string"))
    if column == "docId":
        return datasets.Value("int64")
    return datasets.Value("string")


def to_split(ds, task: Task, limit: int | None = None) -> Split:
    """Rows -> unique images + samples. Missing columns stop with one clear message."""
    from datasets import Image as ImageFeature
    from PIL import Image

    needed = {"image", task.question_field, task.answers_field} | ({task.split_field} if task.split_field else set())
    missing = sorted(needed - set(ds.column_names))
    if missing:
        raise AlignBenchError(f"dataset for task {task.name!r} lacks column(s) {missing}; it has "
                              f"{ds.column_names}. Use a dataset in the {task.hf_path} schema.")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    raw = ds.cast_column("image", ImageFeature(decode=False))
    index: dict[str, int] = {}
    images, samples = [], []
    for i, row in enumerate(raw):
        blob = row["image"]["bytes"] or Path(row["image"]["path"]).read_bytes()
        digest = hashlib.sha1(blob).hexdigest()
        if digest not in index:
            index[digest] = len(images)
            images.append(Image.open(io.BytesIO(blob)).convert("RGB"))
        uid = str(row.get("questionId", i))
        samples.append(Sample(index[digest], row[task.question_field], task.answers(row),
                              row[task.split_field] if task.split_field else None, uid))
    return Split(images, samples)


def load_split(task: Task, split: str, cfg: DataConfig, spec: PageSpec, cache: Path) -> Split:
    if cfg.source != "embedded":
        raise AlignBenchError(f"data source {cfg.source!r} is not available; use --data embedded")
    ds = embedded_dataset(task.name, split, cfg, spec, cache)
    return to_split(ds, task, cfg.eval_limit if split != "train" else None)


def batches(n: int, batch_size: int, steps: int, seed: int):
    """The same sequence of index batches for every connector: epochs of a seeded permutation."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    for _ in range(steps):
        while len(order) < batch_size:
            order.extend(rng.permutation(n).tolist())
        yield order[:batch_size]
        order = order[batch_size:]


def encode_prompt(tokenizer, task: Task, question: str) -> list[int]:
    return tokenizer(task.prompt(question), add_special_tokens=True)["input_ids"]


def pages(split: Split, max_questions: int) -> list[list[int]]:
    """Sample indices grouped by page (at most `max_questions` per page, in dataset order)."""
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(split.samples):
        if s.answers:
            groups.setdefault(s.image, []).append(i)
    return [idx[:max_questions] for idx in groups.values()]


def collate(tokenizer, task: Task, samples: list[Sample] | list[list[Sample]]):
    """Right-padded (prompt + answer + eos) sequences; labels mark the answer tokens only.

    An item may be a list of samples on the same page: their question/answer pairs then follow each other
    in one sequence after the page, so one pass over the visual tokens trains on every question of a page."""
    seqs, labels = [], []
    for item in samples:
        seq, lab = [], []
        for s in item if isinstance(item, list) else [item]:
            prompt = encode_prompt(tokenizer, task, s.question)
            answer = tokenizer(s.answers[0], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            seq += prompt + answer
            lab += [-100] * len(prompt) + answer
        seqs.append(seq)
        labels.append(lab)
    length = max(map(len, seqs))
    ids = torch.full((len(seqs), length), tokenizer.pad_token_id, dtype=torch.long)
    lab = torch.full((len(seqs), length), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for b, (s, lbl) in enumerate(zip(seqs, labels)):
        ids[b, : len(s)] = torch.tensor(s)
        lab[b, : len(s)] = torch.tensor(lbl)
        mask[b, : len(s)] = 1
    return ids, mask, lab
