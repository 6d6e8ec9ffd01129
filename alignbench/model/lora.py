"""LoRA adapters on the LLM (stage `lora`), through peft.

peft's `inject_adapter_in_model` replaces the LLM's linear layers in place by LoRA layers (the frozen base
weight plus a trainable low-rank update B·A, B zero at the start, so the LLM is unchanged before training).
The model stays the same class: `inputs_embeds`, `generate` and the embedding table ALIGN reads work as before.

`adapters(llm)` gathers the A and B matrices of every LoRA layer under stable names, in module order: the
one module that trains, is checkpointed and is saved as `lora.safetensors` beside the connector.
"""

from __future__ import annotations

import torch

from ..errors import AlignBenchError

ADAPTER = "default"


def attach(llm: torch.nn.Module, rank: int, alpha: float, targets: str, seed: int) -> None:
    """Inject LoRA layers of `rank` into `llm` (in place) at the linear layers named by `targets` ("all-linear",
    or comma-separated module names such as "q_proj,v_proj"); A is initialised from `seed`."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise AlignBenchError("stage 'lora' needs the peft package: pip install 'alignbench[lora]'") from None
    names = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=names, bias="none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            inject_adapter_in_model(config, llm, adapter_name=ADAPTER)
        except ValueError as exc:  # peft: no module matched the targets
            raise AlignBenchError(f"--lora-targets {targets!r}: {exc}") from None
    if not len(adapters(llm)):
        raise AlignBenchError(f"--lora-targets {targets!r} matched no linear layer of the LLM")


def adapters(llm: torch.nn.Module) -> torch.nn.ModuleDict:
    """The LoRA matrices of `llm` as one module (shared parameters, not copies); empty without LoRA."""
    found = torch.nn.ModuleDict()
    for name, module in llm.named_modules():
        a, b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if isinstance(a, torch.nn.ModuleDict) and ADAPTER in a and isinstance(b, torch.nn.ModuleDict):
            key = name.replace(".", "__")
            found[f"{key}__A"], found[f"{key}__B"] = a[ADAPTER], b[ADAPTER]
    return found
