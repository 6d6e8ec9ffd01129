"""The probes a report shows. For each kind and task: the newest probe; a noise or image probe is joined by every
earlier one measured the same way (the same levels or corruptions, backbone, evaluation questions and scoring
precision), each connector and seed keeping its newest measurement. A connector probed after the others then
costs only its own probe, and a probe with other settings starts afresh (the earlier ones stay on disk, unread)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

# The fields, besides the setup, that make two probes of one kind measure the same thing (eval_dtype: the LLM's
# precision while scoring, absent from probes scored before it was recorded).
SAME_MEASURE = {
    "noise": ("metric", "sigma_mode", "sigmas", "noise_seed", "eval_dtype"),
    "image": ("metric", "corruptions", "levels", "eval_dtype"),
}


def probe_setup(backbone_key: str, data) -> dict:
    """What makes two probes' runs comparable question by question: the backbone, and the data settings (which
    pages and questions are scored) but the seed, which each run's own seed sets."""
    settings = json.loads(json.dumps(dataclasses.asdict(data), default=str))
    settings.pop("seed", None)
    return {"backbone_key": backbone_key, "data": settings}


def _load(output: Path) -> list[dict]:
    found = []
    for path in sorted((output / "probes").glob("*/probe.json")):  # sorted by name = by time stamp
        try:
            p = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(p, dict) or not {"kind", "task"} <= p.keys():
            continue
        if p["kind"] in SAME_MEASURE and not isinstance(p.get("runs"), list):
            continue
        found.append({**p, "dir": str(path.parent)})
    return found


def _signature(p: dict, setup_of: Callable[[dict], dict | None]) -> str:
    setup = p.get("setup")
    if setup is None:
        setup = setup_of(p)
    if setup is None:  # unknown setup: joins no other probe
        return f"alone:{p['dir']}"
    return json.dumps([[p.get(f) for f in SAME_MEASURE[p["kind"]]], setup], sort_keys=True)


def _join(probes: list[dict]) -> dict:
    """One probe from several measured the same way (oldest first): every connector and seed, its newest entry."""
    entries: dict[tuple[str, int], dict] = {}
    for p in probes:
        for r in p["runs"]:
            entries[(r["connector"], r["seed"])] = {**r, "probe": p["dir"]}
    used = {r["probe"] for r in entries.values()}
    newest = probes[-1]
    joined = {**newest, "runs": list(entries.values())}
    joined["sources"] = [{"dir": p["dir"], "command": p.get("command", "")} for p in probes if p["dir"] in used]
    if "feature_std" in newest:
        joined["feature_std"] = {k: v for p in probes for k, v in p.get("feature_std", {}).items()}
    return joined


def collect_probes(output: Path, setup_of: Callable[[dict], dict | None] | None = None) -> dict[tuple[str, str], dict]:
    """The probe of each (kind, task) under `output/probes` that the report shows. `setup_of(probe)` gives the setup
    of a probe that does not record one (written before probes recorded it); without it such a probe stays alone."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for p in _load(output):
        groups.setdefault((p["kind"], p["task"]), []).append(p)
    known: dict[str, dict | None] = {}

    def setup(p: dict) -> dict | None:
        if p["dir"] not in known:
            known[p["dir"]] = setup_of(p) if setup_of is not None else None
        return known[p["dir"]]

    found = {}
    for key, probes in groups.items():
        newest = probes[-1]
        if newest["kind"] not in SAME_MEASURE:
            found[key] = newest
            continue
        mine = _signature(newest, setup)
        found[key] = _join([p for p in probes if _signature(p, setup) == mine])
    return found
