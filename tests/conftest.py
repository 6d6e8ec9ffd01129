import os

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
    from alignbench.tiny import load_tiny

    return load_tiny(log=lambda *a: None)
