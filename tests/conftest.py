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
