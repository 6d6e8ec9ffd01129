"""Prepared weights on disk (the embedded backbones' pretrained parts): the cache they go to, the manifest that
names their key and the sha256 of every file, and the one-rename publish that makes a folder appear whole."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..io import publish_dir


def cache_root() -> Path:
    """Where prepared backbones, embedded datasets and vision features are cached: $ALIGNBENCH_CACHE, default
    ~/.cache/alignbench."""
    return Path(os.environ.get("ALIGNBENCH_CACHE", Path.home() / ".cache" / "alignbench"))


def staging(out_dir: Path) -> Path:
    """A temporary folder beside `out_dir` to write a preparation into (`publish_prepared` puts it in place)."""
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp


def publish_prepared(tmp: Path, out_dir: Path, manifest: dict) -> dict:
    """Write manifest.json (`manifest` and the sha256 of every file in `tmp`) and rename `tmp` to `out_dir` (an
    older preparation there is replaced): a killed preparation never leaves a folder a later run would trust."""
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    manifest = {
        **manifest,
        "sha256": {str(p.relative_to(tmp)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files},
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    publish_dir(tmp, out_dir, replace=True)
    return manifest


def verified(path: Path, key: str) -> bool:
    """Whether `path` holds a preparation of `key` whose files all match their sha256 in its manifest."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("key") != key:
        return False
    return all(
        (path / name).is_file() and hashlib.sha256((path / name).read_bytes()).hexdigest() == digest
        for name, digest in manifest["sha256"].items()
    )
