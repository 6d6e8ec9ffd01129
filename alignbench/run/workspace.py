"""What every run of a process shares: the backbone, the splits and the frozen vision tower's features
(`Workspace`), so a sweep runs the vision tower once per task, not once per connector; the features are also
cached on disk (`alignbench.data.feature_cache`) for other processes and later sweeps."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import torch

from ..backbones import load_backbone
from ..backbones.base import Backbone, LazyFeatures, PatchBatch
from ..backbones.prepared import cache_root
from ..config.backbone import BackboneConfig
from ..config.data import DataConfig
from ..data.embedded.page import PageSpec
from ..data.feature_cache import FeatureCache, compute_features
from ..data.splits import Split, load_split
from ..dist.context import context, device_for
from ..task import Task


def resolve_device(device: str) -> str:
    """ "auto" is CUDA when there is a GPU; with several processes each takes its own (cuda:LOCAL_RANK)."""
    return device_for(device, context())


def quiet_libraries() -> None:
    """Our own progress bars and messages replace the libraries' per-file loading bars."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


# Vision features of a split are computed once and kept in memory up to this size; larger splits (real
# datasets, tiling) run the frozen tower on each batch's pages instead (`LazyFeatures`).
PRECOMPUTE_BYTES = 2 * 2**30


class Workspace:
    """Shared, read-only state across the runs of one process: backbone, splits, vision features.

    With `feature_cache` (the default) the frozen tower's features also go to disk
    (`alignbench.data.feature_cache`), so other processes and later sweeps read them instead of running the
    tower again. `seconds` adds up where this workspace's time went ("data", "features")."""

    def __init__(
        self, backbone_cfg: BackboneConfig, data_cfg: DataConfig, device: str, log=print, feature_cache: bool = True
    ):
        self.backbone_cfg, self.data_cfg, self.device, self.log = backbone_cfg, data_cfg, device, log
        self._backbone: Backbone | None = None
        self._splits: dict[tuple[str, str, str], tuple[Split, torch.Tensor | PatchBatch | LazyFeatures]] = {}
        self.precompute_bytes = PRECOMPUTE_BYTES
        self.features = FeatureCache(cache_root(), log) if feature_cache else None
        self.seconds = {"data": 0.0, "features": 0.0}

    @property
    def backbone(self) -> Backbone:
        if self._backbone is None:
            self._backbone = b = load_backbone(self.backbone_cfg, device=self.device)
            if b.dtype is not None:
                self.log(
                    f"backbone {b.key}: {b.dtype} on {self.device}, {b.num_patches} patches per tile, tiles per "
                    f"image at most {b.max_tiles}" + (" + thumbnail" if b.max_tiles > 1 else "")
                )
        return self._backbone

    def data(self, task: Task, name: str, data_cfg: DataConfig | None = None) -> Split:
        """The split's samples and images (generated and cached on disk once), without vision features."""
        return load_split(
            task,
            name,
            data_cfg or self.data_cfg,
            self.backbone.page or PageSpec(),
            cache_root(),
            self.backbone.renderer,
        )

    def split(self, task: Task, name: str, data_cfg: DataConfig | None = None) -> tuple[Split, torch.Tensor]:
        """Samples and vision features of a split, for `data_cfg` (default: the workspace's); runs with
        different data seeds share the workspace without sharing their pages."""
        data_cfg = data_cfg or self.data_cfg
        key = (task.name, name, json.dumps(asdict(data_cfg), sort_keys=True))
        if key not in self._splits:
            _ = self.backbone  # loaded first, so that its time is not counted as data
            t0 = time.time()
            split = self.data(task, name, data_cfg)
            t1 = time.time()
            size = len(split.images) * self.backbone.max_patches * self.backbone.vision_dim * 4
            if size <= self.precompute_bytes:
                if self.features is not None:  # [n_images, N, d], or a PatchBatch for tiles of different grids
                    feats, cached = self.features.get(self.backbone, split.images, self.device)
                else:
                    feats, cached = compute_features(self.backbone, split.images, self.device), False
                how = "read from the feature cache" if cached else "computed"
            else:
                feats = LazyFeatures(self.backbone, split.images, self.device)
                how = f"computed per batch, {size / 2**30:.1f} GiB would not be kept (nor cached)"
            t2 = time.time()
            self.seconds["data"] += t1 - t0
            self.seconds["features"] += t2 - t1
            self.log(
                f"{task.name}/{name}: {len(split.samples)} questions on {len(split.images)} pages "
                f"(data {t1 - t0:.1f} s, vision features {t2 - t1:.1f} s, {how})"
            )
            self._splits[key] = (split, feats)
        return self._splits[key]
