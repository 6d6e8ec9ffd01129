"""Rows to usable values: gold answers as text, image bytes decoded to 8-bit RGB; what cannot be used is a reason to
skip the row (never a crash, never a silently wrong page)."""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np


def answer_texts(value) -> list[str] | None:
    """Gold answers as text: numbers become their shortest spelling ("12", "0.5"), missing and non-finite
    entries are dropped; None when the value is not text at all (a mapping, nested lists, bytes)."""
    out = []
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if v is None:
            continue
        if isinstance(v, float):
            if not math.isfinite(v):
                continue
            v = str(int(v)) if v.is_integer() and abs(v) < 1e16 else repr(v)
        elif isinstance(v, (bool, int)):
            v = str(v)
        elif not isinstance(v, str):
            return None
        if v.strip():
            out.append(v)
    return out


def to_8bit(arr: np.ndarray) -> np.ndarray:
    """Integer or float pixels to 8 bits by their actual range: the data's bit depth is the smallest of 8, 10, 12
    and 16 bits that holds its largest value (a 16-bit file holding 8-bit data is kept as it is, 12-bit scanner
    data is scaled by 255 / 4095, full 16-bit data by 255 / 65535); float data in [0, 1] is scaled by 255; negative
    or wider data is stretched."""
    floating = np.issubdtype(arr.dtype, np.floating)
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
    if floating and low >= 0 and high <= 1.0:  # float pixels in [0, 1]
        return (arr * 255.0).round().astype(np.uint8)
    if low >= 0:
        for bits in (8, 10, 12, 16):
            if high <= 2**bits - 1:
                return (arr * (255.0 / (2**bits - 1))).round().clip(0, 255).astype(np.uint8)
    return ((arr - low) / max(high - low, 1e-12) * 255.0).round().astype(np.uint8)


def to_rgb(image):
    """8-bit RGB: 16-bit, 32-bit and float channels are converted by their actual range (`_to_8bit`), transparency
    is laid on white paper, palette/CMYK/grayscale/bilevel images are converted. Raises ValueError when a page
    with content would become blank."""
    from PIL import Image

    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        arr = np.asarray(image)
        image = Image.fromarray(to_8bit(arr), "L")
        if np.ptp(arr) > 0 and np.ptp(np.asarray(image)) == 0:
            raise ValueError(f"{arr.dtype} pixels from {arr.min()} to {arr.max()} leave nothing visible in 8 bits")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return image.convert("RGB")


def decode(blob: bytes):
    """(RGB image, None) or (None, (reason, detail)). Decoding untrusted bytes: any decoder failure is a skip."""
    from PIL import Image, ImageFile

    # A truncated file is a skip, never a page filled with grey: PIL's global switch is off while decoding
    # (lmms-eval, once imported, turns it on for the whole process).
    truncated_ok, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(blob))
            pixels = image.size[0] * image.size[1]
            if Image.MAX_IMAGE_PIXELS and pixels > Image.MAX_IMAGE_PIXELS:
                return None, (
                    "image too large",
                    f"{image.size[0]}x{image.size[1]} pixels, over PIL's "
                    f"decompression-bomb limit of {Image.MAX_IMAGE_PIXELS}",
                )
            image.load()
            try:
                return to_rgb(image), None
            except ValueError as exc:
                return None, ("blank after conversion", str(exc))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            return None, ("image too large", str(exc))
        except Exception as exc:  # PIL raises many exception types on malformed input
            return None, ("unreadable image", f"{type(exc).__name__}: {exc}")
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = truncated_ok


def image_bytes(cell) -> tuple[bytes | None, tuple[str, str] | None]:
    if not isinstance(cell, dict) or not (cell.get("bytes") or cell.get("path")):
        return None, ("missing image", "no image bytes and no path")
    if cell.get("bytes"):
        return cell["bytes"], None
    try:
        return Path(cell["path"]).read_bytes(), None
    except OSError as exc:
        return None, ("missing image", f"{cell['path']}: {exc.strerror or exc}")
