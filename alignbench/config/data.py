"""Where a run's data comes from, how much of it, and its seed."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import AlignBenchError
from .base import check_seed, opt

DATA_HELP = (
    "'embedded', 'hf' (the task's own Hugging Face datasets), a dataset id ID[:CONFIG][@SPLIT], or a local "
    "copy (save_to_disk folder, parquet files, downloaded dataset repository)."
)


@dataclass
class DataConfig:
    source: str = opt("embedded", DATA_HELP, flag="data")
    train_source: str | None = opt(
        None,
        "Training set (same forms as --data); default: the task's training set for "
        "--data hf, else the train split of --data.",
        flag="train-data",
    )
    # Each embedded page carries several questions
    train_docs: int = opt(1200, "Pages in the embedded train split.")
    eval_questions: int = opt(300, "Questions in the embedded evaluation split.")
    seed: int = opt(0, "Data seed: the pages generated and the order of batches.")
    eval_limit: int | None = opt(
        None, "Evaluate a seeded subset of N questions (the same subset for every connector and seed).", flag="limit"
    )
    limit_seed: int = 0  # fixed, so every connector and every data seed is scored on the same subset
    train_limit: int | None = opt(None, "Train on a seeded subset of N rows of a real training set.")
    eval_split: str = "eval"  # "val" scores a held-out validation split instead (learning-rate search)
    train_tasks: list[str] | None = opt(
        None,
        "Comma-separated tasks whose training splits are mixed (a step from each "
        "in turn); default: the evaluated task's alone.",
    )

    def validate(self) -> None:
        check_seed(self.seed, "--seed")
        for name in ("train_docs", "eval_questions"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise AlignBenchError(
                    f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)!r}"
                )
        for name, flag in (("eval_limit", "--limit"), ("train_limit", "--train-limit")):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise AlignBenchError(f"{flag} must be a positive integer, got {value!r}")

    def embedded_for(self, split: str) -> bool:
        """Whether `split` ("train", or an evaluation split) comes from the embedded sets."""
        return (self.train_source if split == "train" and self.train_source else self.source) == "embedded"
