"""The embedded sets as datasets: a task's documents for a split (`embedded_docs`, the one seed formula) and their
rows in the real dataset's schema, generated once and cached under a content key (`embedded_dataset`)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ...config.data import DataConfig
from ...io import publish_dir
from ...task import TASKS
from .generators import sample_docs
from .page import PageSpec, render
from .schemas import Doc

# Seeds of the embedded splits are offset so train and evaluation pages never share a stream.
SPLIT_OFFSET = {"train": 0, "eval": 7919, "val": 15401}  # "val": for learning-rate search


def embedded_seed(task: str, split: str, data_seed: int) -> int:
    """The generator seed of an embedded split: its pages, and (+1) which question each evaluation page asks."""
    return data_seed * 100003 + SPLIT_OFFSET[split] + sum(map(ord, task))


def embedded_docs(task: str, split: str, cfg: DataConfig, spec: PageSpec) -> list[Doc]:
    """The documents of an embedded split: `train_docs` pages for training, one page per evaluation question."""
    n_docs = cfg.train_docs if split == "train" else cfg.eval_questions  # eval: one question per page
    return sample_docs(task, n_docs, embedded_seed(task, split, cfg.seed), spec)


def _embedded_rows(task: str, split: str, cfg: DataConfig, spec: PageSpec, renderer=None) -> list[dict]:
    row = TASKS.get(task).embedded_set().row
    docs = embedded_docs(task, split, cfg, spec)
    rng = np.random.default_rng(embedded_seed(task, split, cfg.seed) + 1)  # which question each evaluation page asks
    rows = []
    for doc_id, doc in enumerate(docs):
        image = renderer(doc) if renderer is not None else render(doc.page)
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        qas = list(enumerate(doc.qas)) if split == "train" else [list(enumerate(doc.qas))[rng.integers(len(doc.qas))]]
        for qi, qa in qas:
            rows.append(row(split, doc_id, qi, doc, qa, {"bytes": buf.getvalue(), "path": None}))
    return rows


def embedded_dataset(task: str, split: str, cfg: DataConfig, spec: PageSpec, cache: Path, renderer=None):
    """A `datasets.Dataset` in the real schema, generated once and cached under a content key. `renderer` draws a
    document (default: its glyph page); it has a `key` naming what it draws (token pages: layout and tokenizer)."""
    import datasets

    n_docs = cfg.train_docs if split == "train" else cfg.eval_questions
    parts = [task, split, n_docs, cfg.seed, asdict(spec), "embedded-v1"] + ([renderer.key] if renderer else [])
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    path = cache / "data" / f"{task}-{split}-{key}"
    if (path / "dataset_info.json").exists():
        return datasets.load_from_disk(str(path))
    rows = _embedded_rows(task, split, cfg, spec, renderer)
    features = datasets.Features({c: _feature(c) for c in TASKS.get(task).embedded_set().columns})
    ds = datasets.Dataset.from_list(rows, features=features)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    ds.save_to_disk(str(tmp))
    publish_dir(tmp, path)  # another process that finished the same dataset first: identical content, theirs stays
    return datasets.load_from_disk(str(path))


def _feature(column: str):
    import datasets

    if column == "image":
        return datasets.Image()
    if column in ("answers", "question_types", "answer_type", "operation/reasoning"):
        return datasets.Sequence(datasets.Value("string"))
    if column == "docId":
        return datasets.Value("int64")
    return datasets.Value("string")
