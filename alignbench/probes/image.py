"""The image probe: corruptions a scanner makes (blur, JPEG, downscaling, rotation, pixel noise) applied to the page
images before the vision tower, so the feature-noise result is checked against realistic noise."""

from __future__ import annotations

import dataclasses
import io

import numpy as np

from ..config.eval import EvalConfig
from ..errors import AlignBenchError
from ..evaluate import evaluate
from ..run.workspace import Workspace
from .common import Trained, probe_record, run_entry, scores_of

# severity 1..3 for each corruption (pages of the embedded set are 96 x 96 px; real pages are larger, so the
# parameters are relative where that matters)
CORRUPTIONS = {
    "blur": (0.5, 0.8, 1.2),  # Gaussian blur radius, in px per 100 px of page width
    "jpeg": (60, 30, 10),  # JPEG quality
    "downscale": (1.5, 2.0, 3.0),  # shrink by this factor, then back to the original size
    "rotate": (1.0, 2.0, 4.0),  # degrees, white fill
    "pixel": (8.0, 16.0, 32.0),  # Gaussian pixel noise std on the 0-255 scale
}


def corrupt(image, name: str, severity: int, seed: int = 0):
    from PIL import Image, ImageFilter

    if name not in CORRUPTIONS:
        raise AlignBenchError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if not 1 <= severity <= 3:
        raise AlignBenchError(f"corruption severity must be 1, 2 or 3, got {severity}")
    level = CORRUPTIONS[name][severity - 1]
    image = image.convert("RGB")
    if name == "blur":
        return image.filter(ImageFilter.GaussianBlur(radius=level * image.width / 100))
    if name == "jpeg":
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=int(level))
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if name == "downscale":
        small = image.resize(
            (max(1, round(image.width / level)), max(1, round(image.height / level))), Image.Resampling.BILINEAR
        )
        return small.resize(image.size, Image.Resampling.BILINEAR)
    if name == "rotate":
        return image.rotate(level, resample=Image.Resampling.BILINEAR, fillcolor=(255, 255, 255))
    arr = np.asarray(image, dtype=np.float32)  # pixel noise
    arr = arr + np.random.default_rng(seed).normal(0, level, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def image_probe(
    trained: list[Trained],
    task_name: str,
    ws: Workspace,
    corruptions: list[tuple[str, int]],
    scoring: EvalConfig | None = None,
    log=print,
) -> dict:
    levels = {n: CORRUPTIONS[n] for n, _ in corruptions}
    task, scoring, out = probe_record(
        "image", task_name, scoring, corruptions=[f"{n}:{s}" for n, s in corruptions], levels=levels
    )
    cache: dict = {}
    for t in trained:
        split, feats = ws.split(task, "eval", dataclasses.replace(ws.data_cfg, seed=t.seed))
        entry = run_entry(t)
        for name, severity in [("clean", 0), *corruptions]:
            key = "clean" if name == "clean" else f"{name}:{severity}"
            if name == "clean":
                noisy = feats
            else:
                if (t.seed, key) not in cache:
                    images = [corrupt(im, name, severity, seed=i) for i, im in enumerate(split.images)]
                    cache[(t.seed, key)] = ws.backbone.encode_images(images, device=ws.device)
                noisy = cache[(t.seed, key)]
            result, records = evaluate(t.model, task, split, noisy, scoring, ws.device)
            out["eval_dtype"] = result["eval_dtype"]  # the LLM's precision while scoring
            entry["scores"][key] = {"score": result["score"], "stderr": result["stderr"], "n": result["n"]}
            entry["per_sample"][key] = scores_of(records)
            log(f"  {t.label} seed {t.seed} {key}: {100 * result['score']:.1f}")
        out["runs"].append(entry)
    return out


def parse_corruptions(spec: str) -> list[tuple[str, int]]:
    """'blur,jpeg:3' -> [('blur', 2), ('jpeg', 3)] (severity 2 when none is given)."""
    out = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        name, _, sev = item.partition(":")
        if name not in CORRUPTIONS:
            raise AlignBenchError(f"unknown corruption {name!r} in --corruptions; known: {', '.join(CORRUPTIONS)}")
        try:
            severity = int(sev) if sev else 2
        except ValueError:
            raise AlignBenchError(f"corruption severity in {item!r} must be 1, 2 or 3") from None
        if not 1 <= severity <= 3:
            raise AlignBenchError(f"corruption severity in {item!r} must be 1, 2 or 3")
        out.append((name, severity))
    if not out:
        raise AlignBenchError("--corruptions is empty; e.g. --corruptions blur,jpeg,downscale,rotate,pixel")
    return out
