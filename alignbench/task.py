"""A task is data: where its samples come from, how a prompt is built, which metric scores it.

The same definition serves the embedded sets and the real Hugging Face datasets, because the
embedded sets use the real column schemas: a task carries its embedded set (`EmbeddedSet`: the document
generator and the real dataset's columns), or None when it has none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import AlignBenchError
from .registry import Registry


@dataclass(frozen=True)
class EmbeddedSet:
    """A task's embedded set, made offline from a seed (`alignbench.data.embedded`): `generate(rng, spec)` draws a
    document (a page and its questions), `row(split, doc_id, q_index, doc, qa, image)` makes one dataset row of it
    in the real dataset's `columns`."""

    generate: Callable
    columns: tuple[str, ...]
    row: Callable


@dataclass
class Source:
    """A Hugging Face dataset: hub id (or local path), config, split."""

    path: str
    config: str | None = None
    split: str = "train"
    data_files: str | None = None  # a glob inside the repository, for splits its card does not declare

    def describe(self) -> str:
        where = f"{self.path}" + (f" ({self.config})" if self.config else "")
        return f"{where}, split {self.split}" + (f", files {self.data_files}" if self.data_files else "")


@dataclass
class Task:
    name: str
    hf_path: str  # the real evaluation dataset
    hf_config: str | None
    eval_split: str
    question_field: str
    answers_field: str  # a list column (DocVQA) or a single string (ChartQA)
    prompt_suffix: str  # lmms-eval's post-prompt
    metric: str  # a name in alignbench.metrics.METRICS
    max_new_tokens: int
    split_field: str | None = None  # scores are also reported per value of this column
    description: str = ""
    train_source: Source | None = None  # what `--data hf` trains on (None: give --train-data)
    # Another schema of the same data: its column -> the task's column, applied to any source (hub or local)
    # that lacks the task's column (ChartQA's train split: query -> question, label -> answer).
    column_aliases: dict[str, str] = field(default_factory=dict)
    lmms_eval_task: str | None = None  # the same benchmark in lmms-eval (`alignbench eval --via lmms-eval`)
    embedded: EmbeddedSet | None = None  # what `--data embedded` generates (None: no embedded set)

    @property
    def eval_source(self) -> Source:
        return Source(self.hf_path, self.hf_config, self.eval_split)

    def embedded_set(self) -> EmbeddedSet:
        """The task's embedded set; a task without one (a plug-in that defines none) is one message."""
        if self.embedded is None:
            raise AlignBenchError(
                f"task {self.name!r} has no embedded set (its Task gives no `embedded` generator); "
                "use --data hf or --data with a dataset in its schema (a hub id or a local copy)"
            )
        return self.embedded

    def prompt(self, question: str) -> str:
        return f"{question}{self.prompt_suffix}"

    def answers(self, row: dict) -> list[str]:
        value = row[self.answers_field]
        if value is None:
            return []
        if isinstance(value, (list, tuple)):
            return [str(v) for v in value if v is not None and str(v).strip()]
        return [str(value)] if str(value).strip() else []


TASKS: Registry[Task] = Registry(
    "task",
    "alignbench.tasks",
    "alignbench.tasks",
    check=lambda obj: (
        None if isinstance(obj, Task) else f"is {type(obj).__name__} {obj!r:.60}, not an alignbench.task.Task"
    ),
)
