"""What the evaluation feeds the model: each pass in batches of its own, the LLM in the scoring precision."""

import copy
import dataclasses

import pytest
import torch

from alignbench import evaluate as evaluation
from alignbench.config.eval import EvalConfig
from alignbench.connector import ConnectorContext, build_connector
from alignbench.errors import AlignBenchError
from alignbench.evaluate import evaluate
from alignbench.model.vlm import VLM
from alignbench.task import TASKS


def _model(backbone, name="mlp"):
    ctx = ConnectorContext(backbone.vision_dim, backbone.llm_dim, backbone.num_patches, backbone.llm)
    return VLM(backbone, build_connector(name, ctx, {}, 3)).eval()


def _recording(model, monkeypatch):
    """Every generate call as (page features, prompts, pages asked about, the LLM's dtype at the time)."""
    calls = []
    real = model.generate

    def spy(features, prompts, max_new_tokens, pages=None):
        dtype = model.llm.get_input_embeddings().weight.dtype
        calls.append((features.clone(), [tuple(p) for p in prompts], list(pages or []), dtype))
        return real(features, prompts, max_new_tokens, pages=pages)

    monkeypatch.setattr(model, "generate", spy)
    return calls


def _same_call(a, b) -> bool:
    return torch.equal(a[0], b[0]) and a[1:] == b[1:]


@pytest.mark.parametrize("name", ["mlp", "align"])
def test_the_blind_pass_never_shares_a_batch_with_the_evaluation(ws, monkeypatch, name):
    """The evaluation's batches are the same, sample for sample, with or without the blind baseline: what a
    question is answered does not depend on another pass (in bfloat16 the rows that share a batch change the
    rounding, and greedy answers flip)."""
    task = TASKS.get("docvqa")
    split, feats = ws.split(task, "eval")
    model = _model(ws.backbone, name)
    calls = _recording(model, monkeypatch)
    alone, _ = evaluate(model, task, split, feats, EvalConfig(batch_size=4, blind=False))
    eval_calls = list(calls)
    calls.clear()
    both, _ = evaluate(model, task, split, feats, EvalConfig(batch_size=4, blind=True))
    assert len(eval_calls) == 2 and len(calls) == 4  # 6 questions in batches of 4, once per pass
    assert all(_same_call(a, b) for a, b in zip(eval_calls, calls[:2]))
    assert both["score"] == alone["score"] and "blind" in both
    assert sum(len(c[1]) for c in calls[2:]) == len(split.samples)  # then the blind pass, on its own


def test_scoring_computes_in_float32_on_the_cpu_and_puts_the_weights_back(ws, monkeypatch):
    """A bfloat16 LLM scores in float32 by default on the CPU (`--eval-dtype auto`), in its own precision with
    `model`; afterwards it holds the very weights it had, in their dtype."""
    llm = copy.deepcopy(ws.backbone.llm).to(torch.bfloat16)
    model = _model(dataclasses.replace(ws.backbone, llm=llm))
    before = {name: (p, p.detach().clone()) for name, p in llm.named_parameters()}
    task = TASKS.get("docvqa")
    split, feats = ws.split(task, "eval")
    calls = _recording(model, monkeypatch)
    result, _ = evaluate(model, task, split, feats, EvalConfig(batch_size=4))
    assert {c[3] for c in calls} == {torch.float32} and result["eval_dtype"] == "float32"
    for name, p in llm.named_parameters():
        assert p is before[name][0] and p.dtype == torch.bfloat16 and torch.equal(p, before[name][1])
    calls.clear()
    result, _ = evaluate(model, task, split, feats, EvalConfig(batch_size=4, dtype="model"))
    assert {c[3] for c in calls} == {torch.bfloat16} and result["eval_dtype"] == "bfloat16"
    # auto upcasts only where the float32 weights fit in half the memory still available
    monkeypatch.setattr(evaluation, "available_memory", lambda: 2 * model.upcast_bytes(torch.float32) - 1)
    assert evaluate(model, task, split, feats, EvalConfig(batch_size=4))[0]["eval_dtype"] == "bfloat16"
    assert evaluate(model, task, split, feats, EvalConfig(batch_size=4, dtype="float32"))[0]["eval_dtype"] == "float32"
    monkeypatch.setattr(evaluation, "available_memory", lambda: 2 * model.upcast_bytes(torch.float32))
    assert evaluate(model, task, split, feats, EvalConfig(batch_size=4))[0]["eval_dtype"] == "float32"
    assert all(p.dtype == torch.bfloat16 and torch.equal(p, before[n][1]) for n, p in llm.named_parameters())


def test_an_unknown_eval_dtype_is_refused():
    with pytest.raises(AlignBenchError, match="unknown --eval-dtype 'half'; use auto, float32, model"):
        EvalConfig(dtype="half").validate()
    with pytest.raises(AlignBenchError, match="--eval-batch-size must be at least 1"):
        EvalConfig(batch_size=0).validate()
