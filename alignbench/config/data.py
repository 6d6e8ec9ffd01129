"""Where a run's data comes from, how much of it, and its seed."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import AlignBenchError
from .base import check_seed


@dataclass
class DataConfig:
    # "embedded", "hf" (the task's own Hugging Face datasets), or a dataset: a hub id (ID[:CONFIG][@SPLIT]) or a
    # local copy (a save_to_disk folder, parquet files, a downloaded hub repository)
    source: str = "embedded"
    train_source: str | None = None  # None: the task's training set for "hf", else `source` (its train split)
    train_docs: int = 1200  # pages in the embedded train split (each carries several questions)
    eval_questions: int = 300  # questions in the embedded evaluation split
    seed: int = 0  # data seed: which pages are generated and the order of training batches
    eval_limit: int | None = None  # evaluate a subset of N questions, picked by `limit_seed`
    limit_seed: int = 0  # fixed, so every connector and every data seed is scored on the same subset
    train_limit: int | None = None  # train on a subset of N rows of a real training set (picked by limit_seed)
    eval_split: str = "eval"  # "val" scores a held-out validation split instead (learning-rate search)
    # Tasks whose training splits are mixed, a step from each in turn; None: the evaluated task's alone
    train_tasks: list[str] | None = None

    def validate(self) -> None:
        check_seed(self.seed, "--seed")
        for name in ("train_docs", "eval_questions"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise AlignBenchError(f"--{name.replace('_', '-')} must be a positive integer, got "
                                      f"{getattr(self, name)!r}")
        for name, flag in (("eval_limit", "--limit"), ("train_limit", "--train-limit")):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise AlignBenchError(f"{flag} must be a positive integer, got {value!r}")

    def embedded_for(self, split: str) -> bool:
        """Whether `split` ("train", or an evaluation split) comes from the embedded sets."""
        return (self.train_source if split == "train" and self.train_source else self.source) == "embedded"
