"""Bad sources are one line naming the path, what was found and what was expected (exit 2): an empty parquet file
written by pyarrow, pandas or datasets, a folder with no data files, a file named .parquet that is not one. 16-bit
pages are converted by their actual range (never an almost black page); a page that conversion would blank is a
counted skip; the rows a run skipped are written, with their ids and reasons, to RUN_DIR/skipped.jsonl."""

import io
import json
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from alignbench.data.decode import decode as _decode
from alignbench.data.real import load_source, resolve_source
from alignbench.errors import AlignBenchError
from alignbench.task import TASKS
from tests.support.cli import cli, no_run_directory, one_line_error
from tests.support.hf import real_schema_rows

SMALL = ["--steps", "2", "--batch-size", "2", "--no-blind"]
OFFLINE = {"HF_DATASETS_OFFLINE": "1"}
# Every task read from a real source (a hub id or a local copy): the embedded-only ones have none.
REAL_TASKS = [name for name in TASKS.names() if TASKS.get(name).hf_path]


def _empty_pyarrow(path: Path) -> None:
    pq.write_table(pa.table({"question": pa.array([], pa.string())}), path)


def _empty_pandas(path: Path) -> None:
    pd.DataFrame({"question": pd.Series([], dtype=str)}).to_parquet(path)


def _empty_datasets(path: Path) -> None:
    datasets.Dataset.from_dict({"question": []}).to_parquet(str(path))


def _not_parquet(path: Path) -> None:
    path.write_text("question,answer\nwhat?,this\n")


def _truncated_parquet(path: Path) -> None:
    _empty_pandas(path)
    path.write_bytes(path.read_bytes()[:40])


FILE_FAULTS = {  # fault -> (writer, what the message says)
    "empty parquet (pyarrow)": (_empty_pyarrow, "holds no rows (empty parquet)"),
    "empty parquet (pandas)": (_empty_pandas, "holds no rows (empty parquet)"),
    "empty parquet (datasets)": (_empty_datasets, "holds no rows (empty parquet)"),
    "text named .parquet": (_not_parquet, "is not a readable parquet file"),
    "truncated parquet": (_truncated_parquet, "is not a readable parquet file"),
}


def _make(tmp_path: Path, fault: str, in_folder: bool) -> tuple[Path, Path, str]:
    """(what to pass as --data, the path the message must name, the message's needle)"""
    if fault == "folder with a stray file":
        folder = tmp_path / "src"
        folder.mkdir()
        (folder / "notes.txt").write_text("hello")
        return folder, folder, "holds no data files (found: notes.txt)"
    folder = tmp_path / "src"
    folder.mkdir()
    target = folder / ("train-00000.parquet" if in_folder else "data.parquet")
    writer, needle = FILE_FAULTS[fault]
    writer(target)
    if in_folder:
        return folder, (folder if "empty" in fault else target), needle
    return target, target, needle


SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(
    fault=st.sampled_from(sorted(FILE_FAULTS) + ["folder with a stray file"]),
    in_folder=st.booleans(),
    task=st.sampled_from(REAL_TASKS),
)
def test_every_bad_source_is_one_message_naming_it(tmp_path_factory, fault, in_folder, task):
    tmp = tmp_path_factory.mktemp("src")
    given_path, named, needle = _make(tmp, fault, in_folder)
    with pytest.raises(AlignBenchError) as info:
        load_source(resolve_source(TASKS.get(task), "eval", _config(given_path)), TASKS.get(task))
    message = str(info.value)
    assert "\n" not in message and str(named) in message and needle in message, message
    assert "expected" in message and task in message


def _config(path):
    from alignbench.config.data import DataConfig

    return DataConfig(source=str(path))


@pytest.mark.parametrize("fault", ["empty parquet (pandas)", "text named .parquet", "folder with a stray file"])
def test_the_cli_says_it_in_one_line(tmp_path, fault):
    given_path, named, needle = _make(tmp_path, fault, in_folder=False)
    done = cli(
        "run",
        "--connector",
        "mlp",
        "--data",
        given_path,
        "--train-data",
        given_path,
        *SMALL,
        "--output",
        tmp_path / "out",
        env=OFFLINE,
    )
    one_line_error(done, str(named), needle)
    assert no_run_directory(tmp_path / "out")


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(
        buf, format="PNG" if array.dtype != np.float32 else "TIFF"
    )
    return buf.getvalue()


@pytest.mark.parametrize("bits", [8, 12, 16])
def test_sixteen_bit_pages_are_read_by_their_actual_range(bits):
    """A 16-bit grayscale page whose values use 8, 12 or 16 bits comes out as the same 8-bit page."""
    rng = np.random.default_rng(bits)
    page = rng.integers(0, 256, (24, 32)).astype(np.uint8)
    page[0, 0], page[0, 1] = 0, 255  # the full range is used
    wide = np.round(page.astype(np.float64) * (2**bits - 1) / 255).astype(np.uint16)
    image, problem = _decode(_png(wide))
    assert problem is None
    got = np.asarray(image)[:, :, 0].astype(int)
    assert np.abs(got - page.astype(int)).max() <= 1


def test_a_page_that_conversion_would_blank_is_a_counted_skip():
    faint = np.zeros((16, 16), np.float32)
    faint[4:8, 4:8] = 0.001  # float pixels in [0, 1]: 0.001 * 255 rounds to 0
    image, problem = _decode(_png(faint, "F"))
    assert image is None and problem[0] == "blank after conversion"


def test_a_run_writes_the_ids_and_reasons_of_the_rows_it_skipped(tmp_path):
    raw = real_schema_rows("docvqa", "eval", 8).cast_column("image", datasets.Image(decode=False))
    rows = [dict(r) for r in raw]
    rows[2]["image"] = {"bytes": b"not an image", "path": None}
    rows[5]["question"] = "   "
    data = tmp_path / "val.parquet"
    datasets.Dataset.from_list(rows, features=raw.features).to_parquet(str(data))
    train = tmp_path / "train.parquet"
    real_schema_rows("docvqa", "train", 6).to_parquet(str(train))
    args = ["--connector", "mlp", "--data", data, "--train-data", train, *SMALL]
    done = cli("run", *args, "--output", tmp_path / "o", env=OFFLINE)
    assert done.returncode == 0, done.stderr
    run_dir = next((tmp_path / "o" / "runs").iterdir())
    skipped = [json.loads(line) for line in (run_dir / "skipped.jsonl").read_text().splitlines()]
    results = json.loads((run_dir / "results.json").read_text())
    evaluated = [s for s in skipped if s["split"] == "docvqa/eval"]
    assert {s["uid"] for s in evaluated} == {str(rows[2]["questionId"]), str(rows[5]["questionId"])}
    assert {s["reason"] for s in evaluated} == set(results["skipped"]) and len(evaluated) == results["n_skipped"]
    assert all(s["detail"] for s in evaluated)


def test_a_truncated_image_is_a_skip_even_after_lmms_eval_allowed_truncated_images():
    """lmms-eval turns PIL's LOAD_TRUNCATED_IMAGES on for the whole process when imported; decoding ignores it."""
    from PIL import ImageFile

    whole = _png(np.full((32, 32), 200, np.uint8))
    was = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        image, problem = _decode(whole[: len(whole) // 2])
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = was
    assert image is None and problem[0] == "unreadable image"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is was
