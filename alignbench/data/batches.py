"""Training batches: the same pages in the same order for every connector (`BatchOrder`), questions grouped by page
(`pages`), and the text part of each sequence (`collate`, through the one prompt encoder `alignbench.prompt`)."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import AlignBenchError
from ..prompt import prompt_format
from ..task import Task
from .splits import Sample, Split


class BatchOrder:
    """The same sequence of index batches for every connector: epochs of a seeded permutation.

    Its state (the generator's state and the rest of the current epoch) is plain JSON, so a resumed run
    continues the very same sequence."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size = n, batch_size
        self.rng = np.random.default_rng(seed)
        self.pending: list[int] = []

    def next(self) -> list[int]:
        while len(self.pending) < self.batch_size:
            self.pending.extend(self.rng.permutation(self.n).tolist())
        batch, self.pending = self.pending[: self.batch_size], self.pending[self.batch_size :]
        return batch

    def state_dict(self) -> dict:
        return {
            "n": self.n,
            "batch_size": self.batch_size,
            "generator": self.rng.bit_generator.state,
            "pending": list(self.pending),
        }

    def load_state_dict(self, state: dict) -> None:
        if (state["n"], state["batch_size"]) != (self.n, self.batch_size):
            raise AlignBenchError(
                f"saved data order is for {state['n']} pages in batches of {state['batch_size']}, "
                f"not {self.n} in batches of {self.batch_size}; start a new run"
            )
        self.rng.bit_generator.state = state["generator"]
        self.pending = [int(i) for i in state["pending"]]


def batches(n: int, batch_size: int, steps: int, seed: int):
    """`steps` batches of `BatchOrder(n, batch_size, seed)`."""
    order = BatchOrder(n, batch_size, seed)
    for _ in range(steps):
        yield order.next()


def encode_prompt(tokenizer, task: Task, question: str) -> list[int]:
    """The tokens a generation is prompted with after the page: the question's user turn and, for a chat model,
    the assistant header (`alignbench.prompt`)."""
    return prompt_format(tokenizer).prompt_ids(tokenizer, task.prompt(question))


def pages(split: Split, max_questions: int) -> list[list[int]]:
    """Sample indices grouped by page (at most `max_questions` per page, in dataset order)."""
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(split.samples):
        if s.answers:
            groups.setdefault(s.image, []).append(i)
    return [idx[:max_questions] for idx in groups.values()]


def collate(tokenizer, task: Task, samples: list[Sample] | list[list[Sample]]):
    """Right-padded text parts of training sequences (`alignbench.prompt`); labels mark the answers and their end
    of turn only.

    An item may be a list of samples on the same page: their question/answer turns then follow each other
    in one sequence after the page, so one pass over the visual tokens trains on every question of a page."""
    fmt = prompt_format(tokenizer)
    seqs, labels = [], []
    for item in samples:
        turns = [(task.prompt(s.question), s.answers[0]) for s in (item if isinstance(item, list) else [item])]
        seq, trained = fmt.sequence(tokenizer, turns)
        seqs.append(seq)
        labels.append([t if keep else -100 for t, keep in zip(seq, trained)])
    length = max(map(len, seqs))
    ids = torch.full((len(seqs), length), tokenizer.pad_token_id, dtype=torch.long)
    lab = torch.full((len(seqs), length), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for b, (s, lbl) in enumerate(zip(seqs, labels)):
        ids[b, : len(s)] = torch.tensor(s)
        lab[b, : len(s)] = torch.tensor(lbl)
        mask[b, : len(s)] = 1
    return ids, mask, lab
