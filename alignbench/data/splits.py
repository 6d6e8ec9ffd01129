"""Task data as model-ready samples: the embedded sets (generated from a seed, cached on disk) or the real datasets
(`--data hf`, a dataset id, or a local copy, `alignbench.data.real`), in the same column schema. Images are
de-duplicated by content before the vision tower runs (many questions share one page). Real datasets keep
their images in the (memory-mapped) dataset and decode a page when a batch needs it.

Bad rows never reach a metric. `to_split` normalises what it can (grayscale, RGBA, CMYK, 16-bit images
become 8-bit RGB; numeric answers become text, `alignbench.data.decode`) and skips and counts the rest, with a
reason per row (`SKIP_REASONS`); a source that is wrong as a whole (a missing column, no rows, no usable row)
stops the run with one message naming the source.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config.data import DataConfig
from ..errors import AlignBenchError
from ..task import Task
from .decode import answer_texts, decode, image_bytes
from .embedded.dataset import SPLIT_OFFSET, embedded_dataset
from .embedded.page import PageSpec
from .real import load_source, resolve_source, with_task_columns


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
    skipped: list[dict] = field(default_factory=list)  # {"uid", "reason", "detail"} per row left out
    answers_are_lists: bool = True  # the source's answers column holds lists (DocVQA), not one string (ChartQA)

    def skip_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(s["reason"] for s in self.skipped).items()))


# Why a row is left out (counted in results.json as `n_skipped` / `skipped`).
SKIP_REASONS = (
    "missing image",
    "unreadable image",
    "image too large",
    "empty question",
    "no gold answers",
    "answers not text",
)


class LazyImages:
    """The unique pages of a split, decoded when asked for: `rows[i]` is a row of `raw` (images not decoded)
    holding page i. Nothing but the row numbers stays in memory."""

    def __init__(self, raw, rows: list[int]):
        self.raw, self.rows = raw, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(len(self))[i]]
        blob, problem = image_bytes(self.raw[self.rows[i]]["image"])
        image, failure = decode(blob) if blob is not None else (None, problem)
        if image is None:  # it decoded when the split was loaded: the file changed since
            raise AlignBenchError(
                f"page {i} (row {self.rows[i]}) can no longer be read ({failure[1]}); "
                "the dataset changed during the run, start it again"
            )
        return image


def subset(n: int, limit: int | None, seed: int) -> list[int] | None:
    """Row numbers of a seeded subset of `limit` rows out of `n`, in dataset order (None: every row)."""
    if limit is None or limit >= n:
        return None
    return sorted(np.random.default_rng(seed).choice(n, size=limit, replace=False).tolist())


def to_split(
    ds,
    task: Task,
    limit: int | None = None,
    source: str | None = None,
    *,
    limit_seed: int = 0,
    lazy_images: bool = False,
    need_split_field: bool = True,
) -> Split:
    """Rows -> unique images + samples; unusable rows are skipped and counted (`Split.skipped`).

    `limit` keeps a subset of that many rows, picked by `limit_seed`. With `lazy_images`, pages are checked
    once here and decoded again when used (`LazyImages`), so a large dataset never sits decoded in memory.
    A source that is wrong as a whole stops with one message naming `source`: a missing column, an image
    column that holds no images, no rows, or no usable row."""
    from datasets import Image as ImageFeature

    source = source or f"dataset for task {task.name!r}"
    ds = with_task_columns(ds, task)
    split_field = task.split_field if need_split_field else None
    needed = {"image", task.question_field, task.answers_field} | ({split_field} if split_field else set())
    missing = sorted(needed - set(ds.column_names))
    if missing:
        raise AlignBenchError(
            f"{source} lacks column(s) {missing}; it has {ds.column_names}. Use a dataset in the {task.hf_path} schema."
        )
    rows = subset(len(ds), limit, limit_seed)
    if rows is not None:
        ds = ds.select(rows)
    if len(ds) == 0:
        raise AlignBenchError(f"{source} has no rows; check the dataset and its split")
    try:
        raw = ds.cast_column("image", ImageFeature(decode=False))
    except Exception as exc:  # pyarrow and datasets raise several types for an impossible cast
        raise AlignBenchError(
            f"{source}: column 'image' holds {ds.features['image']}, not images "
            f"({type(exc).__name__}); use a dataset in the {task.hf_path} schema"
        ) from None
    index: dict[str, int | tuple[str, str]] = {}  # content digest -> image index, or why it is unusable
    images, samples, skipped = [], [], []
    for i, row in enumerate(raw):
        uid = str(row["questionId"]) if row.get("questionId") is not None else str(i)
        question = row[task.question_field]
        answers = answer_texts(row[task.answers_field])
        problem = None
        if not isinstance(question, str) or not question.strip():
            problem = ("empty question", repr(question))
        elif answers is None:
            problem = ("answers not text", f"{type(row[task.answers_field]).__name__}")
        else:
            answers = task.answers({**row, task.answers_field: answers})
            if not answers:
                problem = ("no gold answers", repr(row[task.answers_field]))
        if problem is None:
            blob, problem = image_bytes(row["image"])
            if blob is not None:
                digest = hashlib.sha1(blob).hexdigest()
                if digest not in index:
                    image, failure = decode(blob)
                    index[digest] = failure if image is None else len(images)
                    if image is not None:
                        images.append(i if lazy_images else image)
                problem = index[digest] if isinstance(index[digest], tuple) else None
        if problem is not None:
            skipped.append({"uid": uid, "reason": problem[0], "detail": problem[1]})
            continue
        samples.append(Sample(index[digest], question, answers, _split_value(ds, split_field, row), uid))
    answers_feature = ds.features.get(task.answers_field)
    is_list = isinstance(answers_feature, (list, tuple)) or type(answers_feature).__name__ in (
        "List",
        "LargeList",
        "Sequence",
    )
    split = Split(LazyImages(raw, images) if lazy_images else images, samples, skipped, is_list)
    if not samples:
        counts = ", ".join(f"{n} {r}" for r, n in split.skip_counts().items())
        raise AlignBenchError(f"{source}: none of its {len(raw)} rows is usable ({counts}); check the dataset")
    return split


def _split_value(ds, field: str | None, row: dict) -> str | None:
    """The row's value of the task's split column, as text (a class label by its name)."""
    from datasets import ClassLabel

    if not field or row.get(field) is None:
        return None
    feature = ds.features.get(field)
    return feature.int2str(row[field]) if isinstance(feature, ClassLabel) else str(row[field])


def load_split(task: Task, split: str, cfg: DataConfig, spec: PageSpec, cache: Path, renderer=None) -> Split:
    """The `split` ("train", "eval" or, embedded only, "val") of `task` from the configured source; `renderer`
    draws the embedded pages (the backbone's, see `embedded_dataset`)."""
    if split not in SPLIT_OFFSET:
        raise AlignBenchError(f"unknown split {split!r}; known splits: {', '.join(SPLIT_OFFSET)}")
    limit = cfg.train_limit if split == "train" else cfg.eval_limit
    if cfg.embedded_for(split):
        ds = embedded_dataset(task.name, split, cfg, spec, cache, renderer)
        return to_split(
            ds,
            task,
            limit,
            source=f"embedded {task.name}/{split} set",
            limit_seed=cfg.limit_seed,
            need_split_field=split != "train",
        )
    if split == "val":
        raise AlignBenchError(
            "the validation split of the learning-rate search exists for the embedded sets only; use --data embedded"
        )
    source = resolve_source(task, split, cfg)
    ds = load_source(source, task)
    return to_split(
        ds,
        task,
        limit,
        source=source.describe(),
        limit_seed=cfg.limit_seed,
        lazy_images=True,
        need_split_field=split != "train",
    )
