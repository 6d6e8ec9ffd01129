"""`alignbench eval --via lmms-eval`: lmms-eval's `simple_evaluate`, in this process, on a model instance.

lmms-eval's own task definition scores the checkpoint (its prompt, generation settings, process_results,
metric and aggregation), over exactly the rows AlignBench's evaluation selected (the source of `--data`,
`--limit`'s seeded subset, unusable rows left out): they are written to a temporary dataset, and a task in
lmms-eval's YAML format that `include`s the lmms-eval definition and points it at that dataset is loaded
through lmms-eval's `include_path`. Both evaluators therefore read the same pages with the same prompts; what
differs is the metric's definition (ANLS: lmms-eval keeps a score of exactly 0.5 and divides by the
un-normalised lengths, `anls` does neither), which each prediction's two scores make visible.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import tempfile
import time
from pathlib import Path

from ..errors import AlignBenchError
from ..metrics import get_metric, mean_stderr
from ..task import Task

INSTALL_HINT = 'install the extra: pip install -e ".[lmms-eval]" (docs/lmms-eval.md)'


def require_lmms_eval():
    try:
        import lmms_eval  # noqa: F401
        from lmms_eval.tasks import TaskManager
    except ImportError as exc:
        raise AlignBenchError(f"lmms-eval is not installed ({exc}); {INSTALL_HINT}") from None
    return TaskManager


def task_definition(name: str, include_path: str | None) -> Path:
    """The YAML file of lmms-eval's task `name` (its built-in tasks, plus `include_path`)."""
    TaskManager = require_lmms_eval()
    manager = TaskManager("WARNING", include_path=include_path)
    entry = manager.task_index.get(name)
    if entry is None:
        close = [t for t in manager.all_subtasks if name.split("_")[0] in t][:8]
        raise AlignBenchError(
            f"lmms-eval has no task {name!r}"
            + (f" (similar: {', '.join(close)})" if close else "")
            + "; pass --lmms-task with one of its tasks, or --include-path with your task folder"
        )
    if entry.get("type") != "task" or not entry.get("yaml_path") or entry["yaml_path"] == -1:
        raise AlignBenchError(
            f"lmms-eval's {name!r} is a {entry.get('type')}, not a single task; pass --lmms-task "
            "with one of its tasks (e.g. docvqa_val)"
        )
    return Path(entry["yaml_path"])


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def write_rows(split, task: Task, folder: Path) -> None:
    """The split's questions in the task's column schema, as a DatasetDict with one split, `test`. Pages are the
    decoded RGB images AlignBench scores (written losslessly), so both evaluators see the same pixels."""
    import datasets

    pngs: dict[int, bytes] = {}
    columns: dict[str, list] = {"questionId": [], task.question_field: [], task.answers_field: [], "image": []}
    if task.split_field:
        columns[task.split_field] = []
    for s in split.samples:
        if s.image not in pngs:
            pngs[s.image] = _png(split.images[s.image])
        columns["questionId"].append(s.uid)
        columns[task.question_field].append(s.question)
        columns[task.answers_field].append(list(s.answers) if split.answers_are_lists else s.answers[0])
        columns["image"].append({"bytes": pngs[s.image], "path": None})
        if task.split_field:
            columns[task.split_field].append(s.split)
    features = datasets.Features(
        {
            "questionId": datasets.Value("string"),
            task.question_field: datasets.Value("string"),
            task.answers_field: datasets.Sequence(datasets.Value("string"))
            if split.answers_are_lists
            else datasets.Value("string"),
            "image": datasets.Image(),
            **({task.split_field: datasets.Value("string")} if task.split_field else {}),
        }
    )
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(columns, features=features)}).save_to_disk(str(folder))


def task_yaml(name: str, definition: Path, data: Path) -> str:
    """A task in lmms-eval's YAML format: lmms-eval's definition, read from `data`."""
    return "\n".join(
        [
            f"include: {json.dumps(str(definition))}",
            f"task: {name}",
            f"dataset_path: {json.dumps(str(data))}",
            "dataset_name: null",
            "dataset_kwargs:",
            "  load_from_disk: true",
            "test_split: test",
            "validation_split: null",
            "training_split: null",
            "fewshot_split: null",
            "",
        ]
    )


@contextlib.contextmanager
def _own_rng():
    """simple_evaluate seeds Python's, NumPy's and torch's global generators; this process keeps its own."""
    import numpy as np
    import torch

    state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(state[0])
            np.random.set_state(state[1])


def evaluate_with_lmms_eval(model, backbone, task: Task, split, cfg, log=print) -> tuple[dict, list[dict]]:
    """(result, per-question records) of lmms-eval scoring `model` on `split` with its definition of the task."""
    require_lmms_eval()
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from .model import AlignBenchLMMS

    lmms_task = cfg.lmms_task or task.lmms_eval_task
    if not lmms_task:
        raise AlignBenchError(f"task {task.name!r} names no lmms-eval task; pass --lmms-task")
    definition = task_definition(lmms_task, cfg.include_path)
    name = f"alignbench_{lmms_task}"
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="alignbench-lmms-") as tmp:
        write_rows(split, task, Path(tmp) / "data")
        (Path(tmp) / "tasks").mkdir()
        (Path(tmp) / "tasks" / f"{name}.yaml").write_text(task_yaml(name, definition, Path(tmp) / "data"))
        # Only the derived task: it includes lmms-eval's definition by path (and so needs no index of the rest).
        manager = TaskManager("WARNING", include_path=str(Path(tmp) / "tasks"), include_defaults=False)
        lm = AlignBenchLMMS(
            model=model,
            backbone=backbone,
            device=backbone_device(backbone),
            batch_size=cfg.eval.batch_size,
            eval_dtype=cfg.eval.dtype,
        )
        log(f"lmms-eval {lmms_eval_version()}: task {lmms_task} ({definition}) on {len(split.samples)} questions")
        with _own_rng():
            out = simple_evaluate(
                model=lm,
                tasks=[name],
                task_manager=manager,
                log_samples=True,
                bootstrap_iters=1000,
                verbosity="WARNING",
            )
    if not out or name not in out.get("results", {}):
        raise AlignBenchError(f"lmms-eval returned no result for {lmms_task}")
    result, records = _result(out, name, lmms_task, definition, task, split, time.time() - t0)
    if lm.computed_in is not None:
        result["eval_dtype"] = lm.computed_in
    return result, records


def lmms_eval_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("lmms-eval")
    except metadata.PackageNotFoundError:
        return "unknown"


def backbone_device(backbone) -> str:
    return str(next(backbone.llm.parameters()).device)


def _result(out: dict, name: str, lmms_task: str, definition: Path, task: Task, split, seconds: float):
    metrics = [m["metric"] for m in out["configs"][name]["metric_list"]]
    scores = out["results"][name]
    primary = metrics[0]
    ours = get_metric(task.metric)
    records, our_scores = [], []
    for sample in sorted(out["samples"][name], key=lambda s: s["doc_id"]):
        s = split.samples[sample["doc_id"]]
        pred = sample["filtered_resps"][0]
        pred = pred[0] if isinstance(pred, list) else pred
        our_scores.append(ours(str(pred).strip(), s.answers))
        records.append(
            {
                "uid": s.uid,
                "question": s.question,
                "answers": s.answers,
                "prediction": pred,
                "score": sample.get(primary),
                f"{task.metric} (alignbench)": our_scores[-1],
                **({"split": s.split} if s.split is not None else {}),
            }
        )
    stderr = scores.get(f"{primary}_stderr,none")
    mean, our_stderr, n = mean_stderr(our_scores)
    result = {
        "metric": primary,
        "score": scores[f"{primary},none"],
        "stderr": stderr if isinstance(stderr, (int, float)) else float("nan"),
        "n": out["n-samples"][name]["effective"],
        **(
            {"per_split": {m: {"score": scores[f"{m},none"]} for m in metrics[1:] if f"{m},none" in scores}}
            if len(metrics) > 1
            else {}
        ),
        "alignbench_metric_on_these_predictions": {"metric": task.metric, "score": mean, "stderr": our_stderr, "n": n},
        "lmms_eval": {
            "version": lmms_eval_version(),
            "task": lmms_task,
            "definition": str(definition),
            "results": {k: v for k, v in scores.items() if k != "alias"},
        },
        "eval_seconds": round(seconds, 2),
    }
    return result, records
