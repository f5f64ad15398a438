"""selfrag/eval/metrics.py: the paper's `match` and the strict metrics beside it (spec §10, §4.2 step 6, §13.10)."""

from __future__ import annotations

import pytest

from selfrag.eval.metrics import (
    METRICS,
    accuracy,
    exact_match,
    f1,
    map_fact_label,
    match,
    metric_fn,
    normalize_answer,
    parse_choice,
    parse_true_false,
    token_f1,
)

# ------------------------------------------------------------------------------------------------------ match


def test_match_substring():
    assert match("The author is Jane Austen.", ["Jane Austen"]) == 1.0
    assert match("The author is Jane Austen.", ["Charlotte Bronte", "Austen"]) == 1.0
    assert match("The author is Jane Austen.", ["Charlotte Bronte"]) == 0.0


def test_match_is_case_sensitive_and_unnormalised():
    assert match("the author is jane austen", ["Jane Austen"]) == 0.0
    assert match("Jane  Austen", ["Jane Austen"]) == 0.0  # no whitespace normalisation
    assert match("true", ["True"]) == 0.0


def test_match_returns_float_and_empty_golds():
    assert isinstance(match("x", ["x"]), float)
    assert match("anything", []) == 0.0
    assert match("anything", [""]) == 1.0  # the empty string is a substring of everything


def test_match_is_lenient_for_arc_letters():
    # §10 / module doc: an ARC gold "C" matches any capital C in the output.
    assert match("Carbon dioxide", ["C"]) == 1.0
    assert match("B: Nitrogen. Carbon is not it.", ["C"]) == 1.0
    assert match("oxygen", ["C"]) == 0.0


def test_map_fact_label():
    assert map_fact_label("SUPPORTS") == "true"
    assert map_fact_label("The evidence REFUTES it") == "false"
    assert map_fact_label("SUPPORTS, not REFUTES") == "true"  # SUPPORTS is checked first
    assert map_fact_label("supports") == "supports"  # case-sensitive
    assert map_fact_label("true") == "true"


def test_metric_fn_match_maps_supports_refutes():
    fn = metric_fn("match", "fever")
    assert fn("SUPPORTS", ["true"]) == 1.0
    assert fn("The claim SUPPORTS the statement.", ["true"]) == 1.0
    assert fn("REFUTES", ["false"]) == 1.0
    assert fn("REFUTES", ["true"]) == 0.0
    assert fn("true, it is correct", ["true"]) == 1.0
    assert fn("True", ["true"]) == 0.0  # still case-sensitive
    # The mapping applies whatever the task.
    assert metric_fn("match", None)("SUPPORTS", ["true"]) == 1.0
    assert metric_fn("match", None)("Paris", ["Paris"]) == 1.0


# ----------------------------------------------------------------------------------------- normalize / EM / F1


def test_normalize_answer():
    assert normalize_answer("The  Quick, Brown Fox!") == "quick brown fox"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("  Theory of\tthe\nmind ") == "theory of mind"  # 'Theory' is not an article
    assert normalize_answer("U.S.A.") == "usa"
    assert normalize_answer("") == ""
    assert normalize_answer("The") == ""


def test_normalize_answer_removes_punctuation_before_articles():
    # "the-end" loses its hyphen first, so "theend" is no longer the article "the".
    assert normalize_answer("the-end") == "theend"
    assert normalize_answer("a, b") == "b"


def test_exact_match():
    assert exact_match("The Eiffel Tower!", ["eiffel tower"]) == 1.0
    assert exact_match("Eiffel Tower in Paris", ["eiffel tower"]) == 0.0
    assert exact_match("Paris", ["London", "paris."]) == 1.0
    assert exact_match("Paris", []) == 0.0
    assert isinstance(exact_match("a", ["a"]), float)


def test_token_f1_hand_computed():
    # pred tokens [jane, austen, novelist], gold [jane, austen]: overlap 2, P = 2/3, R = 1 -> F1 = 0.8
    assert token_f1("Jane Austen, novelist", "Jane Austen") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1), abs=1e-15)
    assert token_f1("Jane Austen, novelist", "Jane Austen") == pytest.approx(0.8, abs=1e-15)


def test_token_f1_counts_multiset_overlap():
    # pred [paris, paris, france], gold [paris]: overlap min(2,1) = 1, P = 1/3, R = 1 -> F1 = 0.5
    assert token_f1("Paris Paris France", "paris") == pytest.approx(0.5, abs=1e-15)
    # pred [paris, france], gold [paris, paris, city]: overlap 1, P = 1/2, R = 1/3 -> F1 = 2*(1/6)/(5/6) = 0.4
    assert token_f1("Paris France", "Paris Paris city") == pytest.approx(0.4, abs=1e-15)


def test_token_f1_zero_overlap_and_empty():
    assert token_f1("London", "Paris") == 0.0
    assert token_f1("", "Paris") == 0.0
    assert token_f1("The", "a") == 0.0  # both normalise to nothing


def test_f1_max_over_golds():
    # gold 1: overlap 1 of pred [marie, curie, physicist] (3) and gold [curie] (1): P=1/3, R=1 -> 0.5
    # gold 2: [physicist, chemist] (2): overlap 1, P=1/3, R=1/2 -> 2*(1/6)/(5/6) = 0.4
    assert f1("Marie Curie, physicist", ["Curie", "physicist and chemist"]) == pytest.approx(0.5, abs=1e-15)
    assert f1("Marie Curie, physicist", ["physicist chemist"]) == pytest.approx(0.4, abs=1e-15)
    assert f1("Marie Curie", ["Marie Curie"]) == 1.0
    assert f1("anything", []) == 0.0


# ------------------------------------------------------------------------------------------------ parse_choice


@pytest.mark.parametrize(
    "prediction, letter",
    [
        ("B", "B"),
        ("B.", "B"),
        ("(C)", "C"),
        ("  D", "D"),
        ("A: Oxygen", "A"),
        ("C, carbon dioxide", "C"),
        ("(B) Nitrogen", "B"),
        ("B: the Moon", "B"),
        ("The answer is D", "D"),
        ("The answer is (C).", "C"),
        ("answer: B", "B"),
        ("The correct option is A.", "A"),
        ("My choice: D", "D"),
        ("Carbon dioxide", None),
        ("Because plants need light", None),
        ("", None),
        ("E", None),
        ("E: none of these", None),
        ("oxygen", None),
        ("A dog barks", None),  # an article, not an option
        ("The answer is a dog", None),
    ],
)
def test_parse_choice(prediction, letter):
    assert parse_choice(prediction) == letter


# -------------------------------------------------------------------------------------------- parse_true_false


@pytest.mark.parametrize(
    "prediction, label",
    [
        ("True.", "true"),
        ("true", "true"),
        ("TRUE", "true"),
        ("false", "false"),
        ("False, the claim is wrong.", "false"),
        ("REFUTES", "false"),
        ("SUPPORTS", "true"),
        ("The evidence supports it", "true"),
        ("It is false, not true", "false"),  # the first such word wins
        ("it is not", None),
        ("maybe", None),
        ("untrue", None),  # whole words only
        ("", None),
    ],
)
def test_parse_true_false(prediction, label):
    assert parse_true_false(prediction) == label


# --------------------------------------------------------------------------------------------------- accuracy


def test_accuracy_arc_c():
    assert accuracy("B: the Moon", ["B"], "arc_c") == 1.0
    assert accuracy("The answer is C", [" c "], "arc_c") == 1.0  # gold stripped and upper-cased
    assert accuracy("B", ["C"], "arc_c") == 0.0
    # Strict where `match` is lenient: "Carbon dioxide" commits to no letter.
    assert accuracy("Carbon dioxide", ["C"], "arc_c") == 0.0
    assert match("Carbon dioxide", ["C"]) == 1.0


def test_accuracy_fever():
    assert accuracy("True, it is correct.", ["true"], "fever") == 1.0
    assert accuracy("SUPPORTS", ["true"], "fever") == 1.0
    assert accuracy("REFUTES", ["false"], "fever") == 1.0
    assert accuracy("false", [" True "], "fever") == 0.0
    assert accuracy("true", [" True "], "fever") == 1.0  # gold stripped and lower-cased
    assert accuracy("it is not", ["false"], "fever") == 0.0


def test_accuracy_open_task_is_exact_match():
    assert accuracy("The Eiffel Tower.", ["eiffel tower"], None) == 1.0
    assert accuracy("It is the Eiffel Tower.", ["eiffel tower"], None) == 0.0
    assert accuracy("Jane Austen", ["Jane Austen"], "popqa") == 1.0


# -------------------------------------------------------------------------------------------------- metric_fn


def test_metric_fn_dispatch():
    assert METRICS == ("match", "accuracy", "exact_match", "f1")
    assert metric_fn("exact_match", None) is exact_match
    assert metric_fn("f1", None) is f1
    assert metric_fn("accuracy", "arc_c")("Carbon dioxide", ["C"]) == 0.0
    assert metric_fn("accuracy", "arc_c")("(C)", ["C"]) == 1.0
    assert metric_fn("accuracy", "fever")("SUPPORTS", ["true"]) == 1.0
    assert metric_fn("accuracy", None)("paris", ["Paris"]) == 1.0
    assert metric_fn("f1", None)("Jane Austen, novelist", ["Jane Austen"]) == pytest.approx(0.8, abs=1e-15)


def test_metric_fn_unknown_raises():
    with pytest.raises(ValueError) as info:
        metric_fn("rouge", None)
    assert str(info.value) == "unknown metric 'rouge'; choose one of ('match', 'accuracy', 'exact_match', 'f1')"
