"""The plug-in contract and the registry's edges: a connector that emits the wrong token count or width stops with
one line before its run directory exists (also under `python -O`, and on a backbone whose vision and LLM widths
differ, where a missing projection shows); installed entry points that collide with a built-in, are not
connectors or fail to import are reported as broken by `list`, block only their own name, and name the
distribution to uninstall. Property-based: hypothesis generates connectors that break the contract."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alignbench.model.vlm import ConnectorContractError, check_output

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hf_fixtures import save_pair  # noqa: E402

SMALL = ["--steps", "2", "--batch-size", "2", "--train-docs", "3", "--eval-questions", "4", "--no-blind"]


def cli(*args, env=None, optimize=False) -> subprocess.CompletedProcess:
    flags = ["-O"] if optimize else []
    return subprocess.run(
        [sys.executable, *flags, "-m", "alignbench", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "250", **(env or {})},
    )


def one_line(done, *needles) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


class _Fake:
    """A connector as `check_output` sees it: a name and a declared token count."""

    def __init__(self, declared):
        self.name, self.declared = "fake", declared

    def num_tokens(self, n):
        return self.declared(n)


@settings(max_examples=200, deadline=None)
@given(
    batch=st.integers(1, 3),
    patches=st.integers(1, 40),
    width=st.integers(1, 16),
    declared_extra=st.integers(-3, 3),
    emitted_extra=st.integers(-3, 3),
    width_extra=st.integers(-2, 2),
    ndim=st.sampled_from([2, 3, 4]),
)
def test_check_output_accepts_exactly_the_declared_shape(
    batch, patches, width, declared_extra, emitted_extra, width_extra, ndim
):
    declared = max(0, patches + declared_extra)
    emitted = max(0, patches + emitted_extra)
    out_width = max(1, width + width_extra)
    shape = {2: (batch, emitted), 3: (batch, emitted, out_width), 4: (batch, emitted, out_width, 1)}[ndim]
    tokens = torch.zeros(shape)
    features = torch.zeros(batch, patches, 5)
    fits = ndim == 3 and emitted == declared and out_width == width
    if fits:
        check_output(_Fake(lambda n: declared), features, tokens, width)
    else:
        with pytest.raises(ConnectorContractError) as info:
            check_output(_Fake(lambda n: declared), features, tokens, width)
        message = str(info.value)
        assert "\n" not in message and "'fake'" in message and f"[{batch}, {declared}, {width}]" in message
        assert f"shape {list(shape)}" in message


def test_a_non_tensor_output_is_named():
    with pytest.raises(ConnectorContractError, match="emitted a tuple"):
        check_output(_Fake(lambda n: n), torch.zeros(1, 4, 2), (torch.zeros(1, 4, 3),), 3)


WRONG_COUNT = """
import torch
from dataclasses import dataclass
from torch import nn
from alignbench.connector import CONNECTORS, Connector


@CONNECTORS.register("halftokens")
class HalfTokens(Connector):
    @dataclass
    class Config:
        pass

    def __init__(self, ctx, config):
        super().__init__(ctx, config)
        self.proj = nn.Linear(ctx.vision_dim, ctx.llm_dim)

    def forward(self, features):  # emits half the patches but declares one token per patch (the default)
        return self.proj(features[:, ::2])
"""

NO_PROJECTION = """
from dataclasses import dataclass
import torch
from torch import nn
from alignbench.connector import CONNECTORS, Connector


@CONNECTORS.register("noproj")
class NoProjection(Connector):
    @dataclass
    class Config:
        pass

    def __init__(self, ctx, config):
        super().__init__(ctx, config)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, features):  # forgets to project to the LLM's width
        return features * self.scale
"""


@pytest.mark.parametrize("optimize", [False, True])
def test_a_connector_emitting_the_wrong_token_count_stops_before_its_run_directory(tmp_path, optimize):
    plugin = tmp_path / "halftokens.py"
    plugin.write_text(WRONG_COUNT)
    out = tmp_path / "out"
    done = cli("run", "--plugin", plugin, "--connector", "halftokens", *SMALL, "--output", out, optimize=optimize)
    one_line(done, "connector 'halftokens' emitted a tensor of shape", "declares num_tokens(144) = 144 tokens")
    assert not (out / "runs").exists() or not any((out / "runs").iterdir())
    assert not (out / "leaderboard.csv").exists()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return save_pair(tmp_path_factory.mktemp("pair"))  # vision width 32, LLM width 48


def test_a_connector_without_projection_is_caught_where_the_widths_differ(tmp_path, pair):
    plugin = tmp_path / "noproj.py"
    plugin.write_text(NO_PROJECTION)
    vision, llm = pair
    out = tmp_path / "out"
    done = cli(
        "run",
        "--plugin",
        plugin,
        "--connector",
        "noproj",
        "--vision",
        vision,
        "--llm",
        llm,
        *SMALL,
        "--output",
        out,
        env={"HF_HUB_OFFLINE": "1"},
    )
    one_line(done, "connector 'noproj'", "of the LLM's width 48", ", 32]")
    assert not (out / "runs").exists() or not any((out / "runs").iterdir())


def _install(site: Path, name: str, entry_points: str, module: str | None = None, code: str = "") -> None:
    """A distribution `name` in `site` declaring `entry_points` (and a module with `code`), as pip would."""
    dist = site / f"{name.replace('-', '_')}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(entry_points)
    if module:
        (site / f"{module}.py").write_text(code)


@pytest.fixture
def site(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _install(
        site,
        "shadow-mlp",
        "[alignbench.connectors]\nmlp = shadow_mlp:Other\n",
        "shadow_mlp",
        "from alignbench.connectors.mlp import MLPConnector\nclass Other(MLPConnector):\n    pass\n",
    )
    _install(
        site,
        "not-a-connector",
        "[alignbench.connectors]\nanint = not_a_connector:VALUE\namodule = not_a_connector:Plain\n",
        "not_a_connector",
        "import torch\nVALUE = 3\nclass Plain(torch.nn.Module):\n    pass\n",
    )
    _install(site, "broken-plugin", "[alignbench.connectors]\nbroken = not_a_module_anywhere:Thing\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def test_list_shows_broken_plugins_and_keeps_working(site):
    done = cli("list", env=site)
    assert done.returncode == 0, done.stderr
    rows = {line.split("│")[1].strip(): line for line in done.stdout.splitlines() if line.count("│") > 3}
    for name in ("mlp", "anint", "amodule", "broken"):
        assert name in rows, name
    assert "broken" in rows["anint"] and "broken" in rows["amodule"] and "broken" in rows["broken"]
    assert "broken" in rows["mlp"]  # the collision: neither is used silently


@pytest.mark.parametrize(
    "name, needles",
    [
        (
            "mlp",
            [
                "'mlp' is claimed by the built-in module alignbench.connectors.mlp and by the installed package "
                "'shadow-mlp'",
                "pip uninstall shadow-mlp",
            ],
        ),
        (
            "anint",
            [
                "'anint' from the installed package 'not-a-connector'",
                "is int 3, not a subclass of alignbench.connector.Connector",
                "pip uninstall not-a-connector",
            ],
        ),
        ("amodule", ["is type", "not a subclass of alignbench.connector.Connector"]),
        (
            "broken",
            ["'broken' from the installed package 'broken-plugin'", "failed to import", "pip uninstall broken-plugin"],
        ),
    ],
)
def test_a_broken_plugin_blocks_only_its_own_name(site, tmp_path, name, needles):
    one_line(cli("run", "--connector", name, *SMALL, "--output", tmp_path / "out", env=site), *needles)
    assert not (tmp_path / "out" / "runs").exists() or not any((tmp_path / "out" / "runs").iterdir())


def test_other_connectors_run_beside_a_broken_plugin(site, tmp_path):
    done = cli("run", "--connector", "ovis", *SMALL, "--output", tmp_path / "out", env=site)
    assert done.returncode == 0, done.stderr
    assert "ovis" in (tmp_path / "out" / "leaderboard.csv").read_text()
