"""The README's third-party connector example, installed exactly as written, and a broken plug-in."""

import re
import subprocess
import sys

from tests.support import REPO
from tests.support.cli import cli, flags, one_line_error
from tests.support.plugins import install_dist, site_env

README = REPO / "README.md"


def _readme_files() -> dict[str, str]:
    """Code blocks announced in the README by a line `<!-- file: PATH -->`."""
    text = README.read_text()
    return {m.group(1): m.group(2) for m in re.finditer(r"<!-- file: (\S+) -->\s*```\w*\n(.*?)```", text, re.S)}


def test_readme_plugin_example_works_as_written(tmp_path):
    files = _readme_files()
    assert {"alignbench-meanpool/pyproject.toml", "alignbench-meanpool/alignbench_meanpool.py"} <= set(files)
    for rel, body in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(body)
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(tmp_path / "alignbench-meanpool"),
        ],
        check=True,
        capture_output=True,
    )
    env = site_env(site)
    listed = cli("list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "meanpool" in listed.stdout
    out = tmp_path / "out"
    small = flags(steps=2, batch_size=4, train_docs=4, eval_questions=4)
    ran = cli("run", "--connector", "meanpool", "--task", "docvqa", *small, "--output", out, env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "meanpool" in (out / "leaderboard.csv").read_text()


def test_plugin_that_fails_to_import_is_one_message(tmp_path):
    """`list` still works and shows it as broken; asking for it is one line naming the distribution."""
    install_dist(tmp_path, "broken-plugin", "[alignbench.connectors]\nbroken = not_a_module_anywhere:Thing\n")
    res = cli("list", env=site_env(tmp_path))
    assert res.returncode == 0, res.stderr
    assert any("broken" in line and "failed to import" in line for line in res.stdout.splitlines())
    res = cli("run", "--connector", "broken", env=site_env(tmp_path))
    one_line_error(res, "plug-in 'broken'", "failed to import", "pip uninstall broken-plugin")


def test_readme_plugin_example_works_per_tile(tmp_path):
    """The example pools each tile's own grid: 3 tiles of 4 x 4 patches give 3 x 4 tokens, as it declares."""
    import importlib.util

    import torch

    from alignbench.connector import ConnectorContext
    from alignbench.model.vlm import check_output

    path = tmp_path / "alignbench_meanpool.py"
    path.write_text(_readme_files()["alignbench-meanpool/alignbench_meanpool.py"])
    spec = importlib.util.spec_from_file_location("readme_meanpool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cls = module.MeanPoolConnector
    connector = cls(ConnectorContext(vision_dim=8, llm_dim=12, num_patches=16, max_patches=48), cls.Config())
    features = torch.randn(2, 48, 8)
    out = connector(features)
    assert out.shape == (2, connector.num_tokens(48), 12) == (2, 12, 12)
    check_output(connector, features, out, 12)
    # the first tile's tokens depend on the first tile's patches only
    changed = features.clone()
    changed[:, 16:] += 1.0
    assert torch.allclose(connector(changed)[:, :4], out[:, :4])
