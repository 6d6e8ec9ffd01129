"""The real datasets: a task's own Hugging Face datasets (`--data hf`), a hub id (`ID[:CONFIG][@SPLIT]`) or a local
copy (a save_to_disk folder, parquet / arrow / JSON files, a downloaded dataset repository), read cache first and
never hanging (`alignbench.backbones.hub`)."""

from __future__ import annotations

from pathlib import Path

from ..backbones.hub import hub_status, is_local, looks_like_path, missing_message, offline_mode
from ..config.data import DataConfig
from ..errors import AlignBenchError
from ..task import Source, Task


def parse_source(spec: str, split: str) -> Source:
    """`ID_OR_PATH[:CONFIG][@SPLIT]` -> Source. An existing path is taken whole (no config, no split)."""
    if is_local(spec):
        return Source(str(Path(spec).expanduser()), None, split)
    rest, _, at = spec.partition("@")
    ref, _, config = rest.partition(":")
    if not ref:
        raise AlignBenchError(
            f"data source {spec!r} names no dataset; use hf, embedded, a dataset id "
            "(ID[:CONFIG][@SPLIT]) or a local path"
        )
    return Source(ref, config or None, at or split)


def resolve_source(task: Task, split: str, cfg: DataConfig) -> Source:
    """Where `split` of `task` comes from: the task's own datasets for "hf", else the given dataset."""
    if not task.hf_path and "hf" in (cfg.source, cfg.train_source):
        raise AlignBenchError(
            f"task {task.name!r} exists as an embedded set only; use --data embedded (or give a dataset in its schema)"
        )
    if split == "train":
        spec = cfg.train_source or cfg.source
        if spec == "hf":
            if task.train_source is None:
                raise AlignBenchError(
                    f"task {task.name!r} has no default training set; pass --train-data with a "
                    f"dataset in the {task.hf_path} schema (a hub id or a local path)"
                )
            return task.train_source
        source = parse_source(spec, "train")
        if cfg.train_source is None and _single_split(source):
            raise AlignBenchError(
                f"--data {spec} holds a single split, so training would use the evaluation rows; "
                "pass --train-data with a training set (or --train-data hf)"
            )
        return source
    if cfg.source == "hf":
        return task.eval_source
    return parse_source(cfg.source, task.eval_split)


def _single_split(source: Source) -> bool:
    path = Path(source.path)
    return path.exists() and (
        path.is_file() or (path / "dataset_info.json").is_file() or (path / "state.json").is_file()
    )


def load_source(source: Source, task: Task):
    """A `datasets.Dataset` with the task's column names: a local copy or a hub dataset (cache first; offline
    or with the hub unreachable, the cache only, and a miss is one message naming the id)."""
    import datasets

    path = Path(source.path).expanduser()
    local = is_local(source.path)
    if not local and looks_like_path(source.path):
        raise AlignBenchError(
            f"dataset {source.path!r} not found; give a save_to_disk folder, parquet file(s) or a "
            "downloaded dataset repository, or a Hugging Face id"
        )
    if local:
        _inspect_local(path, source, task)
    online, why = (True, "") if local else hub_status()
    try:
        with offline_mode(not local and not online):
            ds = _load(path if local else source.path, source, local)
    except (ConnectionError, FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as exc:
        if not local and not online:
            raise AlignBenchError(
                "cannot load "
                + missing_message(
                    "dataset",
                    source.path,
                    why,
                    f"pass --data / --train-data with a local copy (a save_to_disk "
                    f"folder or parquet files in the {task.hf_path} schema)",
                )
            ) from None
        raise AlignBenchError(f"cannot load dataset {source.describe()}: {_one_line(exc)}") from None
    except ValueError as exc:  # an unknown config or split
        raise AlignBenchError(f"cannot load dataset {source.describe()}: {_one_line(exc)}") from None
    except datasets.exceptions.DatasetGenerationError as exc:
        cause = exc.__cause__ or exc
        raise AlignBenchError(
            f"cannot read dataset {source.describe()}: {_one_line(cause)}; expected data in the "
            f"{task.name} schema ({task.hf_path or 'see alignbench list'})"
        ) from None
    return ds


DATA_SUFFIXES = (".parquet", ".arrow", ".json", ".jsonl", ".csv")


def _inspect_local(path: Path, source: Source, task: Task) -> None:
    """A local source checked before `datasets` reads it, so that each way it can be wrong is one message naming
    the path, what was found and what was expected (datasets would say "Unknown split", "corresponds to no
    data", or raise a generation error after logging a line of its own)."""
    expected = (
        f"expected a save_to_disk folder, parquet / arrow / JSON files or a downloaded dataset repository "
        f"with rows in the {task.name} schema"
    )
    if path.is_dir() and any((path / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
        return  # a save_to_disk folder: datasets checks its own files
    if path.is_dir():
        files = sorted(
            f
            for f in path.rglob("*")
            if f.is_file()
            and f.suffix in DATA_SUFFIXES
            and not any(part.startswith(".") for part in f.relative_to(path).parts)
        )
        if not files:
            found = sorted(f.name for f in path.iterdir())[:5]
            raise AlignBenchError(
                f"dataset folder {str(path)!r} holds no data files (found: {', '.join(found) or 'nothing'}); {expected}"
            )
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
        raise AlignBenchError(
            f"{str(path)!r} is not a readable parquet file ({_one_line(exc)[:120]}); {expected}"
        ) from None


def with_task_columns(ds, task: Task):
    """Rename the columns of another schema of the task's data (`task.column_aliases`) to the task's names."""
    renames = {k: v for k, v in task.column_aliases.items() if k in ds.column_names and v not in ds.column_names}
    return ds.rename_columns(renames) if renames else ds


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _load(ref, source: Source, local: bool):
    import datasets

    if (
        local
        and ref.is_dir()
        and any((ref / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json"))
    ):
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
