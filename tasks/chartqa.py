"""ChartQA (lmms-eval `chartqa`): questions on charts, relaxed accuracy (5 %), overall and per split
(`type`: human_test / augmented_test)."""

from alignbench.data.embedded.generators import CHARTQA
from alignbench.task import TASKS, Source, Task

TASKS.add(
    "chartqa",
    Task(
        name="chartqa",
        hf_path="lmms-lab/ChartQA",
        hf_config=None,
        eval_split="test",
        question_field="question",
        answers_field="answer",
        prompt_suffix="\nAnswer the question with a single word.",
        metric="relaxed_accuracy",
        max_new_tokens=16,
        split_field="type",
        description="bar, line and pie charts; values, extremes, differences",
        # ChartQA's train split, in another schema (query, label: a list, human_or_machine), mapped below.
        train_source=Source("HuggingFaceM4/ChartQA", split="train"),
        column_aliases={"query": "question", "label": "answer", "human_or_machine": "type"},
        lmms_eval_task="chartqa",
        embedded=CHARTQA,
    ),
)
