"""Bad data, injected row by row into datasets in the real Hugging Face schemas: every faulty row is either
normalised (images become 8-bit RGB, numeric answers become text) or skipped and counted with its reason;
a source that is wrong as a whole stops with one message naming it. Through a whole run: the skipped rows are
counted in results.json, the leaderboard and the console, and a wrong source stops the command with one line.
Metric properties on what the loader keeps: no kept sample can be scored 0 for lack of gold answers."""

import io
import json
import math
import string
import struct
import zlib
from pathlib import Path

import datasets
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from alignbench.config.data import DataConfig
from alignbench.config.run import RunConfig
from alignbench.config.train import TrainConfig
from alignbench.data.decode import answer_texts as _answer_texts
from alignbench.data.embedded.dataset import _feature
from alignbench.data.splits import to_split
from alignbench.errors import AlignBenchError
from alignbench.metrics import METRICS, anls, relaxed_accuracy
from alignbench.run.leaderboard import read_leaderboard
from alignbench.run.pipeline import run
from alignbench.run.workspace import Workspace
from alignbench.task import TASKS
from tests.support.cli import flags, main_in_process, one_line

SIZE = (96, 96)
QUIET = dict(log=lambda *a, **k: None)
DATA = DataConfig(train_docs=4, eval_questions=6)


def _page(seed: int = 0) -> Image.Image:
    """A page-like RGB image: white paper, a dark block, a coloured block (distinct per seed)."""
    arr = np.full((*SIZE, 3), 255, np.uint8)
    arr[10:30, 10 + seed % 40 : 50 + seed % 40] = 20
    arr[60:80, 20:60] = (200, 30, 30)
    return Image.fromarray(arr, "RGB")


def _encode(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (a decompression bomb as PIL sees it on open)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _rgba() -> bytes:
    im = _page().convert("RGBA")
    im.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black: must become white paper
    return _encode(im)


def _palette_transparent() -> bytes:
    im = _page(3).convert("P")
    im.info["transparency"] = im.getpixel((0, 0))
    return _encode(im, transparency=im.getpixel((0, 0)))


def _sixteen_bit() -> bytes:
    arr = np.full(SIZE[::-1], 32896, np.uint16)  # mid-grey in 16 bits (128 * 257)
    arr[:10] = 0
    return _encode(Image.fromarray(arr))


IMAGES = {  # image faults -> bytes
    "rgb": _encode(_page(1)),
    "gray": _encode(_page(2).convert("L")),
    "rgba": _rgba(),
    "cmyk": _encode(_page(4).convert("CMYK"), "JPEG", quality=95),
    "16bit": _sixteen_bit(),
    "palette_transparent": _palette_transparent(),
    "bilevel": _encode(_page(5).convert("1")),
    "corrupt": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
    "truncated": _encode(_page(6))[: len(_encode(_page(6))) // 2],  # cut inside the pixel data
    "not_an_image": b"%PDF-1.4 this is not an image",
    "bomb": _png_header_only(20_000, 20_000),  # over 2x PIL's limit: PIL refuses to open it
    "bomb_warning": _png_header_only(10_000, 10_000),  # between 1x and 2x: PIL only warns; we still skip
}

# Row faults and what must become of them: None = kept (normalised), else the skip reason.
FAULTS = {
    "ok": None,
    "gray": None,
    "rgba": None,
    "cmyk": None,
    "16bit": None,
    "palette_transparent": None,
    "bilevel": None,
    "int_answer_text": None,
    "corrupt": "unreadable image",
    "truncated": "unreadable image",
    "not_an_image": "unreadable image",
    "missing_image": "missing image",
    "missing_file": "missing image",
    "bomb": "image too large",
    "bomb_warning": "image too large",
    "empty_question": "empty question",
    "blank_question": "empty question",
    "none_question": "empty question",
    "empty_answers": "no gold answers",
    "blank_answers": "no gold answers",
    "none_answers": "no gold answers",
}


def _row(task: str, i: int, fault: str, tmp_path) -> dict:
    image = {"bytes": IMAGES.get(fault, IMAGES["rgb"]), "path": None}
    if fault == "missing_image":
        image = None  # a null cell
    elif fault == "missing_file":
        image = {"bytes": None, "path": str(tmp_path / f"gone-{i}.png")}
    question = {"empty_question": "", "blank_question": "  \t", "none_question": None}.get(fault, f"What is {i}?")
    answers = {"empty_answers": [], "blank_answers": ["", "  "], "none_answers": None, "int_answer_text": ["42"]}.get(
        fault, [f"answer {i}"]
    )
    if task == "docvqa":
        return {
            "questionId": f"q{i}",
            "question": question,
            "question_types": ["other"],
            "image": image,
            "docId": i,
            "ucsf_document_id": "x",
            "ucsf_document_page_no": "1",
            "answers": answers,
            "data_split": "val",
        }
    answer = None if answers is None else (answers[0] if answers else "")
    return {"type": "human_test", "question": question, "answer": answer, "image": image}


def _dataset(task: str, rows: list[dict], overrides: dict | None = None) -> datasets.Dataset:
    columns = TASKS.get(task).embedded.columns
    features = datasets.Features({c: (overrides or {}).get(c) or _feature(c) for c in columns})
    return datasets.Dataset.from_list(rows, features=features)


def _uid(task: str, i: int) -> str:
    return f"q{i}" if task == "docvqa" else str(i)


FAST = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@FAST
@given(
    task=st.sampled_from(["docvqa", "chartqa"]),
    faults=st.lists(st.sampled_from(sorted(FAULTS)), min_size=1, max_size=8),
)
def test_every_faulty_row_is_normalised_or_skipped_and_counted(task, faults, tmp_path):
    rows = [_row(task, i, f, tmp_path) for i, f in enumerate(faults)]
    expected = {_uid(task, i): FAULTS[f] for i, f in enumerate(faults)}
    ds = _dataset(task, rows)
    if all(reason is not None for reason in expected.values()):
        with pytest.raises(AlignBenchError, match="none of its .* rows is usable") as err:
            to_split(ds, TASKS.get(task), source="test source")
        assert "test source" in str(err.value) and "\n" not in str(err.value)
        return
    split = to_split(ds, TASKS.get(task), source="test source")
    assert len(split.samples) + len(split.skipped) == len(rows)
    assert {s["uid"]: s["reason"] for s in split.skipped} == {u: r for u, r in expected.items() if r}
    assert sum(split.skip_counts().values()) == len(split.skipped)
    metric = METRICS.get(TASKS.get(task).metric)
    for s in split.samples:
        assert expected[s.uid] is None
        assert isinstance(s.question, str) and s.question.strip()
        assert s.answers and all(isinstance(a, str) and a.strip() for a in s.answers)
        image = split.images[s.image]
        assert image.mode == "RGB" and image.size == SIZE
        assert metric(s.answers[0], s.answers) == 1.0  # a kept sample can be scored, and a right answer scores 1


def test_image_modes_are_normalised_faithfully(tmp_path):
    """Conversion keeps what a reader sees: transparency becomes white paper, 16-bit grey stays grey (not the
    white a plain 8-bit clip gives), CMYK and palette colours survive."""
    faults = ["rgba", "16bit", "cmyk", "palette_transparent", "gray", "bilevel"]
    split = to_split(
        _dataset("docvqa", [_row("docvqa", i, f, tmp_path) for i, f in enumerate(faults)]), TASKS.get("docvqa")
    )
    img = {faults[int(s.uid[1:])]: split.images[s.image] for s in split.samples}
    assert img["rgba"].getpixel((0, 0)) == (255, 255, 255)
    assert img["rgba"].getpixel((20, 20)) == (20, 20, 20)
    assert img["16bit"].getpixel((50, 50)) == (128, 128, 128) and img["16bit"].getpixel((5, 5)) == (0, 0, 0)
    red = img["cmyk"].getpixel((30, 70))
    assert red[0] > 150 and red[1] < 90 and red[2] < 90
    assert img["palette_transparent"].getpixel((0, 0)) == (255, 255, 255)
    assert img["gray"].getpixel((20, 20)) == (20, 20, 20)
    pixels = np.asarray(img["bilevel"]).reshape(-1, 3)
    black, white = (pixels == 0).all(1), (pixels == 255).all(1)
    assert (black | white).all() and black.any() and white.any()


@FAST
@given(
    values=st.lists(st.one_of(st.integers(-(10**6), 10**6), st.floats(allow_nan=True, allow_infinity=True)), max_size=4)
)
def test_numeric_answers_become_text(values, tmp_path):
    """A DocVQA-schema source whose answers column is numeric: numbers become text, NaN/inf are dropped,
    a row left with no answer is skipped and counted."""
    rows = [_row("docvqa", 0, "ok", tmp_path), _row("docvqa", 1, "ok", tmp_path)]
    ds = _dataset(
        "docvqa",
        [rows[0] | {"answers": [float(v) for v in values]}, rows[1] | {"answers": [1.0]}],
        {"answers": datasets.Sequence(datasets.Value("float64"))},
    )
    split = to_split(ds, TASKS.get("docvqa"))
    finite = [float(v) for v in values if math.isfinite(float(v))]
    kept = {s.uid: s.answers for s in split.samples}
    assert kept["q1"] == ["1"]
    if finite:
        assert [float(a) for a in kept["q0"]] == finite
        assert all(isinstance(a, str) for a in kept["q0"])
    else:
        assert [s["uid"] for s in split.skipped] == ["q0"] and split.skipped[0]["reason"] == "no gold answers"


@given(
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=2)),
        max_leaves=6,
    )
)
def test_answer_texts_is_text_or_refuses(value):
    out = _answer_texts(value)
    assert out is None or all(isinstance(a, str) and a.strip() for a in out)
    if isinstance(value, str):
        assert out == ([value] if value.strip() else [])


def test_chartqa_float_answer_column(tmp_path):
    rows = [_row("chartqa", i, "ok", tmp_path) for i in range(3)]
    ds = _dataset(
        "chartqa",
        [r | {"answer": v} for r, v in zip(rows, [12.0, 0.25, float("nan")])],
        {"answer": datasets.Value("float64")},
    )
    split = to_split(ds, TASKS.get("chartqa"))
    assert [s.answers for s in split.samples] == [["12"], ["0.25"]]
    assert split.skipped == [{"uid": "2", "reason": "no gold answers", "detail": "nan"}]
    assert relaxed_accuracy("12", split.samples[0].answers[0]) == 1.0


@pytest.mark.parametrize("task", ["docvqa", "chartqa"])
@pytest.mark.parametrize("fault", ["drop", "rename"])
def test_missing_or_renamed_column_stops_with_one_line(task, fault, tmp_path):
    spec = TASKS.get(task)
    ds = _dataset(task, [_row(task, i, "ok", tmp_path) for i in range(2)])
    ds = ds.remove_columns(spec.answers_field) if fault == "drop" else ds.rename_column(spec.answers_field, "gold")
    with pytest.raises(AlignBenchError) as err:
        to_split(ds, spec, source=f"my {task} source")
    msg = str(err.value)
    assert f"my {task} source lacks column(s) ['{spec.answers_field}']" in msg and "\n" not in msg
    assert spec.hf_path in msg  # what to use instead


def test_empty_source_and_non_image_column_stop_with_one_line(tmp_path):
    spec = TASKS.get("docvqa")
    empty = _dataset("docvqa", [_row("docvqa", 0, "ok", tmp_path)]).select([])
    with pytest.raises(AlignBenchError, match="src has no rows"):
        to_split(empty, spec, source="src")
    ints = _dataset("docvqa", [_row("docvqa", 0, "ok", tmp_path)]).remove_columns("image").add_column("image", [7])
    with pytest.raises(AlignBenchError, match="src: column 'image' holds .*not images"):
        to_split(ints, spec, source="src")


# ---------------------------------------------------------------- bad data through a whole run


@pytest.mark.usefixtures("one_torch_thread")
def test_bad_rows_in_a_run_are_skipped_counted_and_reported(ws, tmp_path):
    """The evaluation source of a real run with injected faults: a corrupt image, an empty question, an empty
    answer list and an RGBA page. Three rows are skipped and counted (results.json, leaderboard, console);
    the RGBA page is scored; no skipped row is ever scored."""
    import datasets

    from alignbench.data import splits as data_module

    real = data_module.embedded_dataset
    faulty = []

    def with_faults(task, split, cfg, spec, cache, renderer=None):
        ds = real(task, split, cfg, spec, cache, renderer)
        if split != "eval":
            return ds
        rows = ds.cast_column("image", datasets.Image(decode=False)).to_list()
        faulty[:] = [r["questionId"] for r in rows[:3]]
        rows[0]["image"] = {"bytes": b"\x89PNG\r\n\x1a\n garbage", "path": None}
        rows[1]["question"] = "   "
        rows[2]["answers"] = []
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.open(io.BytesIO(rows[3]["image"]["bytes"])).convert("RGBA").save(buf, "PNG")
        rows[3]["image"] = {"bytes": buf.getvalue(), "path": None}
        return datasets.Dataset.from_list(rows, features=ds.features)

    logs = []
    cfg = RunConfig(connector="ovis", data=DATA, train=TrainConfig(steps=1, batch_size=2))
    with pytest.MonkeyPatch.context() as m:
        m.setattr(data_module, "embedded_dataset", with_faults)
        result = run(cfg, tmp_path, Workspace(cfg.backbone, cfg.data, "cpu", **QUIET), log=logs.append)
    run_dir = Path(result["run_dir"])
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["n"] == DATA.eval_questions - 3 and saved["n_skipped"] == 3
    assert saved["skipped"] == {"empty question": 1, "no gold answers": 1, "unreadable image": 1}
    scored = [json.loads(line)["uid"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(scored) == saved["n"] and len(faulty) == 3 and not set(faulty) & set(scored)
    assert any(
        "skipped 3 of 6 questions (1 empty question, 1 no gold answers, 1 unreadable image)" in str(x) for x in logs
    )
    assert read_leaderboard(tmp_path / "leaderboard.csv").n_skipped[0] == 3


@pytest.mark.usefixtures("one_torch_thread")
def test_wrong_source_stops_the_cli_with_one_line(tmp_path, monkeypatch, capsys):
    from alignbench.data import splits as data_module

    real = data_module.embedded_dataset
    monkeypatch.setattr(data_module, "embedded_dataset", lambda *a: real(*a).rename_column("answers", "answer_list"))
    code, _, err = main_in_process(
        monkeypatch,
        capsys,
        *("run", "--connector", "ovis", *flags(steps=1, train_docs=4, eval_questions=4)),
        "--output",
        tmp_path / "out",
    )
    assert code == 2
    assert "embedded docvqa/train set lacks column(s) ['answers']" in one_line(err)
    assert not (tmp_path / "out" / "leaderboard.csv").exists()


# ---------------------------------------------------------------- metrics on what the loader keeps

ascii_word = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)


@given(st.text(max_size=20), st.lists(ascii_word, min_size=1, max_size=3), st.lists(ascii_word, min_size=1, max_size=3))
def test_anls_bounds_and_best_of_answers(prediction, gold_a, gold_b):
    both = anls(prediction, gold_a + gold_b)
    assert 0.0 <= both <= 1.0
    assert both == max(anls(prediction, gold_a), anls(prediction, gold_b))


@given(st.text(alphabet=string.ascii_letters, min_size=1, max_size=12))
def test_relaxed_accuracy_text_is_case_insensitive_exact(word):
    """Words never parse as finite numbers ("nan", "inf" included), so they need a case-insensitive exact match."""
    assert relaxed_accuracy(word.upper(), word.lower()) == 1.0
    assert relaxed_accuracy(f"  {word} ", word) == 1.0
    assert relaxed_accuracy(word + "x", word) == 0.0


@given(st.floats(min_value=1.0, max_value=1e6), st.booleans())
def test_relaxed_accuracy_five_percent_band(value, negative):
    target = -value if negative else value
    assert relaxed_accuracy(repr(target * 1.04), repr(target)) == 1.0
    assert relaxed_accuracy(repr(target * 0.96), repr(target)) == 1.0
    assert relaxed_accuracy(repr(target * 1.06), repr(target)) == 0.0
    assert relaxed_accuracy(repr(target * 0.94), repr(target)) == 0.0
