"""Evaluation: batched greedy generation (questions grouped by page, each page prefilled once per pass), per-sample
scores, aggregate score with standard error.

The blind baseline runs the same trained model with every question paired to another page's
features (a fixed derangement), so it measures what the model answers without seeing the page.

Given a journal path, predictions are appended to it and flushed batch by batch; an evaluation that was
killed resumes from it and generates only the batches it lacks. Batches are fixed by the split and the
batch size (not by what is left), so a resumed evaluation pads and decodes exactly as an uninterrupted one.

With several processes (torchrun, accelerate launch) the batches are dealt round-robin and every batch's
predictions are gathered to every process (`Dist.map_batches`): a batch decodes the same whichever process
runs it, so N processes give exactly one process's predictions, each sample once. Rank 0 alone keeps the
journal; the others learn from it which batches are done.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from .config.eval import EvalConfig
from .data.batches import encode_prompt
from .data.splits import Split
from .dist.context import context
from .io import append_synced, atomic_write
from .metrics import LMMS_EVAL_VARIANT, get_metric, mean_stderr
from .model.vlm import VLM
from .task import Task


def summarise(scores: list[float], splits: list[str | None]) -> dict:
    mean, stderr, n = mean_stderr(scores)
    out = {"score": mean, "stderr": stderr, "n": n}
    names = sorted({s for s in splits if s is not None})
    if names:
        out["per_split"] = {}
        for name in names:
            m, e, k = mean_stderr([x for x, s in zip(scores, splits) if s == name])
            out["per_split"][name] = {"score": m, "stderr": e, "n": k}
    return out


class PredictionJournal:
    """An append-only JSONL file of predictions, one line per sample, flushed and synced per batch.

    The first line fingerprints what is evaluated (task, samples, batch size, trained weights); a journal
    with another fingerprint is started afresh. A line cut short by a kill is dropped on opening."""

    def __init__(self, path: Path, fingerprint: dict):
        self.path = Path(path)
        self.done: dict[str, dict[int, str]] = {}
        self.reused = 0  # predictions taken from the journal instead of generated
        lines = self._read(fingerprint)
        atomic_write(self.path, "".join(json.dumps(x) + "\n" for x in [{"fingerprint": fingerprint}, *lines]))
        self._file = open(self.path, "a")

    def _read(self, fingerprint: dict) -> list[dict]:
        if not self.path.is_file():
            return []
        lines = []
        for n, line in enumerate(self.path.read_text().splitlines()):
            try:
                item = json.loads(line)
                if n == 0:
                    if item != {"fingerprint": fingerprint}:
                        return []  # another model or sample set: nothing here is reusable
                    continue
                self.done.setdefault(str(item["pass"]), {})[int(item["i"])] = str(item["prediction"])
            except (ValueError, KeyError, TypeError):
                break  # the tail of a write that was killed
            lines.append(item)
        return lines

    def append(self, label: str, indices: list[int], uids: list[str], texts: list[str]) -> None:
        append_synced(
            self._file,
            "".join(
                json.dumps({"pass": label, "i": i, "uid": u, "prediction": t}) + "\n"
                for i, u, t in zip(indices, uids, texts)
            ),
        )
        self.done.setdefault(label, {}).update(zip(indices, texts))

    def close(self) -> None:
        self._file.close()


class JournalView:
    """What a process other than rank 0 knows of the journal: the predictions it held when the evaluation
    started (broadcast by rank 0). Appending is rank 0's job."""

    def __init__(self, done: dict[str, dict[int, str]]):
        self.done, self.reused = done, 0

    def append(self, label: str, indices: list[int], uids: list[str], texts: list[str]) -> None:
        pass

    def close(self) -> None:
        pass


def weights_digest(model: VLM) -> str:
    """What was trained (the connector, and the LLM when it trained), as a short content hash."""
    h = hashlib.sha256()
    modules = [model.connector] + ([model.llm] if any(p.requires_grad for p in model.llm.parameters()) else [])
    for module in modules:
        for name, tensor in module.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def predict(
    model: VLM,
    task: Task,
    split: Split,
    features: torch.Tensor,
    cfg: EvalConfig,
    image_of=None,
    device: str = "cpu",
    progress=None,
    label: str = "eval",
    journal: PredictionJournal | None = None,
) -> list[str]:
    """Predictions in the order of `split.samples`, question i asked about page `image_of(i)` (default: its
    own); see `predict_passes`."""
    return predict_passes(model, task, split, features, cfg, {label: image_of}, device, progress, journal)[label]


def predict_passes(
    model: VLM,
    task: Task,
    split: Split,
    features: torch.Tensor,
    cfg: EvalConfig,
    passes: dict,
    device: str = "cpu",
    progress=None,
    journal: PredictionJournal | None = None,
) -> dict[str, list[str]]:
    """Several passes over the questions of `split` at once: `passes` maps a label to the page each question
    is asked about (a function of its index; None: its own page). Returns each pass's predictions in the
    order of `split.samples`.

    Every (pass, question) is one generation. Within a pass they are grouped by page, so that a batch holds
    all the questions about a page and the page goes through the connector and the LLM once
    (`VLM.generate`); pages come in the order of their shortest prompt, which keeps the padding small.
    Each pass has batches of its own, fixed by the split, that pass and the batch size: a pass predicts the
    same whatever other passes run beside it. (In bfloat16, which rows share a batch changes the rounding
    of every product, and a greedy answer whose two best tokens are that close flips: batches of 16 instead
    of 64 changed 20 of 300 DocVQA-like answers of a smollm2 run, benchmarks/batch_invariance.py.) With a
    journal, batches it already holds are not generated again and new ones are appended to it. The LLM
    computes in `cfg.dtype` (`eval_dtype`)."""
    with model.llm_in(eval_dtype(cfg, device, model)), torch.inference_mode():
        return _predict_passes(model, task, split, features, cfg, passes, device, progress, journal)


def _predict_passes(model, task, split, features, cfg, passes, device, progress, journal) -> dict[str, list[str]]:
    tok = model.tokenizer
    prompts = [encode_prompt(tok, task, s.question) for s in split.samples]
    batches: list[list[tuple]] = []
    for label, image_of in passes.items():
        jobs = [(label, i, image_of(i) if image_of else s.image) for i, s in enumerate(split.samples)]
        shortest: dict[int, int] = {}
        for _, i, page in jobs:
            shortest[page] = min(shortest.get(page, len(prompts[i])), len(prompts[i]))
        jobs.sort(key=lambda job: (shortest[job[2]], job[2], len(prompts[job[1]])))
        batches += [jobs[start : start + cfg.batch_size] for start in range(0, len(jobs), cfg.batch_size)]
    preds = {label: [""] * len(prompts) for label in passes}
    done = {label: journal.done.get(label, {}) if journal else {} for label in passes}
    total = sum(len(batch) for batch in batches)
    task_id = progress.add_task(" + ".join(passes), total=total, loss=float("nan")) if progress else None

    def run_batch(batch: list[tuple]) -> tuple[list[str], bool]:
        """(texts, whether the journal already held them)."""
        if all(i in done[label] for label, i, _ in batch):
            return [done[label][i] for label, i, _ in batch], True
        pages = sorted({page for _, _, page in batch})
        index = {page: k for k, page in enumerate(pages)}
        outs = model.generate(
            features[pages].to(device),
            [prompts[i] for _, i, _ in batch],
            task.max_new_tokens,
            pages=[index[page] for _, _, page in batch],
        )
        return [tok.decode(ids, skip_special_tokens=True).strip() for ids in outs], False

    for k, (texts, reused) in context().map_batches(batches, run_batch):  # this process's batches, all gathered
        batch = batches[k]
        if reused:
            journal.reused += len(batch)
        elif journal:
            for label in passes:
                mine = [(i, text) for (lab, i, _), text in zip(batch, texts) if lab == label]
                if mine:
                    journal.append(
                        label, [i for i, _ in mine], [split.samples[i].uid for i, _ in mine], [text for _, text in mine]
                    )
        for (label, i, _), text in zip(batch, texts):
            preds[label][i] = text
        if progress:
            progress.update(task_id, advance=len(batch))
    return preds


def evaluate(
    model: VLM,
    task: Task,
    split: Split,
    features: torch.Tensor,
    cfg: EvalConfig,
    device: str = "cpu",
    progress=None,
    *,
    journal: Path | None = None,
) -> tuple[dict, list[dict]]:
    """Score every sample of `split` (rows the loader skipped are counted in `n_skipped`, never scored).

    With `journal` (a file path), predictions are appended there batch by batch and an interrupted
    evaluation resumes from it; the caller removes it once the final predictions are written."""
    metric = get_metric(task.metric)
    t0 = time.time()
    model.eval()
    with model.llm_in(eval_dtype(cfg, device, model)) as dtype:
        result, records = _journaled(model, task, split, features, cfg, device, progress, metric, journal, dtype)
    result["eval_dtype"] = str(dtype).removeprefix("torch.")
    result["eval_seconds"] = round(time.time() - t0, 2)
    return result, records


def eval_dtype(cfg: EvalConfig, device, model: VLM) -> torch.dtype | None:
    """The precision the LLM scores in (`EvalConfig.dtype`): float32, or None for the model's own. `auto` is
    float32 on the CPU where the float32 weights fit in half the memory still available, else the model's own."""
    if cfg.dtype == "float32":
        return torch.float32
    if cfg.dtype != "auto" or torch.device(device).type != "cpu":
        return None
    extra = model.upcast_bytes(torch.float32)
    if extra == 0:  # already float32 (or upcast by an enclosing call)
        return torch.float32
    available = available_memory()
    return torch.float32 if available is None or extra <= available // 2 else None


def available_memory() -> int | None:
    """Bytes of memory still available (Linux: /proc/meminfo's MemAvailable); None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _journaled(model, task, split, features, cfg, device, progress, metric, journal, dtype) -> tuple[dict, list[dict]]:
    dist = context()
    appender = None
    if journal is not None:
        opened: list[PredictionJournal] = []

        def open_journal() -> dict:  # rank 0 keeps the journal; the others learn what it holds
            samples = json.dumps([(s.uid, s.question, s.image) for s in split.samples])
            opened.append(
                PredictionJournal(
                    journal,
                    {
                        "task": task.name,
                        "samples": hashlib.sha256(samples.encode()).hexdigest()[:16],
                        "batch_size": cfg.batch_size,
                        "blind": cfg.blind,
                        "batches": "per-pass",  # journals of mixed-pass batches are not resumed
                        "llm_dtype": str(dtype),
                        "weights": weights_digest(model),
                    },
                )
            )
            return opened[0].done

        done = dist.on_main(open_journal)
        appender = opened[0] if opened else JournalView(done)
    try:
        result, records = _evaluate(model, task, split, features, cfg, device, progress, metric, appender)
    finally:
        if appender:
            appender.close()
    if appender:
        result["predictions_from_journal"] = appender.reused
    return result, records


def _evaluate(model, task, split, features, cfg, device, progress, metric, journal) -> tuple[dict, list[dict]]:
    passes = {"eval": None}
    if cfg.blind and len(split.images) > 1:
        # Derangement: each question sees the next unique page, never its own.
        n_img = len(split.images)
        passes["blind"] = lambda i: (split.samples[i].image + 1) % n_img
    # One call for both passes (one progress bar, one journal); each pass has batches of its own.
    preds = predict_passes(model, task, split, features, cfg, passes, device=device, progress=progress, journal=journal)
    scores = [metric(p, s.answers) for p, s in zip(preds["eval"], split.samples)]
    result = {
        "metric": task.metric,
        **summarise(scores, [s.split for s in split.samples]),
        "n_skipped": len(split.skipped),
        "skipped": split.skip_counts(),
    }
    variant = LMMS_EVAL_VARIANT.get(task.metric)
    if variant is not None:  # the same predictions scored by lmms-eval's definition, comparable with published figures
        also = get_metric(variant)
        mean, stderr, n = mean_stderr([also(p, s.answers) for p, s in zip(preds["eval"], split.samples)])
        result["lmms_eval_metric"] = {"metric": variant, "score": mean, "stderr": stderr, "n": n}
    # "page": the question's page within this evaluation set (pages are de-duplicated by content), the cluster
    # the report's intervals resample (questions on one page are not independent).
    records = [
        {
            "uid": s.uid,
            "page": s.image,
            "question": s.question,
            "answers": s.answers,
            "prediction": p,
            "score": sc,
            **({"split": s.split} if s.split is not None else {}),
        }
        for s, p, sc in zip(split.samples, preds["eval"], scores)
    ]
    if "blind" in preds:
        blind_preds = preds["blind"]
        blind_scores = [metric(p, s.answers) for p, s in zip(blind_preds, split.samples)]
        blind = summarise(blind_scores, [s.split for s in split.samples])
        result["blind"] = {"score": blind["score"], "stderr": blind["stderr"], "n": blind["n"]}
        for rec, bp in zip(records, blind_preds):
            rec["blind_prediction"] = bp
    return result, records
