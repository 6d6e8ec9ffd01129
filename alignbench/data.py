"""Task data: embedded sets (generated from a seed, cached on disk) or the real datasets (`--data hf`, a
dataset id, or a local copy), in the same column schema, turned into model-ready samples. Images are
de-duplicated by content before the vision tower runs (many questions share one page). Real datasets keep
their images in the (memory-mapped) dataset and decode a page when a batch needs it.

Bad rows never reach a metric. `to_split` normalises what it can (grayscale, RGBA, CMYK, 16-bit images
become 8-bit RGB; numeric answers become text) and skips and counts the rest, with a reason per row
(`SKIP_REASONS`); a source that is wrong as a whole (a missing column, no rows, no usable row) stops
the run with one message naming the source.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .embedded import SCHEMAS, PageSpec, render, sample_docs, to_row
from .errors import AlignBenchError
from .prompt import prompt_format
from .task import Source, Task

# Seeds of the embedded splits are offset so train and evaluation pages never share a stream.
SPLIT_OFFSET = {"train": 0, "eval": 7919, "val": 15401}  # "val": for learning-rate search


@dataclass
class DataConfig:
    # "embedded", "hf" (the task's own Hugging Face datasets), or a dataset: a hub id (ID[:CONFIG][@SPLIT]) or a
    # local copy (a save_to_disk folder, parquet files, a downloaded hub repository)
    source: str = "embedded"
    train_source: str | None = None  # None: the task's training set for "hf", else `source` (its train split)
    train_docs: int = 1200  # pages in the embedded train split (each carries several questions)
    eval_questions: int = 300  # questions in the embedded evaluation split
    seed: int = 0  # data seed: which pages are generated and the order of training batches
    eval_limit: int | None = None  # evaluate a subset of N questions, picked by `limit_seed`
    limit_seed: int = 0  # fixed, so every connector and every data seed is scored on the same subset
    train_limit: int | None = None  # train on a subset of N rows of a real training set (picked by limit_seed)
    eval_split: str = "eval"  # "val" scores a held-out validation split instead (learning-rate search)
    # Tasks whose training splits are mixed, a step from each in turn; None: the evaluated task's alone
    train_tasks: list[str] | None = None

    def validate(self) -> None:
        check_seed(self.seed, "--seed")
        for name in ("train_docs", "eval_questions"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise AlignBenchError(f"--{name.replace('_', '-')} must be a positive integer, got "
                                      f"{getattr(self, name)!r}")
        for name, flag in (("eval_limit", "--limit"), ("train_limit", "--train-limit")):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise AlignBenchError(f"{flag} must be a positive integer, got {value!r}")


MAX_SEED = 2**32 - 1  # numpy's seeds; torch's would go to 2**64 - 1


def check_seed(value, flag: str) -> None:
    """A seed is an integer in [0, 2**32 - 1]; anything else is one message naming the option."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise AlignBenchError(f"{flag} must be an integer from 0 to {MAX_SEED}, got {value!r}")


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
SKIP_REASONS = ("missing image", "unreadable image", "image too large", "empty question", "no gold answers",
                "answers not text")


def embedded_seed(task: str, split: str, data_seed: int) -> int:
    """The generator seed of an embedded split: its pages, and (+1) which question each evaluation page asks."""
    return data_seed * 100003 + SPLIT_OFFSET[split] + sum(map(ord, task))


def _embedded_rows(task: str, split: str, cfg: DataConfig, spec: PageSpec, renderer=None) -> list[dict]:
    seed = embedded_seed(task, split, cfg.seed)
    n_docs = cfg.train_docs if split == "train" else cfg.eval_questions  # eval: one question per page
    docs = sample_docs(task, n_docs, seed, spec)
    rng = np.random.default_rng(seed + 1)
    rows = []
    for doc_id, doc in enumerate(docs):
        image = renderer(doc) if renderer is not None else render(doc.page)
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        qas = list(enumerate(doc.qas)) if split == "train" else [list(enumerate(doc.qas))[rng.integers(len(doc.qas))]]
        for qi, qa in qas:
            rows.append(to_row(task, split, doc_id, qi, doc, qa, {"bytes": buf.getvalue(), "path": None}))
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


def _answer_texts(value) -> list[str] | None:
    """Gold answers as text: numbers become their shortest spelling ("12", "0.5"), missing and non-finite
    entries are dropped; None when the value is not text at all (a mapping, nested lists, bytes)."""
    out = []
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if v is None:
            continue
        if isinstance(v, float):
            if not math.isfinite(v):
                continue
            v = str(int(v)) if v.is_integer() and abs(v) < 1e16 else repr(v)
        elif isinstance(v, (bool, int)):
            v = str(v)
        elif not isinstance(v, str):
            return None
        if v.strip():
            out.append(v)
    return out


def _to_8bit(arr: np.ndarray) -> np.ndarray:
    """Integer or float pixels to 8 bits by their actual range: the data's bit depth is the smallest of 8, 10, 12
    and 16 bits that holds its largest value (a 16-bit file holding 8-bit data is kept as it is, 12-bit scanner
    data is scaled by 255 / 4095, full 16-bit data by 255 / 65535); float data in [0, 1] is scaled by 255; negative
    or wider data is stretched."""
    floating = np.issubdtype(arr.dtype, np.floating)
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
    if floating and low >= 0 and high <= 1.0:  # float pixels in [0, 1]
        return (arr * 255.0).round().astype(np.uint8)
    if low >= 0:
        for bits in (8, 10, 12, 16):
            if high <= 2**bits - 1:
                return (arr * (255.0 / (2**bits - 1))).round().clip(0, 255).astype(np.uint8)
    return ((arr - low) / max(high - low, 1e-12) * 255.0).round().astype(np.uint8)


def _to_rgb(image):
    """8-bit RGB: 16-bit, 32-bit and float channels are converted by their actual range (`_to_8bit`), transparency
    is laid on white paper, palette/CMYK/grayscale/bilevel images are converted. Raises ValueError when a page
    with content would become blank."""
    from PIL import Image

    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        arr = np.asarray(image)
        image = Image.fromarray(_to_8bit(arr), "L")
        if np.ptp(arr) > 0 and np.ptp(np.asarray(image)) == 0:
            raise ValueError(f"{arr.dtype} pixels from {arr.min()} to {arr.max()} leave nothing visible in 8 bits")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return image.convert("RGB")


def _decode(blob: bytes):
    """(RGB image, None) or (None, (reason, detail)). Decoding untrusted bytes: any decoder failure is a skip."""
    from PIL import Image, ImageFile

    # A truncated file is a skip, never a page filled with grey: PIL's global switch is off while decoding
    # (lmms-eval, once imported, turns it on for the whole process).
    truncated_ok, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(blob))
            pixels = image.size[0] * image.size[1]
            if Image.MAX_IMAGE_PIXELS and pixels > Image.MAX_IMAGE_PIXELS:
                return None, ("image too large", f"{image.size[0]}x{image.size[1]} pixels, over PIL's "
                                                 f"decompression-bomb limit of {Image.MAX_IMAGE_PIXELS}")
            image.load()
            try:
                return _to_rgb(image), None
            except ValueError as exc:
                return None, ("blank after conversion", str(exc))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            return None, ("image too large", str(exc))
        except Exception as exc:  # PIL raises many exception types on malformed input
            return None, ("unreadable image", f"{type(exc).__name__}: {exc}")
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = truncated_ok


def _image_bytes(cell) -> tuple[bytes | None, tuple[str, str] | None]:
    if not isinstance(cell, dict) or not (cell.get("bytes") or cell.get("path")):
        return None, ("missing image", "no image bytes and no path")
    if cell.get("bytes"):
        return cell["bytes"], None
    try:
        return Path(cell["path"]).read_bytes(), None
    except OSError as exc:
        return None, ("missing image", f"{cell['path']}: {exc.strerror or exc}")


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
        blob, problem = _image_bytes(self.raw[self.rows[i]]["image"])
        image, failure = _decode(blob) if blob is not None else (None, problem)
        if image is None:  # it decoded when the split was loaded: the file changed since
            raise AlignBenchError(f"page {i} (row {self.rows[i]}) can no longer be read ({failure[1]}); "
                                  "the dataset changed during the run, start it again")
        return image


def subset(n: int, limit: int | None, seed: int) -> list[int] | None:
    """Row numbers of a seeded subset of `limit` rows out of `n`, in dataset order (None: every row)."""
    if limit is None or limit >= n:
        return None
    return sorted(np.random.default_rng(seed).choice(n, size=limit, replace=False).tolist())


def to_split(ds, task: Task, limit: int | None = None, source: str | None = None, *, limit_seed: int = 0,
             lazy_images: bool = False, need_split_field: bool = True) -> Split:
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
        raise AlignBenchError(f"{source} lacks column(s) {missing}; it has {ds.column_names}. "
                              f"Use a dataset in the {task.hf_path} schema.")
    rows = subset(len(ds), limit, limit_seed)
    if rows is not None:
        ds = ds.select(rows)
    if len(ds) == 0:
        raise AlignBenchError(f"{source} has no rows; check the dataset and its split")
    try:
        raw = ds.cast_column("image", ImageFeature(decode=False))
    except Exception as exc:  # pyarrow and datasets raise several types for an impossible cast
        raise AlignBenchError(f"{source}: column 'image' holds {ds.features['image']}, not images "
                              f"({type(exc).__name__}); use a dataset in the {task.hf_path} schema") from None
    index: dict[str, int | tuple[str, str]] = {}  # content digest -> image index, or why it is unusable
    images, samples, skipped = [], [], []
    for i, row in enumerate(raw):
        uid = str(row["questionId"]) if row.get("questionId") is not None else str(i)
        question = row[task.question_field]
        answers = _answer_texts(row[task.answers_field])
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
            blob, problem = _image_bytes(row["image"])
            if blob is not None:
                digest = hashlib.sha1(blob).hexdigest()
                if digest not in index:
                    image, failure = _decode(blob)
                    index[digest] = failure if image is None else len(images)
                    if image is not None:
                        images.append(i if lazy_images else image)
                problem = index[digest] if isinstance(index[digest], tuple) else None
        if problem is not None:
            skipped.append({"uid": uid, "reason": problem[0], "detail": problem[1]})
            continue
        samples.append(Sample(index[digest], question, answers, _split_value(ds, split_field, row), uid))
    answers_feature = ds.features.get(task.answers_field)
    is_list = isinstance(answers_feature, (list, tuple)) or type(answers_feature).__name__ in ("List", "LargeList",
                                                                                                 "Sequence")
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
    if (cfg.train_source if split == "train" and cfg.train_source else cfg.source) == "embedded":
        ds = embedded_dataset(task.name, split, cfg, spec, cache, renderer)
        return to_split(ds, task, limit, source=f"embedded {task.name}/{split} set", limit_seed=cfg.limit_seed,
                        need_split_field=split != "train")
    if split == "val":
        raise AlignBenchError("the validation split of the learning-rate search exists for the embedded sets only; "
                              "use --data embedded")
    source = resolve_source(task, split, cfg)
    ds = load_source(source, task)
    return to_split(ds, task, limit, source=source.describe(), limit_seed=cfg.limit_seed, lazy_images=True,
                    need_split_field=split != "train")


# ---------------------------------------------------------------- real datasets


def parse_source(spec: str, split: str) -> Source:
    """`ID_OR_PATH[:CONFIG][@SPLIT]` -> Source. An existing path is taken whole (no config, no split)."""
    from .hub import is_local

    if is_local(spec):
        return Source(str(Path(spec).expanduser()), None, split)
    rest, _, at = spec.partition("@")
    ref, _, config = rest.partition(":")
    if not ref:
        raise AlignBenchError(f"data source {spec!r} names no dataset; use hf, embedded, a dataset id "
                              "(ID[:CONFIG][@SPLIT]) or a local path")
    return Source(ref, config or None, at or split)


def resolve_source(task: Task, split: str, cfg: DataConfig) -> Source:
    """Where `split` of `task` comes from: the task's own datasets for "hf", else the given dataset."""
    if not task.hf_path and "hf" in (cfg.source, cfg.train_source):
        raise AlignBenchError(f"task {task.name!r} exists as an embedded set only; use --data embedded (or give a "
                              "dataset in its schema)")
    if split == "train":
        spec = cfg.train_source or cfg.source
        if spec == "hf":
            if task.train_source is None:
                raise AlignBenchError(f"task {task.name!r} has no default training set; pass --train-data with a "
                                      f"dataset in the {task.hf_path} schema (a hub id or a local path)")
            return task.train_source
        source = parse_source(spec, "train")
        if cfg.train_source is None and _single_split(source):
            raise AlignBenchError(f"--data {spec} holds a single split, so training would use the evaluation rows; "
                                  "pass --train-data with a training set (or --train-data hf)")
        return source
    if cfg.source == "hf":
        return task.eval_source
    return parse_source(cfg.source, task.eval_split)


def _single_split(source: Source) -> bool:
    path = Path(source.path)
    return path.exists() and (path.is_file() or (path / "dataset_info.json").is_file()
                              or (path / "state.json").is_file())


def load_source(source: Source, task: Task):
    """A `datasets.Dataset` with the task's column names: a local copy or a hub dataset (cache first; offline
    or with the hub unreachable, the cache only, and a miss is one message naming the id)."""
    import datasets

    from .hub import hub_status, is_local, looks_like_path, missing_message, offline_mode

    path = Path(source.path).expanduser()
    local = is_local(source.path)
    if not local and looks_like_path(source.path):
        raise AlignBenchError(f"dataset {source.path!r} not found; give a save_to_disk folder, parquet file(s) or a "
                              "downloaded dataset repository, or a Hugging Face id")
    if local:
        _inspect_local(path, source, task)
    online, why = (True, "") if local else hub_status()
    try:
        with offline_mode(not local and not online):
            ds = _load(path if local else source.path, source, local)
    except (ConnectionError, FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as exc:
        if not local and not online:
            raise AlignBenchError("cannot load " + missing_message(
                "dataset", source.path, why, f"pass --data / --train-data with a local copy (a save_to_disk "
                f"folder or parquet files in the {task.hf_path} schema)")) from None
        raise AlignBenchError(f"cannot load dataset {source.describe()}: {_one_line(exc)}") from None
    except ValueError as exc:  # an unknown config or split
        raise AlignBenchError(f"cannot load dataset {source.describe()}: {_one_line(exc)}") from None
    except datasets.exceptions.DatasetGenerationError as exc:
        cause = exc.__cause__ or exc
        raise AlignBenchError(f"cannot read dataset {source.describe()}: {_one_line(cause)}; expected data in the "
                              f"{task.name} schema ({task.hf_path or 'see alignbench list'})") from None
    return ds


DATA_SUFFIXES = (".parquet", ".arrow", ".json", ".jsonl", ".csv")


def _inspect_local(path: Path, source: Source, task: Task) -> None:
    """A local source checked before `datasets` reads it, so that each way it can be wrong is one message naming
    the path, what was found and what was expected (datasets would say "Unknown split", "corresponds to no
    data", or raise a generation error after logging a line of its own)."""
    expected = (f"expected a save_to_disk folder, parquet / arrow / JSON files or a downloaded dataset repository "
                f"with rows in the {task.name} schema")
    if path.is_dir() and any((path / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
        return  # a save_to_disk folder: datasets checks its own files
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix in DATA_SUFFIXES
                       and not any(part.startswith(".") for part in f.relative_to(path).parts))
        if not files:
            found = sorted(f.name for f in path.iterdir())[:5]
            raise AlignBenchError(f"dataset folder {str(path)!r} holds no data files (found: "
                                  f"{', '.join(found) or 'nothing'}); {expected}")
    else:
        files = [path]
    parquet = [f for f in files if f.suffix == ".parquet"]
    rows = 0
    for f in parquet:
        rows += _parquet_rows(f, expected)
    if parquet and len(parquet) == len(files) and rows == 0:
        where = str(path) if path.is_file() else f"{path} ({len(parquet)} parquet files)"
        raise AlignBenchError(f"dataset {where!r} holds no rows (empty parquet); {expected}")


def _parquet_rows(path: Path, expected: str) -> int:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(str(path)).metadata.num_rows
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...: the file is not a readable parquet file
        raise AlignBenchError(f"{str(path)!r} is not a readable parquet file ({_one_line(exc)[:120]}); "
                              f"{expected}") from None


def with_task_columns(ds, task: Task):
    """Rename the columns of another schema of the task's data (`task.column_aliases`) to the task's names."""
    renames = {k: v for k, v in task.column_aliases.items() if k in ds.column_names and v not in ds.column_names}
    return ds.rename_columns(renames) if renames else ds


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _load(ref, source: Source, local: bool):
    import datasets

    if local and ref.is_dir() and any((ref / f).is_file() for f in ("dataset_info.json", "state.json",
                                                                     "dataset_dict.json")):
        ds = datasets.load_from_disk(str(ref))
        if isinstance(ds, datasets.DatasetDict):
            if source.split not in ds:
                raise ValueError(f"{ref} has no split {source.split!r}; it has {', '.join(ds)}")
            ds = ds[source.split]
        return ds
    if local and ref.is_file():
        kind = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json"}.get(ref.suffix)
        if kind is None:
            raise ValueError(f"{ref} is not a parquet, arrow or JSON file")
        return datasets.load_dataset(kind, data_files=str(ref), split="train")
    kwargs = {"data_files": {source.split: source.data_files}} if source.data_files else {}
    return datasets.load_dataset(str(ref), source.config, split=source.split, **kwargs)


class BatchOrder:
    """The same sequence of index batches for every connector: epochs of a seeded permutation.

    Its state (the generator's state and the rest of the current epoch) is plain JSON, so a resumed run
    continues the very same sequence."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size = n, batch_size
        self.rng = np.random.default_rng(seed)
        self.pending: list[int] = []

    def next(self) -> list[int]:
        while len(self.pending) < self.batch_size:
            self.pending.extend(self.rng.permutation(self.n).tolist())
        batch, self.pending = self.pending[: self.batch_size], self.pending[self.batch_size :]
        return batch

    def state_dict(self) -> dict:
        return {"n": self.n, "batch_size": self.batch_size, "generator": self.rng.bit_generator.state,
                "pending": list(self.pending)}

    def load_state_dict(self, state: dict) -> None:
        if (state["n"], state["batch_size"]) != (self.n, self.batch_size):
            raise AlignBenchError(f"saved data order is for {state['n']} pages in batches of {state['batch_size']}, "
                                  f"not {self.n} in batches of {self.batch_size}; start a new run")
        self.rng.bit_generator.state = state["generator"]
        self.pending = [int(i) for i in state["pending"]]


def batches(n: int, batch_size: int, steps: int, seed: int):
    """`steps` batches of `BatchOrder(n, batch_size, seed)`."""
    order = BatchOrder(n, batch_size, seed)
    for _ in range(steps):
        yield order.next()


def encode_prompt(tokenizer, task: Task, question: str) -> list[int]:
    """The tokens a generation is prompted with after the page: the question's user turn and, for a chat model,
    the assistant header (`alignbench.prompt`)."""
    return prompt_format(tokenizer).prompt_ids(tokenizer, task.prompt(question))


def pages(split: Split, max_questions: int) -> list[list[int]]:
    """Sample indices grouped by page (at most `max_questions` per page, in dataset order)."""
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(split.samples):
        if s.answers:
            groups.setdefault(s.image, []).append(i)
    return [idx[:max_questions] for idx in groups.values()]


def collate(tokenizer, task: Task, samples: list[Sample] | list[list[Sample]]):
    """Right-padded text parts of training sequences (`alignbench.prompt`); labels mark the answers and their end
    of turn only.

    An item may be a list of samples on the same page: their question/answer turns then follow each other
    in one sequence after the page, so one pass over the visual tokens trains on every question of a page."""
    fmt = prompt_format(tokenizer)
    seqs, labels = [], []
    for item in samples:
        turns = [(task.prompt(s.question), s.answers[0]) for s in (item if isinstance(item, list) else [item])]
        seq, trained = fmt.sequence(tokenizer, turns)
        seqs.append(seq)
        labels.append([t if keep else -100 for t, keep in zip(seq, trained)])
    length = max(map(len, seqs))
    ids = torch.full((len(seqs), length), tokenizer.pad_token_id, dtype=torch.long)
    lab = torch.full((len(seqs), length), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for b, (s, lbl) in enumerate(zip(seqs, labels)):
        ids[b, : len(s)] = torch.tensor(s)
        lab[b, : len(s)] = torch.tensor(lbl)
        mask[b, : len(s)] = 1
    return ids, mask, lab
