"""The plug-in contract through the command line, and the registry's edges: a connector that emits the wrong token
count or width stops with one line before its run directory exists (also under `python -O`, and on a backbone whose
vision and LLM widths differ, where a missing projection shows); installed entry points that collide with a built-in,
are not connectors or fail to import are reported as broken by `list`, block only their own name, and name the
distribution to uninstall."""

import pytest

from tests.support.cli import cli, no_run_directory, one_line_error
from tests.support.plugins import install_dist, site_env

SMALL = ["--steps", "2", "--batch-size", "2", "--train-docs", "3", "--eval-questions", "4", "--no-blind"]


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
    one_line_error(done, "connector 'halftokens' emitted a tensor of shape", "declares num_tokens(144) = 144 tokens")
    assert no_run_directory(out)
    assert not (out / "leaderboard.csv").exists()


def test_a_connector_without_projection_is_caught_where_the_widths_differ(tmp_path, hf_pair):
    plugin = tmp_path / "noproj.py"
    plugin.write_text(NO_PROJECTION)
    vision, llm = hf_pair("plain")  # vision width 32, LLM width 48
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
    one_line_error(done, "connector 'noproj'", "of the LLM's width 48", ", 32]")
    assert no_run_directory(out)


@pytest.fixture
def site(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    install_dist(
        site,
        "shadow-mlp",
        "[alignbench.connectors]\nmlp = shadow_mlp:Other\n",
        "shadow_mlp",
        "from alignbench.connectors.mlp import MLPConnector\nclass Other(MLPConnector):\n    pass\n",
    )
    install_dist(
        site,
        "not-a-connector",
        "[alignbench.connectors]\nanint = not_a_connector:VALUE\namodule = not_a_connector:Plain\n",
        "not_a_connector",
        "import torch\nVALUE = 3\nclass Plain(torch.nn.Module):\n    pass\n",
    )
    install_dist(site, "broken-plugin", "[alignbench.connectors]\nbroken = not_a_module_anywhere:Thing\n")
    return site_env(site)


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
    one_line_error(cli("run", "--connector", name, *SMALL, "--output", tmp_path / "out", env=site), *needles)
    assert no_run_directory(tmp_path / "out")


def test_other_connectors_run_beside_a_broken_plugin(site, tmp_path):
    done = cli("run", "--connector", "ovis", *SMALL, "--output", tmp_path / "out", env=site)
    assert done.returncode == 0, done.stderr
    assert "ovis" in (tmp_path / "out" / "leaderboard.csv").read_text()
