"""The training budget of each backbone where a run does not state one: the same for every connector (each value
lands in the run's config.json).

`tiny` takes TrainConfig's defaults: 750 steps of 16 pages, up to 8 questions each.

`smollm2` follows the paper's two stages scaled down: the connector alone for the first two thirds of the steps, on
`transcribe` only (the page's text as the answer, about 40 answer tokens per page against about 8 from questions:
the document counterpart of a VLM's captioning stage), then the connector with LoRA adapters on the LLM on every
training task (stage `lora`; `llm_share` of the steps, `llm_steps` in the config). On the mixture from the start,
120 connector steps left every connector near blind; on transcription MLP learns to hand the LLM the page between
steps 75 and 175 (docs/results.md, "How the smollm2 study was run"). A step through the pretrained 135M LLM
(bfloat16, 8 pages, 2 CPU cores) costs about 2.3 s (mlp) to 4.2 s (align) in the connector stage and 2.6 s (mlp)
to 4.2 s (align) in the LoRA stage (the smollm2 study's seed 0 at lr 1e-2, results/smollm2/tune/runs/*/train_curve.csv).
"""

from __future__ import annotations

import dataclasses

from ..config.run import RunConfig
from ..config.train import TrainConfig

RECIPES: dict[str, dict] = {
    "smollm2": {
        "steps": 300,
        "batch_size": 8,
        "questions_per_page": 2,
        "extra_train_tasks": ["transcribe"],
        "connector_tasks": ["transcribe"],
        "stage": "lora",
        "llm_share": 1 / 3,
    }
}


def recipe_train_tasks(backbone: str, tasks: list[str]) -> list[str]:
    """Training tasks `tasks` plus what the backbone's recipe mixes in (embedded data only; the caller checks)."""
    return list(tasks) + [t for t in RECIPES.get(backbone, {}).get("extra_train_tasks", []) if t not in tasks]


def apply_recipe(cfg: RunConfig) -> RunConfig:
    """`cfg` with the backbone's recipe where the command left it to the recipe: the training fields declared
    `recipe=True` that are None (the command line left them out) take the recipe's value, else their default; the
    recipe's extra training tasks join an embedded run that names none; its LLM stage takes its share of the steps,
    and its connector-stage tasks the steps before, when the run trains on them."""
    recipe = RECIPES.get(cfg.backbone.name, {})
    data, train = cfg.data, cfg.train
    train_tasks = data.train_tasks
    if (
        train_tasks is None
        and recipe.get("extra_train_tasks")
        and data.source == "embedded"
        and data.train_source is None
    ):
        train_tasks = recipe_train_tasks(cfg.backbone.name, [cfg.task])
    stated = {
        f.name: recipe.get(f.name, f.default)
        for f in dataclasses.fields(TrainConfig)
        if f.metadata.get("recipe") and getattr(train, f.name) is None
    }
    if "questions_per_page" in recipe:
        stated["questions_per_page"] = recipe["questions_per_page"]
    train = dataclasses.replace(train, **stated)
    llm_steps, connector_tasks = train.llm_steps, train.connector_tasks
    if llm_steps is None and train.stage != "connector" and "llm_share" in recipe:  # the recipe's LLM stage: its
        llm_steps = max(1, round(recipe["llm_share"] * train.steps))  # share of the steps, whatever --steps says
    if (
        connector_tasks is None
        and recipe.get("connector_tasks")
        and train.stage != "connector"
        and llm_steps is not None
        and llm_steps < train.steps
        and all(t in (train_tasks or [cfg.task]) for t in recipe["connector_tasks"])
    ):
        connector_tasks = list(recipe["connector_tasks"])
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(data, train_tasks=train_tasks),
        train=dataclasses.replace(train, llm_steps=llm_steps, connector_tasks=connector_tasks),
    )
