"""Per-sample answer metrics and their aggregation.

Every task scores one prediction against its gold answers with a metric named
in ``METRICS`` (a registry: an unknown name is one message listing the known ones); the runner then
aggregates per-sample scores with
``mean_stderr`` so that every reported number carries its standard error.

ANLS (DocVQA, InfographicVQA, ...) is delegated to the ``anls`` package rather
than re-implemented, so the definition is the published one and not ours.
Note the definitional difference with lmms-eval: lmms-eval keeps a score of
exactly 0.5 and divides by un-normalised lengths; the ``anls`` package (used
here) drops NL == 0.5 and uses normalised strings. Scores can therefore differ
slightly from lmms-eval's on borderline answers or answers with extra spaces.

Relaxed accuracy (ChartQA) follows lmms-eval's ``relaxed_correctness`` with two
deliberate, documented extensions: thousands separators ("1,200") are removed
before parsing, and a gold value of 0 is compared numerically (lmms-eval falls
back to string comparison when the target parses to 0, so "0.0" vs "0" fails).
"""

import math
import re
from collections.abc import Callable, Sequence

import numpy as np
from anls import anls_score

from .registry import Registry

__all__ = [
    "LMMS_EVAL_VARIANT",
    "METRICS",
    "anls",
    "anls_lmms_eval",
    "get_metric",
    "mean_stderr",
    "relaxed_accuracy",
    "relaxed_accuracy_lmms_eval",
]


def anls(prediction: str, answers: Sequence[str] | str, threshold: float = 0.5) -> float:
    """Average Normalized Levenshtein Similarity of one prediction (max over gold answers).

    Strings are lower-cased, stripped and have internal whitespace collapsed; for
    each gold answer the score is ``1 - NL`` if ``NL < threshold`` else 0, and the
    best gold answer wins.  A bare string is one gold answer (not a sequence of
    characters), and non-string answers such as ints come from JSON annotations
    and are compared through ``str()``.

    Raises:
        ValueError: ``answers`` is empty. ``anls_score`` would fail obscurely, and
            silently scoring 0 would bias the mean; callers must skip and count
            such samples instead.
    """
    gold = [answers] if isinstance(answers, str) else [str(a) for a in answers]
    if not gold:
        raise ValueError("no gold answers")
    return float(anls_score(str(prediction), gold, threshold=threshold))


# "1,200" / "-12,345.6": commas only where they are unambiguous thousands separators.
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?")


def _to_float(text: str) -> float | None:
    """Parse a ChartQA number: thousands commas removed, trailing '%' means /100.

    Returns None for anything that is not a finite number, so that "nan", "inf"
    and Python-only spellings such as "1_000" fall back to string comparison.
    """
    text = text.strip()
    percent = text.endswith("%")
    if percent:
        text = text[:-1].rstrip()
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    if "_" in text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return value / 100.0 if percent else value


def relaxed_accuracy(prediction: str, target: str | float, tolerance: float = 0.05) -> float:
    """ChartQA relaxed accuracy: 1.0 if correct else 0.0.

    Numbers (both sides parse) are correct within ``tolerance`` relative error,
    because chart values are read off plots and are never exact; a target of 0
    requires a prediction of exactly 0 since relative error is undefined there.
    Anything else needs a case-insensitive exact match after stripping, as in the
    ChartQA paper.
    """
    pred_text = str(prediction).strip()
    target_text = str(target).strip()
    pred_value = _to_float(pred_text)
    target_value = _to_float(target_text)
    if pred_value is not None and target_value is not None:
        if target_value == 0:
            return 1.0 if pred_value == 0 else 0.0
        ok = abs(pred_value - target_value) / abs(target_value) <= tolerance
        return 1.0 if ok else 0.0
    return 1.0 if pred_text.lower() == target_text.lower() else 0.0


def mean_stderr(scores: Sequence[float]) -> tuple[float, float, int]:
    """Mean, standard error of the mean and sample count of per-sample scores.

    The standard error uses the sample standard deviation (ddof=1) divided by
    sqrt(n), so differences between connectors can be judged against noise.
    One sample gives a standard error of 0.0 (undefined, but it is reported, not
    tested); no samples give ``(nan, nan, 0)`` rather than raising, so an empty
    task shows up as missing instead of crashing a whole run.
    """
    values = np.asarray(scores, dtype=float)
    n = int(values.size)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(values.mean())
    if n == 1:
        return mean, 0.0, 1
    return mean, float(values.std(ddof=1) / math.sqrt(n)), n


def _best_relaxed_accuracy(prediction: str, answers: Sequence[str] | str) -> float:
    """Relaxed accuracy against the best of several gold answers."""
    gold = [answers] if isinstance(answers, str) else list(answers)
    if not gold:
        raise ValueError("no gold answers")
    return max(relaxed_accuracy(prediction, a) for a in gold)


# ---------------------------------------------------------------- lmms-eval's definitions
# Published DocVQA / InfoVQA / ChartQA numbers come from lmms-eval, whose definitions differ from the ones above
# on borderline cases (docs/lmms-eval.md). They are restated here, line for line, so that every run reports a
# score comparable with a published figure without lmms-eval installed (a large tree); tests check them against
# lmms-eval's own functions on generated pairs.


def _levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character each)."""
    if len(a) > len(b):
        a, b = b, a
    row = list(range(len(a) + 1))
    for j, cb in enumerate(b, 1):
        prev, row[0] = row[0], j
        for i, ca in enumerate(a, 1):
            prev, row[i] = row[i], prev if ca == cb else 1 + min(prev, row[i], row[i - 1])
    return row[-1]


def anls_lmms_eval(prediction: str, answers: Sequence[str] | str, threshold: float = 0.5) -> float:
    """ANLS as lmms-eval computes it (`lmms_eval.api.metrics.anls`): both strings lower-cased, stripped and
    whitespace-collapsed for the distance, but the distance divided by the *un-normalised* longer length; the best
    answer's 1 - NL is kept when it is at least `threshold` (so exactly 0.5 counts), else 0."""
    gold = [answers] if isinstance(answers, str) else [str(a) for a in answers]
    if not gold:
        raise ValueError("no gold answers")
    pred = str(prediction)
    det = " ".join(pred.strip().lower().split())
    values = []
    for answer in gold:
        gt = " ".join(answer.strip().lower().split())
        length = max(len(answer.upper()), len(pred.upper()))
        values.append(0.0 if length == 0 else _levenshtein(gt, det) / length)
    score = 1 - min(values)
    return 0.0 if score < threshold else float(score)


def relaxed_accuracy_lmms_eval(prediction: str, answers: Sequence[str] | str, tolerance: float = 0.05) -> float:
    """ChartQA's relaxed accuracy as lmms-eval computes it (`relaxed_correctness`): Python's float() on both
    strings as given (so " 12", "1_000", "nan" and "inf" parse; "1,200" does not), a trailing '%' divides by 100,
    a target of 0 falls back to a case-insensitive exact match; the best of several gold answers counts."""
    gold = [answers] if isinstance(answers, str) else [str(a) for a in answers]
    if not gold:
        raise ValueError("no gold answers")

    def number(text: str) -> float | None:
        try:
            return float(text.rstrip("%")) / 100.0 if text.endswith("%") else float(text)
        except ValueError:
            return None

    pred = str(prediction)
    best = 0.0
    for target in gold:
        p, t = number(pred), number(target)
        if p is not None and t:
            ok = abs(p - t) / abs(t) <= tolerance
        else:
            ok = pred.lower() == target.lower()
        best = max(best, 1.0 if ok else 0.0)
    return best


# Metrics by the name tasks use for them: ``f(prediction, gold_answers) -> score``.
METRICS: Registry[Callable[[str, list[str]], float]] = Registry(
    "metric", None, __name__, check=lambda obj: None if callable(obj) else f"is {type(obj).__name__}, not a function"
)
METRICS.add("anls", lambda pred, answers: anls(pred, answers))
METRICS.add("relaxed_accuracy", _best_relaxed_accuracy)
METRICS.add("anls_lmms_eval", lambda pred, answers: anls_lmms_eval(pred, answers))
METRICS.add("relaxed_accuracy_lmms_eval", lambda pred, answers: relaxed_accuracy_lmms_eval(pred, answers))

# Each task metric's lmms-eval counterpart, reported beside it in results.json and the leaderboard.
LMMS_EVAL_VARIANT = {"anls": "anls_lmms_eval", "relaxed_accuracy": "relaxed_accuracy_lmms_eval"}


def get_metric(name: str) -> Callable[[str, list[str]], float]:
    """Look up a metric by name; an unknown name is one message listing the known ones."""
    return METRICS.get(name)
