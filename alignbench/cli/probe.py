"""`alignbench probe noise | image | vocab`: probes on trained runs (feature noise, image corruptions, ALIGN's
vocabulary distribution)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from ..config.probe import ImageProbeCommand, NoiseProbeCommand, ProbeCommand, VocabProbeCommand
from ..errors import AlignBenchError
from . import common
from .options import generated

probe_app = typer.Typer(
    no_args_is_help=True,
    help="Probes on trained runs: feature noise, image corruptions, ALIGN's vocabulary distribution.",
)


def _trained(cmd: ProbeCommand):
    """(each connector's and seed's trained model, the workspace): the runs under --output, then --reuse-from, with
    the same training key, trained now (under --output) where there is none."""
    from ..probes.common import trained_models
    from ..run.outputs import prepare_output
    from ..run.reuse import check_reuse_source
    from ..run.sweep import probe_configs
    from ..run.workspace import Workspace, resolve_device

    cmd.run.eval.validate()
    configs = probe_configs(cmd)
    for cfg in configs:
        cfg.validate()
    for folder in cmd.reuse_from:
        check_reuse_source(Path(folder))
    prepare_output(cmd.output)
    ws = Workspace(configs[0].backbone, configs[0].data, resolve_device(cmd.run.device), common.echo)
    t0 = time.time()
    with common.progress() as progress:
        trained = trained_models(configs, cmd.output, ws, log=common.echo, progress=progress, reuse_from=cmd.reuse_from)
    n_new = sum(t.trained_now for t in trained)
    common.echo(f"{len(trained) - n_new} run(s) re-used, {n_new} trained ({time.time() - t0:.0f} s)")
    return trained, ws


def _finish(output: Path, probe: dict, t0: float) -> None:
    from ..probes.write import write_probe

    d = write_probe(output, probe, "alignbench " + " ".join(sys.argv[1:]), time.time() - t0)
    common.echo((d / "table.md").read_text())
    common.echo(f"probe written: {d}")


def _measure(cmd: ProbeCommand, measure) -> None:
    """Find or train the runs the probe examines, measure them (`measure(trained, workspace) -> probe`), write it."""
    from ..probes.collect import probe_setup

    common.quiet()
    t0 = time.time()
    trained, ws = _trained(cmd)
    probe = measure(trained, ws)
    probe["setup"] = probe_setup(ws.backbone.key, ws.data_cfg)  # which probes the report may join with this one
    _finish(cmd.output, probe, t0)


@probe_app.command("noise")
@generated(NoiseProbeCommand)
def probe_noise(cmd: NoiseProbeCommand) -> None:
    """Gaussian noise on the vision features at evaluation time: score vs σ and output drift per connector."""
    from ..probes.noise import noise_probe

    cmd.validate()
    levels, mode, seed = cmd.levels(), cmd.sigma_mode, cmd.noise_seed
    _measure(
        cmd,
        lambda trained, ws: noise_probe(
            trained, cmd.run.task, ws, levels, mode, seed, scoring=cmd.run.eval, log=common.echo
        ),
    )


@probe_app.command("image")
@generated(ImageProbeCommand)
def probe_image(cmd: ImageProbeCommand) -> None:
    """Image corruptions a scanner makes, applied before the vision tower: score per corruption and connector."""
    from ..probes.image import image_probe, parse_corruptions

    corruptions = parse_corruptions(cmd.corruptions)
    _measure(
        cmd,
        lambda trained, ws: image_probe(trained, cmd.run.task, ws, corruptions, scoring=cmd.run.eval, log=common.echo),
    )


@probe_app.command("vocab")
@generated(VocabProbeCommand)
def probe_vocab(cmd: VocabProbeCommand) -> None:
    """ALIGN's vocabulary distribution over the patches of N pages, and E_text pruned to the top-k tokens."""
    from ..config.backbone import BackboneConfig
    from ..config.data import DataConfig
    from ..config.run import read_saved_config
    from ..probes.vocab import vocab_probe
    from ..run.workspace import Workspace, resolve_device

    config = read_saved_config(cmd.run)
    cmd.validate()
    try:
        backbone_cfg, data_cfg = BackboneConfig(**config["backbone"]), DataConfig(**config["data"])
    except (ValueError, KeyError, TypeError) as exc:
        raise AlignBenchError(f"{cmd.run / 'config.json'} is not an AlignBench run config ({exc})") from None
    common.quiet()
    t0 = time.time()
    ws = Workspace(backbone_cfg, data_cfg, resolve_device(cmd.device), common.echo)
    probe = vocab_probe(cmd.run, ws, cmd.docs, cmd.top_k, log=common.echo)
    _finish(cmd.output or cmd.run.parent.parent, probe, t0)
