"""`anls_lmms_eval` and `relaxed_accuracy_lmms_eval` agree exactly with lmms-eval's own functions on 2,000 generated
prediction / answer pairs each (strings built from the characters where the definitions part: spaces, case,
digits, '.', ',', '%', '_', and the words nan and inf), and every run reports both definitions."""

import random

import pytest

from alignbench.metrics import anls_lmms_eval, relaxed_accuracy_lmms_eval
from tests.support.extras import require_lmms_eval

require_lmms_eval(module_level=True)
from lmms_eval.api.metrics import anls as lmms_anls  # noqa: E402  (after the check: the extra may be absent)
from lmms_eval.tasks.chartqa.utils import relaxed_correctness  # noqa: E402

PIECES = ["a", "B", "x", " ", "  ", "0", "1", "7", "12", ".", ",", "%", "-", "_", "nan", "inf", "e3", "Yes", "1,200"]


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 4)))


def test_anls_agrees_with_lmms_eval_exactly():
    rng = random.Random(0)
    pairs = [(_text(rng), [_text(rng) for _ in range(rng.randint(1, 3))]) for _ in range(2000)]
    differ = [(p, g) for p, g in pairs if anls_lmms_eval(p, g) != lmms_anls(g, [p])["anls"]]
    assert not differ, differ[:5]
    assert len({anls_lmms_eval(p, g) for p, g in pairs}) > 5  # the pairs span many scores, 0.5 included
    assert any(anls_lmms_eval(p, g) == 0.5 for p, g in pairs)


def test_relaxed_accuracy_agrees_with_lmms_eval_exactly():
    rng = random.Random(1)
    pairs = [(_text(rng), _text(rng)) for _ in range(2000)]
    pairs += [(f"{rng.uniform(-100, 100):.{rng.randint(0, 3)}f}", f"{rng.uniform(-100, 100):.1f}") for _ in range(500)]
    differ = [(p, t) for p, t in pairs if relaxed_accuracy_lmms_eval(p, [t]) != float(relaxed_correctness(p, t))]
    assert not differ, differ[:5]
    assert 0 < sum(relaxed_accuracy_lmms_eval(p, [t]) for p, t in pairs) < len(pairs)


@pytest.mark.parametrize(
    "prediction, gold, ours, lmms",
    [
        ("1,200", "1200", 1.0, 0.0),
        ("0.0", "0", 1.0, 0.0),
        (" Yes", "yes", 1.0, 0.0),
        ("nan", "nan", 1.0, 0.0),
        ("1_000", "1000", 0.0, 1.0),
    ],
)
def test_the_readme_examples_of_the_relaxed_accuracy_differences(prediction, gold, ours, lmms):
    from alignbench.metrics import relaxed_accuracy

    assert relaxed_accuracy(prediction, gold) == ours
    assert relaxed_accuracy_lmms_eval(prediction, [gold]) == lmms == float(relaxed_correctness(prediction, gold))
