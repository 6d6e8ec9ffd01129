"""DocVQA (lmms-eval `docvqa_val`): extractive questions on scanned documents, ANLS (tau = 0.5)."""

from alignbench.task import TASKS, Task

TASKS.add("docvqa", Task(
    name="docvqa",
    hf_path="lmms-lab/DocVQA", hf_config="DocVQA", eval_split="validation",
    question_field="question", answers_field="answers",
    prompt_suffix="\nAnswer the question using a single word or phrase.",
    metric="anls", max_new_tokens=32,
    description="forms, receipts, letters and tables with key/value fields",
))
