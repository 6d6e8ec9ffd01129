"""The shared vision-feature cache: what it returns is what the tower computes; any change of weights,
preprocessing or images is another entry; a damaged entry is never served; concurrent processes compute
an entry once; the pipeline reads it across workspaces and can be told not to."""

import functools
import json
import multiprocessing as mp
import os
from pathlib import Path

import pytest
import torch

from alignbench.config.backbone import BackboneConfig
from alignbench.config.data import DataConfig
from alignbench.data.feature_cache import VISION_DIGESTS, FeatureCache, describe_transform, feature_key
from alignbench.run.workspace import Workspace
from alignbench.task import TASKS
from tests.support import workers
from tests.support.cli import cli, flags
from tests.support.hf import tiled_pages


class Counting:
    """Wraps a backbone's encode_images to count the vision tower's runs."""

    def __init__(self, backbone):
        self.backbone, self.calls = backbone, 0
        self._encode = backbone.encode_images

    def __enter__(self):
        def encode(images, **kw):
            self.calls += 1
            return self._encode(images, **kw)

        self.backbone.encode_images = encode
        return self

    def __exit__(self, *exc):
        del self.backbone.encode_images  # back to the class's method


@pytest.fixture
def cache(tmp_path):
    logged = []
    return FeatureCache(tmp_path, log=logged.append), logged


def test_a_hit_is_exactly_what_the_tower_computes(tiny_backbone, cache):
    store, _ = cache
    images = workers.pages(5)
    want = tiny_backbone.encode_images(images)
    with Counting(tiny_backbone) as counter:
        first, cached_first = store.get(tiny_backbone, images)
        second, cached_second = store.get(tiny_backbone, images)
    assert (cached_first, cached_second) == (False, True) and counter.calls == 1
    assert torch.equal(first, want) and torch.equal(second, want)
    assert len(list(store.dir.glob("*.safetensors"))) == 1 and not list(store.dir.glob(".*.tmp*"))


def test_any_change_is_another_entry(tiny_backbone):
    images = workers.pages(3)
    base = feature_key(tiny_backbone, images, "cpu")
    assert feature_key(tiny_backbone, workers.pages(3), "cpu") == base  # the same content, rebuilt
    changed = workers.pages(3)
    changed[1].putpixel((5, 7), (0, 0, 1))  # one pixel of one page
    assert feature_key(tiny_backbone, changed, "cpu") != base
    assert feature_key(tiny_backbone, images[::-1], "cpu") != base  # the order of the pages
    assert feature_key(tiny_backbone, images, "cuda") != base  # another device computes other last bits
    weights = VISION_DIGESTS.pop(tiny_backbone.vision)
    try:
        with torch.no_grad():
            p = next(tiny_backbone.vision.parameters())
            p[(0,) * p.dim()] += 1e-3
            assert feature_key(tiny_backbone, images, "cpu") != base
            p[(0,) * p.dim()] -= 1e-3
        VISION_DIGESTS.pop(tiny_backbone.vision)
        assert feature_key(tiny_backbone, images, "cpu") == base
    finally:
        VISION_DIGESTS[tiny_backbone.vision] = weights


class _Undescribed:
    """A transform `describe_transform` cannot describe (an object with state it does not know)."""

    def __init__(self, inner, scale):
        self.inner, self.scale = inner, scale

    def __call__(self, images):
        return self.inner(images) * self.scale


def test_preprocessing_is_part_of_the_key(tiny_backbone):
    images = workers.pages(2)
    # The embedded transform: a functools.partial of a module-level function (named and hashed) and its size.
    assert "glyph_transform" in describe_transform(tiny_backbone.image_transform)
    base = feature_key(tiny_backbone, images, "cpu")
    original = tiny_backbone.image_transform
    try:
        tiny_backbone.image_transform = functools.partial(original.func, size=(48, 48))  # another bound value
        assert feature_key(tiny_backbone, images, "cpu") != base
        tiny_backbone.image_transform = lambda ims: original(ims)  # a closure over a described transform
        assert describe_transform(tiny_backbone.image_transform) is not None
        assert feature_key(tiny_backbone, images, "cpu") != base  # its own source is part of the description
        tiny_backbone.image_transform = _Undescribed(original, 1.0)  # keyed by the pixels it produces
        assert describe_transform(tiny_backbone.image_transform) is None
        same_pixels = feature_key(tiny_backbone, images, "cpu")
        tiny_backbone.image_transform = _Undescribed(original, 0.5)
        assert feature_key(tiny_backbone, images, "cpu") != same_pixels != base
    finally:
        tiny_backbone.image_transform = original


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flipped byte":
        data[-5] ^= 0x40  # inside the tensor's bytes: still a valid safetensors file
    elif how == "truncated":
        data = data[: len(data) // 2]
    elif how == "empty":
        data = bytearray()
    elif how == "garbage":
        data = bytearray(b"not a safetensors file at all" * 10)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flipped byte", "truncated", "empty", "garbage"])
def test_a_damaged_entry_is_recomputed_not_served(tiny_backbone, cache, how):
    store, logged = cache
    images = workers.pages(4)
    want, _ = store.get(tiny_backbone, images)
    (path,) = store.dir.glob("*.safetensors")
    _damage(path, how)
    with Counting(tiny_backbone) as counter:
        got, cached = store.get(tiny_backbone, images)
    assert not cached and counter.calls == 1 and torch.equal(got, want)
    assert any(path.name in line and "recomputing" in line for line in logged)
    logged.clear()
    again, cached = store.get(tiny_backbone, images)  # the entry was replaced by a good one
    assert cached and torch.equal(again, want) and not logged


def test_an_entry_under_another_name_is_not_served(tiny_backbone, cache):
    store, logged = cache
    a, b = workers.pages(3, seed=1), workers.pages(3, seed=2)
    store.get(tiny_backbone, a)
    key_b = feature_key(tiny_backbone, b, "cpu")
    os.replace(next(store.dir.glob("*.safetensors")), store.path(key_b))  # a's features under b's name
    want = tiny_backbone.encode_images(b)
    got, cached = store.get(tiny_backbone, b)
    assert not cached and torch.equal(got, want) and any("another key" in line for line in logged)


def test_concurrent_processes_compute_an_entry_once(tmp_path):
    ctx = mp.get_context("spawn")
    gate, result = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=workers.features_from_cache, args=(str(tmp_path), gate, result)) for _ in range(4)]
    for p in procs:
        p.start()
    outs = [result.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sum(misses for misses, _, _ in outs) == 1  # one process ran the tower, three read its entry
    assert len({(s, head) for _, s, head in outs}) == 1
    assert len(list((tmp_path / "features").glob("*.safetensors"))) == 1
    assert not list((tmp_path / "features").glob(".*.tmp*"))


def test_workspaces_share_features_through_the_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNBENCH_CACHE", str(tmp_path))
    data = DataConfig(train_docs=3, eval_questions=4)
    task = TASKS.get("docvqa")
    first = Workspace(BackboneConfig(), data, "cpu", log=lambda *a: None)
    _, feats = first.split(task, "eval")
    second = Workspace(BackboneConfig(), data, "cpu", log=lambda *a: None)
    _, again = second.split(task, "eval")
    assert (first.features.misses, second.features.misses, second.features.hits) == (1, 0, 1)
    assert torch.equal(feats, again)
    off = Workspace(BackboneConfig(), data, "cpu", log=lambda *a: None, feature_cache=False)
    _, computed = off.split(task, "eval")
    assert off.features is None and torch.equal(computed, feats)
    assert len(list((tmp_path / "features").glob("*.safetensors"))) == 1  # nothing written without the cache


def test_the_thread_count_does_not_change_the_features(tiny_backbone):
    """Why the key leaves the thread count out: a serial sweep (all cores) and the one-thread workers of a
    parallel sweep read each other's entries."""
    images = workers.pages(8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = tiny_backbone.encode_images(images)
        torch.set_num_threads(2)
        two = tiny_backbone.encode_images(images)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_the_command_line_switch(tmp_path):
    """`--no-feature-cache` computes the features and writes nothing; the default writes one entry per split
    and gives the same predictions."""
    small = flags(steps=2, batch_size=2, train_docs=3, eval_questions=3)
    args = ["run", "--connector", "mlp", "--task", "docvqa", *small]
    outputs = {}
    for name, extra in (("off", ["--no-feature-cache"]), ("on", [])):
        res = cli(*args, *extra, "--output", tmp_path / name, env={"ALIGNBENCH_CACHE": str(tmp_path / "cache")})
        assert res.returncode == 0, res.stderr
        (run_dir,) = (tmp_path / name / "runs").iterdir()
        outputs[name] = run_dir
        if name == "off":
            assert not (tmp_path / "cache" / "features").exists()
    assert len(list((tmp_path / "cache" / "features").glob("*.safetensors"))) == 2  # train and eval
    assert (outputs["on"] / "predictions.jsonl").read_text() == (outputs["off"] / "predictions.jsonl").read_text()
    result = json.loads((outputs["on"] / "results.json").read_text())
    assert result["features_seconds"] >= 0 and result["data_seconds"] >= 0


def test_an_unwritable_cache_computes_and_says_so(tiny_backbone, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    logged = []
    store = FeatureCache(blocker, log=logged.append)
    images = workers.pages(2)
    got, cached = store.get(tiny_backbone, images)
    assert not cached and torch.equal(got, tiny_backbone.encode_images(images))
    assert any("cannot write" in line for line in logged)


# ---------------------------------------------------------------- real backbones: processors, tiling, mixtures


@pytest.fixture(scope="module")
def pair(hf_pair):
    return hf_pair("chat")  # 32 x 32 tiles of 4 patches


def test_tiled_pages_with_different_grids_round_trip(pair, cache):
    """A PatchBatch (pages with 3, 1 and 5 tiles) comes back from the cache as it was computed: the same
    values and patch counts; the processor is described by its settings, not by running it."""
    from alignbench.backbones import load_backbone
    from alignbench.backbones.base import PatchBatch

    store, _ = cache
    backbone = load_backbone(BackboneConfig("hf", str(pair[0]), str(pair[1]), max_tiles=4))
    assert "SiglipImageProcessor" in describe_transform(backbone.image_transform)  # the closure's processor
    pages = tiled_pages()
    want = backbone.encode_images(pages)
    assert isinstance(want, PatchBatch)
    first, cached_first = store.get(backbone, pages)
    second, cached_second = store.get(backbone, pages)
    assert (cached_first, cached_second) == (False, True)
    assert isinstance(second, PatchBatch) and torch.equal(second.lengths, want.lengths)
    assert torch.equal(second.values, want.values)
    even, _ = store.get(backbone, [pages[1], pages[1]])  # one grid: a plain tensor, as encode_images gives
    assert isinstance(even, torch.Tensor) and torch.equal(store.get(backbone, [pages[1], pages[1]])[0], even)


def test_tiling_and_processor_settings_are_part_of_the_key(pair):
    from alignbench.backbones import load_backbone

    pages = tiled_pages()
    keys = {
        tiles: feature_key(
            load_backbone(BackboneConfig("hf", str(pair[0]), str(pair[1]), max_tiles=tiles)), pages, "cpu"
        )
        for tiles in (1, 2, 4)
    }
    assert len(set(keys.values())) == 3  # the same tower and pages cut into other tiles
    backbone = load_backbone(BackboneConfig("hf", str(pair[0]), str(pair[1]), max_tiles=4))
    processor = next(c.cell_contents for c in backbone.image_transform.__closure__)
    processor.image_mean = [0.4, 0.4, 0.4]
    assert feature_key(backbone, pages, "cpu") != keys[4]


def test_a_task_mixture_caches_each_training_split(tmp_path, monkeypatch):
    """`--train-tasks docvqa,chartqa`: one entry per training split and one for the evaluated split; a fresh
    workspace (another process, a later sweep) reads all three and trains and scores exactly the same."""
    import dataclasses

    from alignbench.config.run import RunConfig
    from alignbench.config.train import TrainConfig
    from alignbench.run.pipeline import run

    monkeypatch.setenv("ALIGNBENCH_CACHE", str(tmp_path / "cache"))
    data = DataConfig(train_docs=3, eval_questions=3, train_tasks=["docvqa", "chartqa"])
    cfg = RunConfig(
        connector="mlp",
        task="docvqa",
        data=data,
        device="cpu",
        train=TrainConfig(steps=2, batch_size=2, warmup_steps=1),
    )
    quiet = {"log": lambda *a, **k: None}
    first = Workspace(BackboneConfig(), data, "cpu", **quiet)
    a = run(cfg, tmp_path / "a", first, **quiet)
    assert (first.features.misses, first.features.hits) == (3, 0)
    assert len(list((tmp_path / "cache" / "features").glob("*.safetensors"))) == 3
    second = Workspace(BackboneConfig(), data, "cpu", **quiet)
    b = run(dataclasses.replace(cfg), tmp_path / "b", second, **quiet)
    assert (second.features.misses, second.features.hits) == (0, 3)
    assert (a["score"], a["final_loss"]) == (b["score"], b["final_loss"])
    predictions = [(Path(r["run_dir"]) / "predictions.jsonl").read_text() for r in (a, b)]
    assert predictions[0] == predictions[1]
