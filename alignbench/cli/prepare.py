"""`alignbench prepare`: build and pretrain an embedded backbone and cache it."""

from __future__ import annotations

import sys

from ..config.prepare import PrepareCommand
from ..errors import AlignBenchError
from . import common
from .options import generated


@generated(PrepareCommand)
def prepare(cmd: PrepareCommand) -> None:
    """Build and pretrain an embedded backbone (tiny: SigLIP + Llama; smollm2: its token-page tower) and cache it."""
    from ..backbones.prepared import cache_root

    common.quiet()
    command = "alignbench " + " ".join(sys.argv[1:])
    if cmd.backbone == "smollm2":
        _prepare_token_tower(cmd, cache_root(), command)
        return
    if cmd.backbone != "tiny":
        raise AlignBenchError(f"--backbone {cmd.backbone!r}: prepare builds 'tiny' or 'smollm2'")
    from ..backbones.spec import replace_flat
    from ..backbones.tiny import TinyConfig
    from ..backbones.tiny import prepare as prepare_tiny

    cfg = TinyConfig()
    for name in ("llm_steps", "vision_steps", "soft_input_steps", "vision_pool"):
        if getattr(cmd, name) is not None:
            cfg = replace_flat(cfg, **{name: getattr(cmd, name)})
    for name, value, least in (
        ("llm-steps", cfg.llm.steps, 1),
        ("vision-steps", cfg.vision.steps, 1),
        ("soft-input-steps", cfg.soft_input.steps, 0),
        ("vision-pool", cfg.vision_pool, 1),
    ):
        if value < least:
            raise AlignBenchError(f"--{name} must be at least {least}, got {value}")
    out = cmd.output or cache_root() / "backbones" / f"tiny-{cfg.key()}"
    prepare_tiny(cfg, out, log=common.echo, command=command)


def _prepare_token_tower(cmd: PrepareCommand, cache, command: str) -> None:
    """smollm2: its LLM comes pretrained (converted from its package); the token-page tower is pretrained here."""
    from ..backbones import smollm2
    from ..backbones.spec import replace_flat
    from ..backbones.token_tower import TowerConfig
    from ..backbones.token_tower import prepare as prepare_tower
    from ..data.embedded.tokens import TokenPages

    if cmd.llm_steps is not None or cmd.soft_input_steps is not None:
        raise AlignBenchError(
            "--llm-steps and --soft-input-steps are for --backbone tiny; smollm2's LLM is pretrained already"
        )
    tower = TowerConfig()
    if cmd.vision_steps is not None:
        tower = replace_flat(tower, steps=cmd.vision_steps)
    if cmd.vision_pool is not None:
        tower = replace_flat(tower, pool=cmd.vision_pool)
    if tower.net.steps < 1 or tower.pool < 1:
        raise AlignBenchError("--vision-steps and --vision-pool must be at least 1")
    _, tokenizer, _ = smollm2.load(cache, common.echo)
    pages = TokenPages(tokenizer, tower.grid)
    out = cmd.output or cache / "backbones" / f"token-tower-{tower.key(pages)}"
    prepare_tower(tower, pages, out, log=common.echo, command=command)
