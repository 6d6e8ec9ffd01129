"""Frozen vision features on disk, shared by every run and every process that needs the same ones.

The vision tower is frozen in every stage, so its features for a split depend only on the tower's weights,
the preprocessing and the images. A sweep (4 connectors x 3 tasks, in any number of worker processes), a
learning-rate search or a repeated sweep therefore runs the tower once per split and backbone; later
runs read `CACHE/features/<key>.safetensors` (`CACHE` = $ALIGNBENCH_CACHE, default ~/.cache/alignbench).

The key is a SHA-256 of
  1. the vision tower: its class and every parameter and buffer (names, shapes, dtypes, bytes);
  2. the preprocessing: `describe_transform` of the backbone's image transform (an image processor's JSON
     configuration; a module-level function's qualified name and source; a `functools.partial` or a closure
     by its function and the description of every value it binds, e.g. the Hugging Face processor inside
     the real backbones' transform); a transform it cannot describe is keyed by the pixel tensors it
     produces for these very images (their tiles, when the backbone tiles);
  3. tiling: the largest grid, the tile size and the source of the tiling functions (`tile_image`,
     `tile_grid`), so pages cut into other tiles are another entry;
  4. the images, in order: mode, size and pixels of each (decoded pages of a real dataset too);
  5. how the features are computed: batch size, device type, the torch, transformers and Pillow versions
     and `FORMAT`.
So a changed weight, processor setting, tiling, page or library gives another key: an entry is never stale.
Nothing else changes the features: which run, task mixture (`--train-tasks`), data seed or `--limit` asked
for a split only changes its pages, which are in the key. The thread count is left out: the embedded
tower's features are bit-identical with 1 and 2 threads (a test checks it), so a serial sweep (all cores)
and the one-thread workers of a parallel one share entries.

An entry holds the float32 tensor "features" [n_images, N, d] and, for tiled pages with different grids
(a `PatchBatch`), the patch count of each image, "lengths" [n_images]; as metadata, its key and the SHA-256
of its bytes, checked on every read: a truncated, tampered or foreign file is a miss (recomputed and
replaced, with a line in the log), never served. Writes go to a temporary file in the same folder, are
synced and renamed, so a reader sees a whole entry or none (`alignbench.io`). A per-key lock file makes concurrent
processes compute a missing entry once: the others wait and read it. safetensors and JSON only, no pickle.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import weakref
from pathlib import Path

import torch

from ..backbones import tiling
from ..backbones.base import PatchBatch, compact
from ..io import atomic_path, lock

FORMAT = "features-v2"
ENCODE_BATCH = 64  # images per vision-tower call (part of the key: batching can change the last bits)


def describe_transform(transform) -> str | None:
    """A stable description of an image transform, or None when there is none to give."""
    for attr in ("to_json_string", "to_json"):  # Hugging Face image processors
        method = getattr(transform, attr, None)
        if callable(method):
            return f"{type(transform).__module__}.{type(transform).__qualname__}:{method()}"
    if isinstance(transform, functools.partial):
        inner = describe_transform(transform.func)
        bound = [_describe_value(v) for v in (*transform.args, *transform.keywords.values())]
        if inner is None or None in bound:
            return None
        args, keywords = bound[: len(transform.args)], dict(zip(transform.keywords, bound[len(transform.args) :]))
        return f"partial({inner}, {args}, {keywords})"
    if not inspect.isfunction(transform):
        return None
    try:
        source = inspect.getsource(transform)
    except (OSError, TypeError):
        return None
    name = f"{transform.__module__}.{transform.__qualname__}:{hashlib.sha256(source.encode()).hexdigest()}"
    if transform.__closure__ is None:
        return name
    bound = []  # a closure: its source and every value it binds, each described
    for var, cell in zip(transform.__code__.co_freevars, transform.__closure__):
        try:
            value = _describe_value(cell.cell_contents)
        except ValueError:  # an empty cell
            return None
        if value is None:
            return None
        bound.append(f"{var}={value}")
    return f"{name}[{', '.join(bound)}]"


def _describe_value(value) -> str | None:
    """A bound value of a transform: a constant (JSON), or something `describe_transform` describes."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return json.dumps(value)
    if isinstance(value, (tuple, list)):
        items = [_describe_value(v) for v in value]
        return None if None in items else f"[{', '.join(items)}]"
    return describe_transform(value)


def tiling_description(backbone) -> dict:
    """The tiling that decides which tiles the tower sees: none, or the grid limit, tile size and its code."""
    tiles = backbone.max_tiles
    if tiles <= 1:
        return {"max_tiles": 1}
    code = "".join(inspect.getsource(f) for f in (tiling.tile_grid, tiling.tile_image))
    return {"max_tiles": tiles, "tile_size": backbone.tile_size, "code": hashlib.sha256(code.encode()).hexdigest()}


def vision_digest(vision: torch.nn.Module) -> str:
    """SHA-256 of the tower's class and of every parameter and buffer."""
    h = hashlib.sha256(f"{type(vision).__module__}.{type(vision).__qualname__}".encode())
    for name, tensor in vision.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(json.dumps([name, list(t.shape), str(t.dtype)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def images_digest(images) -> str:
    """Of the pages in order (a list, or a real dataset's lazily decoded pages)."""
    h = hashlib.sha256()
    for k in range(len(images)):
        im = images[k]
        h.update(json.dumps([im.mode, list(im.size)]).encode())
        h.update(im.tobytes())
    return h.hexdigest()


def _pixels_digest(backbone, images) -> str:
    """Of the pixel tensors the tower sees (each page's tiles when the backbone tiles)."""
    h = hashlib.sha256()
    for i in range(0, len(images), ENCODE_BATCH):
        batch = [t for k in range(i, min(i + ENCODE_BATCH, len(images))) for t in backbone.tiles(images[k])]
        pixels = backbone.image_transform(batch).contiguous()
        h.update(json.dumps([list(pixels.shape), str(pixels.dtype)]).encode())
        h.update(pixels.numpy().tobytes())
    return h.hexdigest()


# The tower digests computed so far, by tower (once per loaded tower; forgotten with it).
VISION_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def feature_key(backbone, images: list, device: str) -> str:
    if backbone.vision not in VISION_DIGESTS:
        VISION_DIGESTS[backbone.vision] = vision_digest(backbone.vision)
    transform = describe_transform(backbone.image_transform)
    preprocessing = {"transform": transform} if transform else {"pixels": _pixels_digest(backbone, images)}
    parts = {
        "format": FORMAT,
        "vision": VISION_DIGESTS[backbone.vision],
        **preprocessing,
        "tiling": tiling_description(backbone),
        "images": images_digest(images),
        "n": len(images),
        "batch": ENCODE_BATCH,
        "device": torch.device(device).type,
        "versions": _library_versions(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


@functools.cache
def _library_versions() -> dict:
    import PIL
    import transformers

    return {
        "torch": torch.__version__.split("+")[0],
        "transformers": transformers.__version__,
        "pillow": PIL.__version__,
    }


def _tensor_digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


class FeatureCache:
    """`get(backbone, images, device)`: the features from disk, or computed, stored and returned."""

    def __init__(self, root: Path, log=print):
        self.dir = Path(root) / "features"
        self.log = log
        self.hits = self.misses = 0

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.safetensors"

    def read(self, key: str, backbone=None, n_images: int | None = None) -> torch.Tensor | PatchBatch | None:
        """The entry's features if it is whole, has this key (and, given the backbone, the shape its features
        have for `n_images` pages) and its bytes match its digest."""
        from safetensors import safe_open

        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                features = f.get_tensor("features")
                lengths = f.get_tensor("lengths") if "lengths" in f.keys() else None
            problem = None
            if meta.get("key") != key:
                problem = "it was written for another key"
            elif backbone is not None and (shape := _shape_problem(features, lengths, backbone, n_images)):
                problem = shape
            elif meta.get("sha256") != _tensor_digest(features, *([] if lengths is None else [lengths])):
                problem = "its bytes do not match their checksum"
        except Exception as exc:  # safetensors raises several types on a truncated or garbled file
            problem = f"it cannot be read ({type(exc).__name__}: {exc})"
        if problem:
            self.log(f"feature cache: {path.name} is not used, {problem}; recomputing it")
            return None
        return features if lengths is None else compact(features, lengths)

    def write(self, key: str, features: torch.Tensor | PatchBatch) -> None:
        from safetensors.torch import save_file

        self.dir.mkdir(parents=True, exist_ok=True)
        tensors = (
            {"features": features.values, "lengths": features.lengths}
            if isinstance(features, PatchBatch)
            else {"features": features}
        )
        tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
        with atomic_path(self.path(key)) as tmp:
            save_file(
                tensors, str(tmp), metadata={"key": key, "sha256": _tensor_digest(*tensors.values()), "format": FORMAT}
            )

    def _lock(self, key: str):
        self.dir.mkdir(parents=True, exist_ok=True)
        return lock(self.dir / f".{key}.lock")

    def get(self, backbone, images, device: str = "cpu") -> tuple[torch.Tensor | PatchBatch, bool]:
        """(features [len(images), N, d] (with tiling [len(images), t·N, d], or a PatchBatch for pages with
        different grids, as `Backbone.encode_images` returns them), whether they came from the cache)."""
        key = feature_key(backbone, images, device)
        found = self.read(key, backbone, len(images))
        if found is None:
            try:
                with self._lock(key):  # another process may be computing the same entry: wait for it
                    found = self.read(key, backbone, len(images))
                    if found is None:
                        self.misses += 1
                        features = compute_features(backbone, images, device)
                        self.write(key, features)
                        return features, False
            except OSError as exc:  # an unwritable cache slows runs down, it does not stop them
                self.log(
                    f"feature cache: cannot write to {self.dir} ({exc.strerror or exc}); the features are "
                    "computed and not cached"
                )
                return compute_features(backbone, images, device), False
        self.hits += 1
        return found, True


def _shape_problem(features: torch.Tensor, lengths: torch.Tensor | None, backbone, n_images: int) -> str | None:
    """Why an entry's tensors cannot be this backbone's features of `n_images` pages (None: they can)."""
    if features.ndim != 3 or (features.shape[0], features.shape[2]) != (n_images, backbone.vision_dim):
        return f"its shape is {tuple(features.shape)}, not ({n_images}, patches, {backbone.vision_dim})"
    n, patches = features.shape[:2]
    if lengths is None:
        whole = patches % backbone.num_patches == 0 and patches <= backbone.max_patches
        return None if patches and whole else f"it holds {patches} patches per page, not whole tiles"
    if (
        lengths.dtype != torch.long
        or tuple(lengths.shape) != (n,)
        or not bool(((lengths > 0) & (lengths <= patches) & (lengths % backbone.num_patches == 0)).all())
    ):
        return "its patch counts do not fit its features"
    return None


def compute_features(backbone, images, device: str) -> torch.Tensor | PatchBatch:
    """The same features without the cache (what `alignbench ... --no-feature-cache` runs)."""
    return backbone.encode_images(images, batch_size=ENCODE_BATCH, device=device)
