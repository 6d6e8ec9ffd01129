"""Tiling (`--max-tiles`): grids chosen by aspect ratio plus a thumbnail, features of all tiles for every connector,
images with different grids in one batch."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from alignbench.backbones import load_backbone
from alignbench.backbones.base import PatchBatch
from alignbench.backbones.tiling import tile_grid, tile_image
from alignbench.config.backbone import BackboneConfig
from alignbench.connector import CONNECTORS, build_connector
from alignbench.model.vlm import VLM
from tests.support.cli import flags, main_in_process
from tests.support.hf import real_schema_rows, tiled_pages
from tests.support.runs import only_run_dir

SMALL = flags(steps=2, batch_size=2, train_docs=3, eval_questions=4, eval_batch_size=4)


@pytest.mark.parametrize(
    "size,max_tiles,grid",
    [
        ((1000, 500), 9, (4, 2)),  # aspect 2: (2, 1) and (4, 2) tie; a large page gets the finer grid
        ((100, 50), 9, (2, 1)),  # ... a small one does not (10,000 px < half of 8 tiles of 100 x 100)
        ((900, 900), 9, (3, 3)),
        ((40, 40), 9, (1, 1)),
        ((300, 900), 9, (1, 3)),  # tall
        ((1000, 500), 4, (2, 1)),  # (4, 2) is over the limit
        ((1000, 100), 4, (4, 1)),  # aspect 10: the widest grid allowed
        ((700, 500), 1, (1, 1)),  # no tiling
    ],
)
def test_the_grid_follows_the_aspect_ratio(size, max_tiles, grid):
    assert tile_grid(*size, max_tiles, tile=100) == grid


def test_tiles_then_a_thumbnail():
    image = Image.new("RGB", (200, 100), "white")
    image.paste((255, 0, 0), (0, 0, 100, 100))  # left half red
    tiles = tile_image(image, 4, 50)
    assert len(tiles) == 2 * 1 + 1 and all(t.size == (50, 50) for t in tiles)
    assert tiles[0].getpixel((25, 25)) == (255, 0, 0) and tiles[1].getpixel((25, 25)) == (255, 255, 255)
    assert np.array_equal(np.asarray(tiles[-1]), np.asarray(image.resize((50, 50), Image.BICUBIC)))  # thumbnail
    assert len(tile_image(Image.new("RGB", (50, 50)), 4, 50)) == 1  # one tile: no thumbnail


@pytest.fixture(scope="module")
def tiled(hf_pair):
    vision, llm = hf_pair("chat")  # 32 x 32 tiles of 4 patches
    return load_backbone(BackboneConfig("hf", str(vision), str(llm), max_tiles=4))


PAGES = tiled_pages()


def test_images_with_different_grids_come_back_as_a_patch_batch(tiled):
    feats = tiled.encode_images(PAGES)
    # 64x32: 2 tiles + thumbnail; 32x32: 1 tile; 128x128: 2x2 tiles + thumbnail (4 patches per tile)
    assert isinstance(feats, PatchBatch) and feats.lengths.tolist() == [12, 4, 20]
    assert tiled.max_patches == 4 * 5 and feats.shape == (3, 20, 32)
    for k, page in enumerate(PAGES):
        alone = tiled.encode_images([page])
        assert isinstance(alone, torch.Tensor) and alone.shape[1] == feats.lengths[k]
        torch.testing.assert_close(feats.values[k, : alone.shape[1]], alone[0], atol=1e-5, rtol=1e-5)
        assert feats.values[k, alone.shape[1] :].abs().sum() == 0
    same = feats[[0, 0]]  # a selection with one grid is a plain tensor
    assert isinstance(same, torch.Tensor) and same.shape == (2, 12, 32)


@pytest.mark.parametrize("connector", CONNECTORS.names())
def test_every_connector_reads_all_tiles_and_padding_changes_nothing(connector, tiled):
    model = VLM(tiled, build_connector(connector, tiled.connector_context()))
    feats = tiled.encode_images(PAGES)
    tokens, mask = model.visual_tokens_masked(feats)
    for k, n in enumerate(feats.lengths.tolist()):
        assert mask[k].sum() == model.connector.num_tokens(n)  # what the connector declares for all its tiles
    # The question is scored the same in a batch of mixed grids (left-padded visual tokens) as alone.
    tok = tiled.tokenizer
    from alignbench.prompt import prompt_format

    prompt = prompt_format(tok).prompt_ids(tok, "What is the DATE?")
    answer = tok("12", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([prompt + answer] * 3)
    labels = torch.tensor([[-100] * len(prompt) + answer] * 3)
    batch, _ = model.continuation_logprobs(feats, ids, torch.ones_like(ids), labels)
    alone = [
        model.continuation_logprobs(tiled.encode_images([p]), ids[:1], torch.ones_like(ids[:1]), labels[:1])[0][0]
        for p in PAGES
    ]
    assert batch == pytest.approx(alone, abs=1e-4)
    # ... and trains: a finite gradient for every connector parameter
    loss = model.loss(feats, ids, torch.ones_like(ids), labels)
    loss.backward()
    grads = [p.grad for p in model.connector.parameters() if p.requires_grad]
    assert torch.isfinite(loss) and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_generation_pads_mixed_grids_to_the_same_answers(tiled):
    model = VLM(tiled, build_connector("mlp", tiled.connector_context()))
    tok = tiled.tokenizer
    from alignbench.prompt import prompt_format

    prompt = prompt_format(tok).prompt_ids(tok, "What is it?")
    batch = model.generate(tiled.encode_images(PAGES), [prompt] * 3, 4)
    assert batch == [model.generate(tiled.encode_images([p]), [prompt], 4)[0] for p in PAGES]


@pytest.mark.parametrize("connector", CONNECTORS.names())
def test_pages_prefilled_once_with_mixed_grids_answer_as_hugging_face_generate(connector, tiled):
    """Pages with different tile counts (a PatchBatch: different numbers of visual tokens), each prefilled once
    for the questions about it, with the chat template's prefix before the visual tokens: every answer is what
    one Hugging Face `generate` call on that question alone returns."""
    torch.manual_seed(0)
    model = VLM(tiled, build_connector(connector, tiled.connector_context()))
    assert model.prefix_ids  # the chat template's head of the user turn
    tok = tiled.tokenizer
    from alignbench.prompt import prompt_format

    prompts = [
        prompt_format(tok).prompt_ids(tok, q)
        for q in ["What is it?", "Which colour is the box at the top?", "Why?", "What is the DATE on the page?"]
    ]
    assert len({len(p) for p in prompts}) == 4
    feats = tiled.encode_images(PAGES)
    pages = [2, 0, 2, 1]  # page 2 (20 patches) is read by two questions, page 1 (4 patches) by one
    reference = [model.generate_reference(tiled.encode_images([PAGES[p]]), [q], 6)[0] for p, q in zip(pages, prompts)]
    assert model.generate(feats, prompts, 6, pages=pages) == reference
    assert model.generate(feats[[0, 2]], prompts[:2], 6, pages=[1, 0]) == [reference[0], reference[1]]
    assert model.generate_reference(feats[pages], prompts, 6) == reference


def _tiled_run(connector: str, validation: list, pair, tmp_path, monkeypatch, capsys):
    """`alignbench run --max-tiles 4` of CONNECTOR on a saved pair, over a local DocVQA copy trained on wide pages and
    evaluated on VALIDATION's pages ((number, size) each); its run directory."""
    import datasets

    data = tmp_path / "docvqa"
    datasets.DatasetDict(
        {
            "train": real_schema_rows("docvqa", "train", 3, size=(96, 48)),
            "validation": datasets.concatenate_datasets(
                [real_schema_rows("docvqa", "eval", n, size=size) for n, size in validation]
            ),
        }
    ).save_to_disk(str(data))
    vision, llm = pair
    code, _, err = main_in_process(
        monkeypatch,
        capsys,
        *("run", "--connector", connector, "--backbone", "hf", "--vision", vision, "--llm", llm, "--data", data),
        *("--max-tiles", 4, *SMALL, "--output", tmp_path / "out"),
    )
    assert code in (0, None), err
    return only_run_dir(tmp_path / "out")


def test_a_tiled_run_records_the_largest_image_it_can_see(tmp_path, hf_pair, monkeypatch, capsys):
    """The CLI with --max-tiles on pages wider than tall, trained and evaluated."""
    run_dir = _tiled_run("perceiver", [(4, (96, 48))], hf_pair("plain"), tmp_path, monkeypatch, capsys)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["dims"]["max_patches"] == 4 * 5 and config["connector_tokens_max"] == 64
    assert config["backbone_key"].endswith("|tiles4") and config["backbone"]["max_tiles"] == 4
    with pytest.raises(Exception, match="--max-tiles needs a Hugging Face backbone"):
        BackboneConfig("tiny", max_tiles=2).validate()


def test_the_vocabulary_probe_streams_every_patch_of_pages_with_different_grids(tmp_path, hf_pair, monkeypatch, capsys):
    """ALIGN on tiled pages of three grids: the streamed vocabulary statistics cover every real patch of every
    tile (no padding) and equal those of the materialised distribution."""
    from alignbench.probes.vocab import vocab_probe
    from alignbench.run.checkpoint_eval import load_run
    from alignbench.task import TASKS

    pages = [(2, size) for size in [(96, 48), (32, 32), (128, 128)]]
    run_dir = _tiled_run("align", pages, hf_pair("plain"), tmp_path, monkeypatch, capsys)
    model, _, ws = load_run(run_dir, "cpu", log=lambda *a: None)
    _, feats = ws.split(TASKS.get("docvqa"), "eval")
    assert isinstance(feats, PatchBatch) and len(set(feats.lengths.tolist())) > 1
    probe = vocab_probe(run_dir, ws, docs=len(feats), top_ks=[10], log=lambda *a: None)
    c = model.connector
    with torch.no_grad():
        probs = torch.cat(
            [torch.softmax(c.ln2(c.w2(c.ln1(c.w1(g)))).double(), -1).flatten(0, 1) for _, g in feats.groups()]
        )  # [patches, V]
    assert probe["patches"] == int(feats.lengths.sum()) == probs.shape[0]
    avg = probs.mean(0)
    assert probe["averaged"]["max_prob"] == pytest.approx(avg.max().item(), rel=1e-4)
    assert probe["per_patch"]["mean_top_prob"] == pytest.approx(probs.max(-1).values.mean().item(), rel=1e-4)
