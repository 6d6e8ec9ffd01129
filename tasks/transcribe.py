"""Transcription (embedded only): the page's text, line by line. A training task with a dense reading signal, the
document counterpart of a VLM's captioning stage; `smollm2` runs mix it into their training
(`alignbench.train.recipes`)."""

from alignbench.data.embedded.generators import TRANSCRIBE
from alignbench.task import TASKS, Task

TASKS.add(
    "transcribe",
    Task(
        name="transcribe",
        hf_path="",
        hf_config=None,
        eval_split="validation",  # no real dataset: --data embedded only
        question_field="question",
        answers_field="answers",
        prompt_suffix="",
        metric="anls",
        max_new_tokens=96,
        description="embedded only: the page's text, line by line (a reading task for training)",
        embedded=TRANSCRIBE,
    ),
)
