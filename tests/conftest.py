import os

# Under pytest-xdist every core runs a worker: one thread per worker (and per process it starts) keeps the
# workers from oversubscribing the cores with spinning OpenMP threads. Set before anything imports torch.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import pytest


@pytest.fixture(autouse=True, scope="session")
def _hermetic_cache(tmp_path_factory):
    """Datasets and prepared backbones go to a per-session folder; the hub is never contacted."""
    os.environ["ALIGNBENCH_CACHE"] = str(tmp_path_factory.mktemp("alignbench-cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    yield


@pytest.fixture(scope="session")
def tiny_backbone():
    from alignbench.backbones.tiny import load_tiny

    return load_tiny(log=lambda *a: None)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's in-process training (tiny matrices gain nothing from threads that wait on
    each other, and compared runs then use the same thread count)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ctx(tiny_backbone):
    """The tiny backbone's dimensions and LLM, as a connector is built with them."""
    from alignbench.connector import ConnectorContext

    b = tiny_backbone
    return ConnectorContext(b.vision_dim, b.llm_dim, b.num_patches, b.llm)


@pytest.fixture(scope="module")
def ws():
    """A workspace of the tiny backbone on small embedded sets (4 training pages, 6 evaluation questions), one per
    module: modules that train in it never share its cached splits with another module."""
    from alignbench.config.backbone import BackboneConfig
    from alignbench.config.data import DataConfig
    from alignbench.run.workspace import Workspace

    return Workspace(BackboneConfig(), DataConfig(train_docs=4, eval_questions=6), "cpu", log=lambda *a, **k: None)


# Tiny Hugging Face pairs (tests/support/hf.py), by the kind a test asks for.
PAIRS = {
    "plain": {},  # 32 x 32 pages of 4 patches, a character tokenizer
    "chat": {"chat": True},  # ... with a Llama-3-style chat template (and tiles of 32 x 32 where tiling is on)
    "full": {"full_siglip": True, "bos": True},  # the whole SigLIP checkpoint; a tokenizer that puts BOS first
    "large": {"image_size": 96},  # 96 x 96 pages of 36 patches
}


@pytest.fixture(scope="session")
def hf_pair(tmp_path_factory):
    """`hf_pair(kind)`: (vision folder, LLM folder) of a tiny pair saved with save_pretrained, built once per session
    and kind; tests only read them."""
    from tests.support.hf import save_pair

    built = {}

    def pair(kind: str = "plain"):
        if kind not in built:
            built[kind] = save_pair(tmp_path_factory.mktemp(f"pair-{kind}"), **PAIRS[kind])
        return built[kind]

    return pair
