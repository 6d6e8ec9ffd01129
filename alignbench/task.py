"""A task is data: where its samples come from, how a prompt is built, which metric scores it.

The same definition serves the embedded sets and the real Hugging Face datasets, because the
embedded sets use the real column schemas.
"""

from __future__ import annotations

from dataclasses import dataclass

from .registry import Registry


@dataclass
class Task:
    name: str
    hf_path: str  # the real evaluation dataset
    hf_config: str | None
    eval_split: str
    question_field: str
    answers_field: str  # a list column (DocVQA) or a single string (ChartQA)
    prompt_suffix: str  # lmms-eval's post-prompt
    metric: str  # a key of alignbench.metrics.METRICS
    max_new_tokens: int
    split_field: str | None = None  # scores are also reported per value of this column
    description: str = ""

    def prompt(self, question: str) -> str:
        return f"{question}{self.prompt_suffix}"

    def answers(self, row: dict) -> list[str]:
        value = row[self.answers_field]
        if value is None:
            return []
        if isinstance(value, (list, tuple)):
            return [str(v) for v in value if v is not None and str(v).strip()]
        return [str(value)] if str(value).strip() else []


TASKS: Registry[Task] = Registry("task", "alignbench.tasks", "alignbench.tasks")
