"""The one prompt encoder: how a page and its questions become the token sequence the LLM reads.

Training (`data.batches.collate`), evaluation and generation (`data.batches.encode_prompt`), `--via lmms-eval` and
the lmms-eval model all build their sequences here, so what a model is trained on is what it is asked at test time:

    [prefix] [visual tokens] before + prompt_1 + after   answer_1 + answer_end
                             next_turn + prompt_2 + after  answer_2 + answer_end   ...

- A tokenizer with a chat template gets the template exactly: `prefix` is everything before the user's content
  (BOS if the template writes one, a system turn, the user header), `after` closes the user turn and opens the
  assistant's, `answer_end` is the template's end of the assistant turn (trained, so the model learns to stop),
  `next_turn` opens the next user turn when several questions about one page share a training sequence. All four
  are read off the template itself by rendering a two-turn conversation with placeholders.
- A tokenizer without one gets the special tokens it puts first (BOS) as `prefix`, nothing around the prompt, and
  its EOS as `answer_end`.

Text is tokenized without added special tokens everywhere but the prefix, so BOS is fed once. Generation stops at
any of `stop_ids`: the tokenizer's EOS and the template's end-of-turn token.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

from .errors import AlignBenchError

# Chat templates that print today's date (Llama 3.x) would make prompts depend on the day a run starts.
TEMPLATE_DATE = "26 Jul 2024"
_IMAGE, _PROMPT, _ANSWER, _PROMPT2 = (
    "\u2063IMAGE\u2063",
    "\u2063PROMPT\u2063",
    "\u2063ANSWER\u2063",
    "\u2063PROMPT2\u2063",
)


@dataclass
class PromptFormat:
    prefix: list[int]  # token ids before the visual tokens
    before: str = ""  # between the visual tokens and the first prompt
    after: str = ""  # after every prompt: the end of the user turn and the assistant header
    answer_end: list[int] = field(default_factory=list)  # after every answer (trained): the end of the assistant turn
    next_turn: str = ""  # before every prompt after the first in one sequence: the next user turn's opening
    stop_ids: frozenset[int] = frozenset()  # generation ends at any of these

    def prompt_ids(self, tokenizer, prompt: str, first: bool = True) -> list[int]:
        """The tokens of a question turn (everything up to where the answer starts)."""
        return _ids(tokenizer, (self.before if first else self.next_turn) + prompt + self.after)

    def answer_ids(self, tokenizer, answer: str) -> list[int]:
        """The tokens of an answer turn, its end included: what training predicts."""
        return _ids(tokenizer, answer) + list(self.answer_end)

    def sequence(self, tokenizer, turns: list[tuple[str, str]]) -> tuple[list[int], list[bool]]:
        """The text part of a training sequence for (prompt, answer) turns about one page, and which of its
        tokens are trained (the answers and their ends)."""
        ids: list[int] = []
        trained: list[bool] = []
        for k, (prompt, answer) in enumerate(turns):
            p, a = self.prompt_ids(tokenizer, prompt, first=k == 0), self.answer_ids(tokenizer, answer)
            ids += p + a
            trained += [False] * len(p) + [True] * len(a)
        return ids, trained


def stop_ids(tokenizer, llm=None) -> frozenset[int]:
    """Where an answer ends: the prompt format's stop tokens (EOS, a chat template's end of turn) and the EOS ids
    of the LLM's generation config (one id or a list)."""
    eos = getattr(getattr(llm, "generation_config", None), "eos_token_id", None)
    extra = set(eos) if isinstance(eos, (list, tuple)) else ({eos} if eos is not None else set())
    return prompt_format(tokenizer).stop_ids | extra


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


_FORMATS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prompt_format(tokenizer) -> PromptFormat:
    """The tokenizer's prompt format (see the module docstring), computed once per tokenizer."""
    try:
        return _FORMATS[tokenizer]
    except (KeyError, TypeError):
        pass
    fmt = _chat_format(tokenizer) if getattr(tokenizer, "chat_template", None) else _plain_format(tokenizer)
    try:
        _FORMATS[tokenizer] = fmt
    except TypeError:
        pass
    return fmt


def _eos(tokenizer) -> set[int]:
    return {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()


def _plain_format(tokenizer) -> PromptFormat:
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    start = next((i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain), 0)
    if tokenizer.eos_token_id is None:
        raise AlignBenchError(
            "the tokenizer has no EOS token and no chat template, so an answer cannot end; use a "
            "tokenizer with an eos_token"
        )
    return PromptFormat(full[:start], answer_end=[tokenizer.eos_token_id], stop_ids=frozenset(_eos(tokenizer)))


def _render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt, date_string=TEMPLATE_DATE
    )


def _chat_format(tokenizer) -> PromptFormat:
    """Read the format off the template: one question with the image, its answer, a second question."""
    refuse = (
        "the tokenizer's chat template does not keep the messages as given ({}); pass --chat-template none to "
        "use plain text"
    )
    two_turns = _render(
        tokenizer,
        [
            {"role": "user", "content": _IMAGE + _PROMPT},
            {"role": "assistant", "content": _ANSWER},
            {"role": "user", "content": _PROMPT2},
        ],
        True,
    )
    one_turn = _render(tokenizer, [{"role": "user", "content": _IMAGE + _PROMPT}], True)
    for slot in (_IMAGE, _PROMPT, _ANSWER, _PROMPT2):
        if two_turns.count(slot) != 1:
            raise AlignBenchError(
                refuse.format(f"{slot.strip(chr(0x2063)).lower()} placeholder seen {two_turns.count(slot)} times")
            )
    head, rest = two_turns.split(_IMAGE)
    before, rest = rest.split(_PROMPT)
    after, rest = rest.split(_ANSWER)
    closing, after2 = rest.split(_PROMPT2)
    if one_turn != head + _IMAGE + before + _PROMPT + after or after2 != after:
        raise AlignBenchError(refuse.format("a question's turn reads differently in a longer conversation"))
    # The end of the assistant turn: the closing text up to its first special token (trained, a stop token); the
    # rest opens the next user turn. A template that writes no special token there ends answers with EOS.
    specials = {t: i for t, i in zip(tokenizer.all_special_tokens, tokenizer.all_special_ids)}
    specials.update({t.content: i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if t.special})
    found = [(closing.find(t), t) for t in specials if t and t in closing]
    if found:
        at, token = min(found, key=lambda x: (x[0], -len(x[1])))
        end_text, next_turn = closing[: at + len(token)], closing[at + len(token) :]
        answer_end = _ids(tokenizer, end_text)
        stop = {specials[token]}
    elif tokenizer.eos_token_id is not None:
        answer_end, next_turn, stop = [tokenizer.eos_token_id], closing, set()
    else:
        raise AlignBenchError(refuse.format("no token ends the assistant's turn and the tokenizer has no EOS"))
    return PromptFormat(_ids(tokenizer, head), before, after, answer_end, next_turn, frozenset(stop | _eos(tokenizer)))
