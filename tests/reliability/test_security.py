"""What a run never does by itself (docs/reliability.md): no pickle anywhere, trust_remote_code off unless asked,
plug-ins loaded only when named, names that cannot leave the output directory."""

import json
import re
from pathlib import Path

import pytest

from alignbench.config.data import DataConfig
from alignbench.config.run import RunConfig
from alignbench.connector import CONNECTORS
from alignbench.errors import AlignBenchError
from alignbench.run.leaderboard import read_leaderboard
from alignbench.run.outputs import new_run_dir, run_path
from alignbench.run.pipeline import run
from alignbench.task import TASKS, Task
from tests.support import REPO
from tests.support.cli import cli, main_in_process, one_line

QUIET = dict(log=lambda *a, **k: None)
DATA = DataConfig(train_docs=4, eval_questions=6)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


PICKLE_IMPORT = re.compile(r"^\s*(import|from)\s+(pickle|cPickle|_pickle|dill|cloudpickle|joblib)\b", re.M)


def test_package_never_unpickles():
    files = [p for d in ("alignbench", "connectors", "tasks") for p in (REPO / d).rglob("*.py")]
    assert len(files) > 20
    for path in files:
        text = path.read_text()
        assert not PICKLE_IMPORT.search(text), f"{path} imports a pickle module"
        for call in re.finditer(r"torch\.load\(", text):
            end = text.find(")", call.end())
            assert "weights_only=True" in text[call.end() : end], f"{path}: torch.load without weights_only=True"
        assert "trust_remote_code=True" not in text, f"{path} turns trust_remote_code on by itself"


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_trust_remote_code_is_off_unless_asked(command, tmp_path, monkeypatch, capsys):
    import transformers

    seen = []

    def fake_from_pretrained(ref, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        raise OSError("fake hub")

    for cls in ("AutoModel", "AutoImageProcessor", "AutoModelForCausalLM", "AutoTokenizer"):
        monkeypatch.setattr(getattr(transformers, cls), "from_pretrained", fake_from_pretrained)
    base = [command, "--backbone", "hf", "--vision", "org/v", "--llm", "org/l", "--output", tmp_path]
    base += ["--connectors", "mlp", "--tasks", "docvqa"] if command == "sweep" else []
    for flag, expected in (([], False), (["--trust-remote-code"], True)):
        seen.clear()
        code, _, err = main_in_process(monkeypatch, capsys, *base, *flag)
        assert code == 2 and "cannot load vision tower 'org/v'" in one_line(err)
        assert seen == [expected]


PLUGIN = '''
from dataclasses import dataclass

from torch import nn

from alignbench.connector import CONNECTORS, Connector


@CONNECTORS.register("plugproj")
class PlugProj(Connector):
    """A linear projection, from a plug-in file."""

    @dataclass
    class Config:
        pass

    def __init__(self, ctx, config):
        super().__init__(ctx, config)
        self.proj = nn.Linear(ctx.vision_dim, ctx.llm_dim)

    def forward(self, features):  # [B, N, d] -> [B, N, D]
        return self.proj(features)
'''


PLUGIN_PACKAGE = {
    "__init__.py": "from . import definitions  # noqa: F401\n",
    "definitions.py": """
import dataclasses

from alignbench.task import TASKS

TASKS.add("docvqa_plug", dataclasses.replace(TASKS.get("docvqa"), description="from a plug-in package"))
""",
}


@pytest.fixture
def clean_registries(monkeypatch):
    """Plug-ins loaded by a test are forgotten afterwards."""
    from alignbench import plugins

    CONNECTORS.names(), TASKS.names()
    for registry in (CONNECTORS, TASKS):
        monkeypatch.setattr(registry, "_items", dict(registry._items))
        monkeypatch.setattr(registry, "_providers", dict(registry._providers))
    monkeypatch.setattr(plugins, "_PLUGINS", {})


def _write_plugins(root: Path) -> tuple[Path, Path]:
    (root / "plugproj.py").write_text(PLUGIN)
    package = root / "plugpkg"
    package.mkdir()
    for name, text in PLUGIN_PACKAGE.items():
        (package / name).write_text(text)
    return root / "plugproj.py", package


def test_plugins_load_only_when_named(tmp_path, clean_registries, monkeypatch, capsys):
    from typer.testing import CliRunner

    from alignbench.cli import app

    plugin_file, package = _write_plugins(tmp_path)
    monkeypatch.chdir(tmp_path)
    # not named: not loaded, even from the working directory
    plain = cli("list", cwd=tmp_path)
    assert plain.returncode == 0 and "plugproj" not in plain.stdout and "docvqa_plug" not in plain.stdout
    code, out, err = main_in_process(
        monkeypatch,
        capsys,
        "run",
        "--plugin",
        plugin_file,
        "--connector",
        "plugproj",
        "--steps",
        1,
        "--batch-size",
        2,
        "--train-docs",
        4,
        "--eval-questions",
        4,
        "--output",
        tmp_path / "out",
    )
    assert code == 0, err
    board = read_leaderboard(tmp_path / "out" / "leaderboard.csv")
    assert list(board.connector) == ["plugproj"]
    config = json.loads((tmp_path / "out" / "runs" / board.run_id[0] / "config.json").read_text())
    assert config["plugins"] == [str(plugin_file.resolve())]
    # The CLI's console reads COLUMNS when alignbench.cli is first imported (by whichever test came first): give it
    # a wide one here, so the table is not elided whatever the test order.
    from rich.console import Console

    monkeypatch.setattr("alignbench.cli.common.console", Console(width=250))
    listed = CliRunner().invoke(app, ["list", "--plugin", str(plugin_file), "--plugin", str(package)])
    assert listed.exit_code == 0, listed.output
    assert "plugproj" in listed.output and "docvqa_plug" in listed.output and "from a plug-in package" in listed.output


@pytest.mark.parametrize(
    "body,needle",
    [
        (None, "not found; give a Python file"),
        ("raise ZeroDivisionError('boom')\n", "failed to import: ZeroDivisionError: boom"),
        (
            "from alignbench.connector import CONNECTORS\nfrom alignbench.connectors.mlp import MLPConnector\n"
            "CONNECTORS.register('mlp')(type('Other', (MLPConnector,), {}))\n",
            "'mlp' is registered twice",
        ),
    ],
)
def test_bad_plugin_is_one_line_exit_2(body, needle, tmp_path, clean_registries, monkeypatch, capsys):
    path = tmp_path / "bad_plugin.py"
    if body is not None:
        path.write_text(body)
    code, _, err = main_in_process(monkeypatch, capsys, "list", "--plugin", path)
    assert code == 2 and needle in one_line(err) and str(path) in err


def test_parallel_sweep_with_a_plugin_is_refused(tmp_path, clean_registries, monkeypatch, capsys):
    plugin_file, _ = _write_plugins(tmp_path)
    code, _, err = main_in_process(
        monkeypatch,
        capsys,
        "sweep",
        "--plugin",
        plugin_file,
        "--connectors",
        "plugproj",
        "--tasks",
        "docvqa",
        "--jobs",
        2,
        "--output",
        tmp_path / "out",
    )
    assert code == 2 and "--jobs 1" in one_line(err)


def test_names_cannot_write_outside_the_output_directory(tmp_path, ws):
    out = tmp_path / "out"
    for task, connector in [
        ("../../evil", "mlp"),
        ("docvqa", "../evil"),
        ("docvqa", "a/b"),
        ("..", "mlp"),
        ("docvqa", ""),
        ("/abs", "mlp"),
    ]:
        with pytest.raises(AlignBenchError, match="invalid (task|connector) name"):
            new_run_dir(out, task, connector, 0)
    for run_id in ["../x", "..", "a/../../x", "/etc", "", "x/../../y"]:
        with pytest.raises(AlignBenchError, match="invalid run id"):
            run_path(out, run_id)
    assert run_path(out, "docvqa-mlp-s0-1") == out / "runs" / "docvqa-mlp-s0-1"
    with pytest.raises(AlignBenchError, match="invalid task name"):
        TASKS.add("../evil", Task("x", "p", None, "test", "q", "a", "", "anls", 4))
    with pytest.raises(AlignBenchError, match="invalid connector name"):
        CONNECTORS.register("../evil")(object)
    with pytest.raises(AlignBenchError, match="unknown task '../../evil'"):
        RunConfig(task="../../evil").validate()
    with pytest.raises(AlignBenchError, match="unknown split '../../evil'"):
        ws.split(TASKS.get("docvqa"), "../../evil")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "config.json").write_text("{}")
    with pytest.raises(AlignBenchError, match="not a run directory under"):
        run(RunConfig(data=DATA), out, ws, resume=elsewhere, **QUIET)
    assert not list(tmp_path.rglob("*evil*")) and sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "out"]
