"""The backbone every connector plugs into: a vision tower, a causal LM and its tokenizer, with typed facts about
them. Every connector dimension is derived from it (`vision_dim`, `llm_dim`, `num_patches`), and every backbone
derives N and d the same way (`Backbone.build`): the image size and patch size from the tower's config, N and d
read off one blank image through the tower (so towers with or without a CLS token both work).

Three things a real backbone needs that the embedded one does not:

- **Precision.** `dtype="auto"` loads both models in bfloat16 on CUDA and in float32 on the CPU (`torch_dtype`).
- **Tiling** (`max_tiles` > 1, as in InternVL and AlignVLM, `alignbench.backbones.tiling`): an image is cut into a
  grid of tower-sized tiles chosen by its aspect ratio, plus a thumbnail of the whole image, and the features of all
  tiles are concatenated (tile-major) for the connector. Images with different grids give different patch counts;
  `encode_images` then returns a `PatchBatch` (padded values + lengths) instead of a tensor.
- **A prompt format** (`alignbench.prompt`): chat models get their own chat template, with the visual tokens
  placed inside the user turn; plain models get their BOS token before the visual tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..connector import ConnectorContext
from ..data.embedded.page import PageSpec
from .tiling import tile_image

if TYPE_CHECKING:  # the configuration names what to load; loading never needs its class
    from ..config.backbone import BackboneConfig


@dataclass
class PatchBatch:
    """Vision features of images with different patch counts (different tile grids): `values` [B, P, d] holds
    image b's `lengths[b]` patches first, zeros after. Indexing with a list or slice gives the selected images,
    as a plain tensor when they all have the same count."""

    values: torch.Tensor  # [B, P, d]
    lengths: torch.Tensor  # [B], long

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def shape(self) -> torch.Size:
        return self.values.shape

    def __getitem__(self, idx) -> torch.Tensor | PatchBatch:
        return compact(self.values[idx], self.lengths[idx])

    def to(self, *args, **kwargs) -> PatchBatch:
        return PatchBatch(self.values.to(*args, **kwargs), self.lengths)  # lengths stay on the CPU (grouping)

    def groups(self) -> list[tuple[list[int], torch.Tensor]]:
        """(image indices, features [b, L, d]) per distinct patch count L, in order of L."""
        out = []
        for length in sorted(set(self.lengths.tolist())):
            idx = [i for i, n in enumerate(self.lengths.tolist()) if n == length]
            out.append((idx, self.values[idx, :length]))
        return out

    def largest_group(self) -> torch.Tensor:
        """The features of the most common patch count (for statistics that need a rectangular tensor)."""
        return max(self.groups(), key=lambda g: len(g[0]))[1]


def compact(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor | PatchBatch:
    """A tensor when every image has the same patch count, else a PatchBatch trimmed to the longest."""
    if values.ndim == 2:  # a single image
        return values[: int(lengths)]
    longest = int(lengths.max()) if len(lengths) else values.shape[1]
    if len(lengths) == 0 or bool((lengths == longest).all()):
        return values[:, :longest]
    return PatchBatch(values[:, :longest], lengths)


def concat_features(parts: list[torch.Tensor | PatchBatch]) -> torch.Tensor | PatchBatch:
    values, lengths = [], []
    for p in parts:
        v, n = (p.values, p.lengths) if isinstance(p, PatchBatch) else (p, torch.full((p.shape[0],), p.shape[1]))
        values.append(v)
        lengths.append(n)
    longest = max(v.shape[1] for v in values)
    values = [nn.functional.pad(v, (0, 0, 0, longest - v.shape[1])) for v in values]
    return compact(torch.cat(values), torch.cat(lengths).long())


@dataclass
class Backbone:
    vision: nn.Module  # pixel_values [B, 3, H, W] -> last_hidden_state [B, N, d]
    llm: Any  # a transformers causal LM
    tokenizer: Any
    image_transform: Any  # list[PIL.Image] -> FloatTensor [B, 3, H, W]
    key: str  # content key: identifies the weights (used to key feature and result caches)
    image_size: tuple[int, int]  # (width, height) the tower takes: one tile
    num_patches: int  # N: vision tokens per tile (per image without tiling), derived by `build`
    vision_dim: int  # d: width of the tower's output, derived by `build`
    grid: tuple[int, int] | None = None  # (rows, cols) when the tower's features are exactly its patch grid
    max_tiles: int = 1  # tiles per image at most, plus a thumbnail when > 1
    page: PageSpec | None = None  # the glyph pages this backbone's tower reads (the embedded `tiny`)
    renderer: Any = None  # draws a document as the pages this backbone's tower reads (smollm2's token pages)
    source: dict | None = None  # where the weights came from (smollm2: the package, file and its sha256)
    dtype: str | None = None  # the precision the backbone was loaded in, when it was chosen (hf, smollm2)
    path: str | None = None  # the folder the prepared weights were read from (embedded backbones)

    @classmethod
    def build(cls, vision: nn.Module, llm, tokenizer, image_transform, key: str, **facts) -> Backbone:
        """A backbone whose N, d and patch grid are read off its tower: the tower's config gives the image size
        (224 when it states none) and patch size, one blank image through the tower gives N and d."""
        from PIL import Image

        config = getattr(vision, "config", None)
        side = getattr(config, "image_size", None) or 224
        size = (side, side)
        pixels = image_transform([Image.new("RGB", size, "white")]).to(next(vision.parameters()).dtype)
        with torch.no_grad():
            feats = vision_features(vision, pixels)  # [1, N, d]
        patch = getattr(config, "patch_size", None)
        grid = None
        if isinstance(patch, int) and patch > 0 and size[0] % patch == 0 and size[1] % patch == 0:
            rows, cols = size[1] // patch, size[0] // patch  # PIL sizes are (width, height)
            if rows * cols == feats.shape[1]:  # no CLS or register tokens: the features are the grid, row-major
                grid = (rows, cols)
        ensure_pad_token(tokenizer)
        return cls(vision, llm, tokenizer, image_transform, key, size, feats.shape[1], feats.shape[2], grid, **facts)

    @property
    def llm_dim(self) -> int:
        return self.llm.get_input_embeddings().weight.shape[1]

    @property
    def tile_size(self) -> int:
        """Pixels on a side of one tile: the tower's input."""
        return self.image_size[0]

    @property
    def max_patches(self) -> int:
        """Patches per image at most: every tile of the largest grid and the thumbnail (N without tiling)."""
        return self.num_patches * (self.max_tiles + 1 if self.max_tiles > 1 else 1)

    def tiles(self, image) -> list:
        """The images the tower sees for one page: the page itself, or its tiles and a thumbnail."""
        if self.max_tiles <= 1:
            return [image]
        return tile_image(image, self.max_tiles, self.tile_size)

    @torch.no_grad()
    def encode_images(self, images, batch_size: int = 64, device: str = "cpu") -> torch.Tensor | PatchBatch:
        """Vision features of PIL images: [len(images), N, d], or with tiling [len(images), t·N, d] when every
        image has t tiles and a `PatchBatch` when the tile counts differ. Tiles run through the tower in
        batches of `batch_size`."""
        if self.max_tiles <= 1:
            return self._encode(images, batch_size, device)
        tiles, counts = [], []
        for k in range(len(images)):
            page_tiles = self.tiles(images[k])
            tiles += page_tiles
            counts.append(len(page_tiles))
        per_image = torch.split(self._encode(tiles, batch_size, device), counts)  # [t_k, N, d] each
        values = torch.zeros(len(images), max(counts, default=1) * self.num_patches, self.vision_dim)
        for k, feats in enumerate(per_image):
            values[k, : feats.shape[0] * feats.shape[1]] = feats.flatten(0, 1)  # tile-major
        return compact(values, torch.tensor(counts, dtype=torch.long) * self.num_patches)

    def _encode(self, images, batch_size: int, device: str) -> torch.Tensor:
        """[len(images), N, d]: each image as one tower input."""
        out = []
        for i in range(0, len(images), batch_size):
            pixels = self.image_transform(list(images[i : i + batch_size])).to(device, self.vision_dtype)
            out.append(vision_features(self.vision, pixels).float().cpu())
        return torch.cat(out) if out else torch.empty(0, self.num_patches, self.vision_dim)

    @property
    def vision_dtype(self) -> torch.dtype:
        return next(self.vision.parameters()).dtype

    def connector_context(self) -> ConnectorContext:
        """What a connector derives its dimensions from."""
        return ConnectorContext(self.vision_dim, self.llm_dim, self.num_patches, self.llm, self.max_patches, self.grid)


class LazyFeatures:
    """Vision features computed when a batch asks for them (`features[[i, j, ...]]`), for splits whose features
    would not fit in memory (real datasets, tiling): the frozen tower runs on each batch's pages instead."""

    def __init__(self, backbone: Backbone, images, device: str, batch_size: int = 64):
        self.backbone, self.images, self.device, self.batch_size = backbone, images, device, batch_size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx) -> torch.Tensor | PatchBatch:
        if isinstance(idx, slice):
            idx = range(len(self))[idx]
        elif isinstance(idx, torch.Tensor):
            idx = idx.tolist()
        return self.backbone.encode_images([self.images[int(i)] for i in idx], self.batch_size, self.device)


def vision_features(vision: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    return vision(pixel_values=pixel_values).last_hidden_state  # [B, N, d]


def glyph_transform(images: list, size: tuple[int, int] | None = None) -> torch.Tensor:
    """SigLIP's normalisation (mean 0.5, std 0.5) for RGB pages; pages of another size than `size` are resized
    (the embedded pages already have the tower's size, so they pass untouched)."""
    from PIL import Image

    images = [im if size is None or im.size == tuple(size) else im.resize(tuple(size), Image.BICUBIC) for im in images]
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images]) / 255.0
    return torch.from_numpy((arr - 0.5) / 0.5).permute(0, 3, 1, 2).contiguous()


def ensure_pad_token(tokenizer) -> None:
    """Batches need a pad id: a reserved padding token when the vocabulary has one (Llama 3's
    `<|finetune_right_pad_id|>`), else EOS. Padded positions are masked either way."""
    if tokenizer.pad_token_id is not None:
        return
    vocab = tokenizer.get_vocab()
    tokenizer.pad_token = next((t for t in ("<|finetune_right_pad_id|>", "<pad>") if t in vocab), tokenizer.eos_token)


def torch_dtype(cfg: BackboneConfig, device: str, auto: torch.dtype | None = None) -> torch.dtype:
    """The precision `cfg` asks for on `device`; "auto" is `auto` when the backbone states one (smollm2 runs its LLM
    in bfloat16 on the CPU too), else bfloat16 on CUDA and float32 on the CPU."""
    if cfg.dtype == "auto":
        return auto or (torch.bfloat16 if str(device).startswith("cuda") else torch.float32)
    return getattr(torch, cfg.dtype)  # one of `config.backbone.DTYPE_NAMES` (BackboneConfig.validate)
