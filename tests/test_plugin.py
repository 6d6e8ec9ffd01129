"""The README's third-party connector example, installed exactly as written, and a broken plug-in."""

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_files() -> dict[str, str]:
    """Code blocks announced in the README by a line `<!-- file: PATH -->`."""
    text = README.read_text()
    return {m.group(1): m.group(2) for m in re.finditer(r"<!-- file: (\S+) -->\s*```\w*\n(.*?)```", text, re.S)}


def _env(site: Path) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


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
    env = _env(site)
    listed = subprocess.run([sys.executable, "-m", "alignbench", "list"], capture_output=True, text=True, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "meanpool" in listed.stdout
    out = tmp_path / "out"
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "alignbench",
            "run",
            "--connector",
            "meanpool",
            "--task",
            "docvqa",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--train-docs",
            "4",
            "--eval-questions",
            "4",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert "meanpool" in (out / "leaderboard.csv").read_text()


def test_plugin_that_fails_to_import_is_one_message(tmp_path):
    """`list` still works and shows it as broken; asking for it is one line naming the distribution."""
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[alignbench.connectors]\nbroken = not_a_module_anywhere:Thing\n")
    res = subprocess.run(
        [sys.executable, "-m", "alignbench", "list"],
        capture_output=True,
        text=True,
        env={**_env(tmp_path), "COLUMNS": "250"},
    )
    assert res.returncode == 0, res.stderr
    assert any("broken" in line and "failed to import" in line for line in res.stdout.splitlines())
    res = subprocess.run(
        [sys.executable, "-m", "alignbench", "run", "--connector", "broken"],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
    )
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "plug-in 'broken'" in res.stderr and "failed to import" in res.stderr
    assert "pip uninstall broken-plugin" in res.stderr and "Traceback" not in res.stderr


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
