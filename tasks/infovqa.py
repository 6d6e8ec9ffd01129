"""InfographicVQA (lmms-eval `infovqa_val`): questions on infographics, ANLS (tau = 0.5)."""

from alignbench.data.embedded.generators import INFOVQA
from alignbench.task import TASKS, Source, Task

TASKS.add(
    "infovqa",
    Task(
        name="infovqa",
        hf_path="lmms-lab/DocVQA",
        hf_config="InfographicVQA",
        eval_split="validation",
        question_field="question",
        answers_field="answers",
        prompt_suffix="\nAnswer the question using a single word or phrase.",
        metric="anls",
        max_new_tokens=32,
        description="titles, big numbers, percentages, icons, two-column layout",
        # The repository holds the train files (23,946 questions) though its card declares only validation/test.
        train_source=Source("lmms-lab/DocVQA", split="train", data_files="InfographicVQA/train-*.parquet"),
        lmms_eval_task="infovqa_val",
        embedded=INFOVQA,
    ),
)
