"""The one merge path: declared token counts, answer-only loss, batched generation equals single."""

import pytest
import torch

from alignbench.connector import CONNECTORS, ConnectorContext, build_connector
from alignbench.data.batches import collate, encode_prompt
from alignbench.data.splits import Sample
from alignbench.model.vlm import VLM
from alignbench.task import TASKS


def _model(backbone, name):
    ctx = ConnectorContext(backbone.vision_dim, backbone.llm_dim, backbone.num_patches, backbone.llm)
    return VLM(backbone, build_connector(name, ctx)).eval()


@pytest.mark.parametrize("name", CONNECTORS.names())
def test_loss_counts_answer_tokens_only(tiny_backbone, name):
    torch.manual_seed(0)
    model = _model(tiny_backbone, name)
    task = TASKS.get("docvqa")
    samples = [
        Sample(0, "What is the TOTAL amount?", ["12.40"], None, "a"),
        Sample(1, "Who signed the letter?", ["ANNA"], None, "b"),
    ]
    ids, mask, labels = collate(model.tokenizer, task, samples)
    feats = torch.randn(2, tiny_backbone.num_patches, tiny_backbone.vision_dim)
    loss = model.loss(feats, ids, mask, labels)
    # reference: full logits over the merged sequence, cross-entropy on answer positions only
    embeds, full_mask, n_vis = model.merge(feats, ids, mask)
    logits = model.llm(inputs_embeds=embeds, attention_mask=full_mask).logits[:, n_vis:-1]
    target = labels[:, 1:]
    ref = torch.nn.functional.cross_entropy(logits[target != -100], target[target != -100])
    torch.testing.assert_close(loss, ref, rtol=1e-4, atol=1e-4)
    n_answer = (labels != -100).sum().item()
    assert n_answer == sum(len(model.tokenizer(s.answers[0])["input_ids"]) + 1 for s in samples)


@pytest.mark.parametrize("name", CONNECTORS.names())
def test_batched_generation_equals_one_at_a_time(tiny_backbone, name):
    """The evaluation's generation (pages prefilled once, prompts left-padded after them, finished answers
    leaving the batch) returns, for every question, what one Hugging Face `generate` call on that question
    alone returns: for a batch of distinct pages, for questions sharing pages, and one at a time."""
    torch.manual_seed(0)
    model = _model(tiny_backbone, name)
    task = TASKS.get("chartqa")
    questions = [
        "What is the value of CAR?",
        "Which category has the highest value?",
        "Why?",
        "What is the difference between the largest and the smallest value?",
    ]
    prompts = [encode_prompt(model.tokenizer, task, q) for q in questions]
    assert len({len(p) for p in prompts}) == 4  # different lengths exercise left padding
    feats = torch.randn(3, tiny_backbone.num_patches, tiny_backbone.vision_dim)
    pages = [2, 0, 2, 1]  # page 2 is read by two questions
    reference = [model.generate_reference(feats[p : p + 1], [q], 8)[0] for p, q in zip(pages, prompts)]
    assert len({len(r) for r in reference}) > 1  # answers end at different steps: rows leave the batch
    assert model.generate(feats, prompts, 8, pages=pages) == reference
    assert model.generate(feats[pages], prompts, 8) == reference  # one copy of the page per question
    assert [model.generate(feats[p : p + 1], [q], 8)[0] for p, q in zip(pages, prompts)] == reference
    assert model.generate_reference(feats[pages], prompts, 8) == reference  # the reference batched, too


@pytest.mark.filterwarnings("ignore:Passing `repetition_penalty`")
def test_a_generation_config_that_changes_the_logits_goes_through_transformers(tiny_backbone, monkeypatch):
    """A repetition penalty (or any logits processor) in the LLM's generation config: the fast path would
    ignore it, so generation is Hugging Face's, with the same answers as one call per question."""
    model = _model(tiny_backbone, "mlp")
    task = TASKS.get("docvqa")
    prompts = [encode_prompt(model.tokenizer, task, q) for q in ["Who signed?", "What is the TOTAL amount?"]]
    feats = torch.randn(2, tiny_backbone.num_patches, tiny_backbone.vision_dim)
    monkeypatch.setattr(model.llm.generation_config, "repetition_penalty", 3.0)
    calls = []
    reference = model.generate_reference
    monkeypatch.setattr(model, "generate_reference", lambda *a: calls.append(1) or reference(*a))
    assert model.generate(feats, prompts, 8, pages=[1, 1]) == [reference(feats[1:2], [p], 8)[0] for p in prompts]
    assert calls
