"""Installed plug-ins as pip leaves them: a distribution's metadata (its entry points) in a folder on PYTHONPATH."""

from __future__ import annotations

import os
from pathlib import Path


def install_dist(site: Path, name: str, entry_points: str, module: str | None = None, code: str = "") -> None:
    """A distribution `name` in `site` declaring `entry_points` (and a module with `code`), as pip would."""
    dist = site / f"{name.replace('-', '_')}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(entry_points)
    if module:
        (site / f"{module}.py").write_text(code)


def site_env(site: Path) -> dict:
    """The environment of a process that sees what is installed in `site`."""
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
