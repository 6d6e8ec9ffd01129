"""The Hugging Face Hub, used without ever hanging: local folders first, then the local cache, then the hub.

A reference is a local path when it exists on disk; anything else is a hub id. Before the first hub call of a
process, one TCP connection to the hub's host (or the configured proxy) is tried with a short timeout
(`REACH_TIMEOUT`). When `HF_HUB_OFFLINE=1` is set, or that connection fails, every later load runs in offline
mode: models with `local_files_only=True`, datasets with the libraries' offline switches turned on, so what is
in the local cache loads and what is not fails at once with a message naming the id (`missing_message`) instead
of the libraries' retry loops (about 25 s per dataset with the port closed, minutes behind a firewall that
drops packets).
"""

from __future__ import annotations

import contextlib
import os
import socket
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

REACH_TIMEOUT = 3.0  # seconds for the one reachability check of a process


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def offline_requested() -> bool:
    """`HF_HUB_OFFLINE=1` (or the older `TRANSFORMERS_OFFLINE` / `HF_DATASETS_OFFLINE`) is set."""
    return any(_truthy(os.environ.get(k)) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"))


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


@cache
def _reachable(url: str, proxy: str | None) -> tuple[bool, str]:
    target = urlparse(proxy or url)
    host = target.hostname or ""
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=REACH_TIMEOUT):
            return True, ""
    except OSError as exc:
        return False, f"{host}:{port} {exc.strerror or type(exc).__name__ or exc}"


def hub_status() -> tuple[bool, str]:
    """(online, why not): offline when HF_HUB_OFFLINE=1 is set or the hub's host does not answer in time."""
    if offline_requested():
        return False, "HF_HUB_OFFLINE=1 is set"
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    ok, why = _reachable(endpoint(), proxy if endpoint().startswith("https") else None)
    return ok, "" if ok else f"cannot connect to {why}"


def is_local(ref: str) -> bool:
    return Path(ref).expanduser().exists()


def looks_like_path(ref: str) -> bool:
    """A reference written as a path (absolute, ./ or ~/, or a file name with an extension), not a hub id."""
    return ref.startswith(("/", "./", "../", "~")) or Path(ref).suffix in (".parquet", ".arrow", ".json", ".jsonl")


@contextlib.contextmanager
def offline_mode(active: bool = True):
    """Turn the libraries' offline switches on for the duration (they read them at call time)."""
    if not active:
        yield
        return
    import datasets.config
    import huggingface_hub.constants

    saved = huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    huggingface_hub.constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def missing_message(kind: str, ref: str, why: str, local_hint: str) -> str:
    """One line: which id, that the hub is unreachable, how to point at a local copy."""
    return (
        f"{kind} {ref!r}: it is not in the local Hugging Face cache and the hub is unreachable ({why}). "
        f"Download it once on a machine with network access (it is then read from the cache, also with "
        f"HF_HUB_OFFLINE=1), or {local_hint}"
    )
