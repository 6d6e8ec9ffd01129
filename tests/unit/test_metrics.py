"""Pin the answer metrics on hand-checked cases and a few properties."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alignbench.errors import AlignBenchError
from alignbench.metrics import METRICS, anls, get_metric, mean_stderr, relaxed_accuracy

# ASCII only for the case property: Unicode case mapping is not length-preserving
# ("ß".upper() == "SS"), so case invariance only holds where lower() is a bijection.
ascii_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
any_text = st.text(max_size=30)
padding = st.text(alphabet=" \t\n", max_size=3)


# --- ANLS -------------------------------------------------------------------


def test_anls_exact_match():
    assert anls("invoice", ["invoice"]) == 1.0


def test_anls_normalises_case_and_spaces():
    assert anls("  The  Cat ", ["the cat"]) == 1.0


def test_anls_one_edit_in_four_chars():
    # Levenshtein 1 over length 4 -> NL 0.25 -> score 0.75.
    assert anls("cats", ["cat5"]) == pytest.approx(0.75)


def test_anls_threshold_drops_dissimilar():
    assert anls("abcd", ["wxyz"]) == 0.0  # NL 1.0
    assert anls("ab", ["ax"]) == 0.0  # NL exactly 0.5 is dropped (lmms-eval would keep 0.5)


def test_anls_max_over_gold_answers():
    assert anls("cats", ["dog", "cat5", "cats"]) == 1.0
    assert anls("cats", ["dog", "cat5"]) == pytest.approx(0.75)


def test_anls_bare_string_answer_is_one_answer():
    # Not iterated character by character: "c" alone would score 0.
    assert anls("cat", "cat") == 1.0


def test_anls_int_answers():
    assert anls("42", [42]) == 1.0
    assert anls("1990", [1991, 2000]) == pytest.approx(0.75)


def test_anls_empty_answers_raises():
    with pytest.raises(ValueError, match="no gold answers"):
        anls("x", [])


# --- Relaxed accuracy ---------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "target", "expected"),
    [
        ("10", "10.4", 1.0),  # 0.4/10.4 = 3.8% <= 5%
        ("10", "10.6", 0.0),  # 0.6/10.6 = 5.7% > 5%
        ("45%", "0.45", 1.0),
        ("0", "0", 1.0),
        ("0.0", "0", 1.0),
        ("0.01", "0", 0.0),
        ("Yes", "yes", 1.0),
        (" Yes ", "yes", 1.0),
        ("blue", "red", 0.0),
        ("1,200", "1200", 1.0),
        ("10", 10.4, 1.0),
        ("nan", "nan", 1.0),  # non-finite -> string comparison
    ],
)
def test_relaxed_accuracy_cases(prediction, target, expected):
    assert relaxed_accuracy(prediction, target) == expected


def test_relaxed_accuracy_metric_max_over_answers_and_empty():
    metric = get_metric("relaxed_accuracy")
    assert metric("10", ["red", "10.2"]) == 1.0
    assert metric("10", ["red", "20"]) == 0.0
    with pytest.raises(ValueError, match="no gold answers"):
        metric("10", [])


# --- Aggregation ----------------------------------------------------------------


def test_mean_stderr_values():
    mean, se, n = mean_stderr([1, 0, 1, 0])
    assert mean == 0.5
    assert se == pytest.approx(0.288675, abs=1e-6)  # sqrt(1/3) / 2
    assert n == 4


def test_mean_stderr_single_and_empty():
    assert mean_stderr([1]) == (1.0, 0.0, 1)
    mean, se, n = mean_stderr([])
    assert math.isnan(mean) and math.isnan(se) and n == 0


# --- Registry ---------------------------------------------------------------------


def test_metrics_registry():
    assert set(METRICS) == {"anls", "relaxed_accuracy", "anls_lmms_eval", "relaxed_accuracy_lmms_eval"}
    assert get_metric("anls")("the cat", ["The Cat"]) == 1.0


def test_get_metric_unknown_lists_known_names():
    with pytest.raises(AlignBenchError) as info:
        get_metric("bleu")
    message = str(info.value)
    assert "bleu" in message and "anls" in message and "relaxed_accuracy" in message


# --- Properties ---------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(any_text, st.lists(any_text, min_size=1, max_size=4))
def test_anls_in_unit_interval(prediction, answers):
    assert 0.0 <= anls(prediction, answers) <= 1.0


@settings(max_examples=200, deadline=None)
@given(any_text.filter(lambda s: s != ""))
def test_anls_self_is_one(text):
    assert anls(text, [text]) == 1.0


@settings(max_examples=200, deadline=None)
@given(ascii_text, ascii_text, padding, padding)
def test_anls_case_and_whitespace_invariant(prediction, answer, left, right):
    base = anls(prediction, [answer])
    assert anls(left + prediction.upper() + right, [answer]) == base
    assert anls(prediction, [right + answer.swapcase() + left]) == base


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_relaxed_accuracy_self_is_one(value):
    assert relaxed_accuracy(str(value), str(value)) == 1.0


@settings(max_examples=200, deadline=None)
@given(ascii_text, st.one_of(ascii_text, st.floats()))
def test_relaxed_accuracy_is_binary(prediction, target):
    assert relaxed_accuracy(prediction, target) in (0.0, 1.0)
