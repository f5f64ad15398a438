"""Generator-instance assembly from critic labels (selfrag/data_creation/generator_data.py), exact strings."""

from __future__ import annotations

import random

import pytest

from selfrag.data_creation.generator_data import (
    SentenceLabels,
    build_output,
    choose_passage,
    generator_instance,
    groundness_token,
    relevance_token,
    retrieve_token,
    sentence_string,
    utility_token,
)

P_PARIS = {"title": "Paris", "text": "Paris is the capital of France."}
P_KYOTO = {"title": "Kyoto", "text": "Kyoto is in Japan."}


@pytest.mark.parametrize(
    ("pred", "token"),
    [
        ("[Retrieval]", "[Retrieval]"),
        ("Retrieval]", "[Retrieval]"),
        ("No Retrieval]", "[No Retrieval]"),
        ("Continue to Use Evidence]", "[Continue to Use Evidence]"),
        ("Yes", "[Retrieval]"),
        ("[Yes]", "[Retrieval]"),
        ("No", "[No Retrieval]"),
        ("[No]", "[No Retrieval]"),
        ("Maybe", "[No Retrieval]"),
        ("", "[No Retrieval]"),
    ],
)
def test_retrieve_token(pred, token):
    assert retrieve_token(pred) == token


def test_utility_relevance_groundness_tokens():
    assert utility_token("[Utility:4]") == "[Utility:4]"
    assert utility_token("5 or 3") == "[Utility:3]"  # the smallest digit, as the original
    assert utility_token("none") is None
    assert relevance_token("[Relevant]") == "[Relevant]" and relevance_token("Irrelevant]") == "[Irrelevant]"
    assert relevance_token("unsure") is None and relevance_token(None) is None
    assert groundness_token("Partially supported]") == "[Partially supported]"
    assert groundness_token("5") == "[Fully supported]" and groundness_token("3") is None
    assert groundness_token("[No support / Contradictory]") == "[No support / Contradictory]"


def test_sentence_strings_exact():
    assert sentence_string("[Retrieval]", "Paris is the capital.", P_PARIS, "[Relevant]", "[Fully supported]") == (
        "[Retrieval]<paragraph>Paris\nParis is the capital of France.</paragraph>[Relevant]Paris is the capital."
        "[Fully supported]"
    )
    assert sentence_string("[Retrieval]", "It is old.", P_KYOTO, "[Irrelevant]") == (
        "[Retrieval]<paragraph>Kyoto\nKyoto is in Japan.</paragraph>[Irrelevant]It is old."
    )
    assert sentence_string("[Continue to Use Evidence]", "More.") == "[Continue to Use Evidence]More."
    assert sentence_string("[No Retrieval]", "Hi.") == "[No Retrieval]Hi."
    with pytest.raises(ValueError):
        sentence_string("[Retrieval]", "x")


def test_per_sentence_instance_exact():
    sentences = [
        SentenceLabels(
            "Paris is the capital of France.",
            passages=[P_KYOTO, P_PARIS],
            relevance=["[Irrelevant]", "[Relevant]"],
            groundness=[None, "[Fully supported]"],
        ),
        SentenceLabels("Ok.", skipped=True),
        SentenceLabels("It has many museums.", retrieve="[Continue to Use Evidence]"),
        SentenceLabels("I like it.", retrieve="No Retrieval]"),
        SentenceLabels("Dropped: no prediction."),
    ]
    output = build_output("gold", "[Retrieval]", "5", sentences, "alpaca", random.Random(0))
    assert output == (
        "[Retrieval]<paragraph>Paris\nParis is the capital of France.</paragraph>[Relevant]"
        "Paris is the capital of France.[Fully supported]"
        "Ok."
        "[Continue to Use Evidence]It has many museums."
        "[No Retrieval]I like it."
        "[Utility:5]"
    )


def test_no_retrieval_instance_and_fever():
    rng = random.Random(0)
    # "No" converts to [No Retrieval]: the whole output, unsplit (kept: no_retrieval_keep=1.0).
    kept = [build_output("Tell a joke.", "No", "[Utility:4]", [], "alpaca", rng, no_retrieval_keep=1.0)]
    assert kept == ["[No Retrieval]Tell a joke.[Utility:4]"]
    assert build_output("x", "[No Retrieval]", "4", [], "alpaca", random.Random(0), no_retrieval_keep=0.0) is None
    # FEVER: true/false gold with utility 1 becomes utility 5; SUPPORTS -> true in the text.
    assert build_output("true", "[No Retrieval]", "1", [], "fever", rng, no_retrieval_keep=1.0) == (
        "[No Retrieval]true[Utility:5]"
    )
    sent = [SentenceLabels("SUPPORTS", passages=[P_PARIS], relevance=["[Relevant]"], groundness=["5"])]
    assert build_output("SUPPORTS", "[Retrieval]", "[Utility:5]", sent, "alpaca", rng) == (
        "[Retrieval]<paragraph>Paris\nParis is the capital of France.</paragraph>[Relevant]true[Fully supported]"
        "[Utility:5]"
    )


def test_dropped_instances():
    rng = random.Random(0)
    assert build_output("x", "[Retrieval]", "none", [SentenceLabels("x")], "alpaca", rng) is None  # no utility
    # The first sentence decides [Continue to Use Evidence]: the output would start with it, so it is dropped.
    assert build_output("x", "[Continue to Use Evidence]", "5", [SentenceLabels("x")], "alpaca", rng) is None
    # [Retrieval] with no usable passage: the sentence, then the instance, is dropped.
    assert build_output("x", "[Retrieval]", "5", [SentenceLabels("x")], "alpaca", rng) is None


def test_choose_passage_policy():
    rel = ["[Irrelevant]", "[Relevant]", "[Relevant]"]
    sup = [None, "[Partially supported]", "[Fully supported]"]
    assert choose_passage(rel, sup, "alpaca", random.Random(0)) == 2  # the first fully supported
    assert choose_passage(rel, sup, "nq", random.Random(0)) == 0  # nq / fever: always an irrelevant one
    assert choose_passage(rel, sup, "alpaca", random.Random(0), negative=True) == 0
    # partially supported: kept with probability 0.7 (Random(1).random() = 0.134), else an irrelevant one
    assert choose_passage(rel, [None, "[Partially supported]", None], "alpaca", random.Random(1)) == 1
    assert choose_passage(rel, [None, "[Partially supported]", None], "alpaca", random.Random(0)) == 0  # 0.844
    # no irrelevant passage to fall back on: the supported one is kept
    assert choose_passage(["[Relevant]"], ["[No support / Contradictory]"], "alpaca", random.Random(0)) == 0
    assert choose_passage([None], [None], "alpaca", random.Random(0)) is None
    # nq / fever / wow: [Relevant] + [No support / Contradictory] is written as [Irrelevant]
    sent = [
        SentenceLabels("S.", passages=[P_PARIS], relevance=["[Relevant]"], groundness=["No support / Contradictory]"])
    ]
    assert build_output("S.", "[Retrieval]", "3", sent, "wow", random.Random(0)) == (
        "[Retrieval]<paragraph>Paris\nParis is the capital of France.</paragraph>[Irrelevant]S.[Utility:3]"
    )


def test_generator_instance_record():
    item = {"instruction": "q", "output": "a", "id": "nq_1", "dataset_name": "nq", "extra": 1}
    assert generator_instance(item, "[No Retrieval]a[Utility:5]") == {
        "instruction": "q",
        "output": "[No Retrieval]a[Utility:5]",
        "input": "",
        "id": "nq_1",
        "dataset_name": "nq",
    }
