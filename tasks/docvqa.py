"""DocVQA (lmms-eval `docvqa_val`): extractive questions on scanned documents, ANLS (tau = 0.5)."""

from alignbench.data.embedded.generators import DOCVQA
from alignbench.task import TASKS, Source, Task

TASKS.add(
    "docvqa",
    Task(
        name="docvqa",
        hf_path="lmms-lab/DocVQA",
        hf_config="DocVQA",
        eval_split="validation",
        question_field="question",
        answers_field="answers",
        prompt_suffix="\nAnswer the question using a single word or phrase.",
        metric="anls",
        max_new_tokens=32,
        description="forms, receipts, letters and tables with key/value fields",
        # The same columns as lmms-lab/DocVQA, with the train split its card declares (39,463 questions).
        train_source=Source("HuggingFaceM4/DocumentVQA", split="train"),
        lmms_eval_task="docvqa_val",
        embedded=DOCVQA,
    ),
)
