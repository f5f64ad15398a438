"""Critic inputs, judge prompts and critic training records (selfrag/data_creation/critic_prompts.py), exactly."""

from __future__ import annotations

import pytest

from selfrag.data_creation.critic_prompts import (
    ASPECTS,
    critic_input,
    critic_record,
    judge_messages,
    judge_prompt,
)
from selfrag.errors import DataFormatError

ITEM = {
    "instruction": "Who painted the Mona Lisa?",
    "input": "",
    "output": "Leonardo da Vinci painted it. He worked on it for years.",
    "target_output": "He worked on it for years.",
    "preceding_sentences": "Leonardo da Vinci painted it.",
    "evidence": {"title": "Mona Lisa", "text": "The Mona Lisa is a portrait by Leonardo da Vinci."},
}

EXPECTED_INPUTS = {
    "retrieval": "Task instruction: Who painted the Mona Lisa?",
    "multi_retrieval": (
        "Task instruction: Who painted the Mona Lisa?\n\n"
        "Preceding sentences: Leonardo da Vinci painted it.\n\n"
        "Evidence: Mona Lisa\nThe Mona Lisa is a portrait by Leonardo da Vinci.\n\n"
        "Output: He worked on it for years."
    ),
    "relevance": (
        "Task instruction: Who painted the Mona Lisa?\n\n"
        "Evidence: Mona Lisa\nThe Mona Lisa is a portrait by Leonardo da Vinci."
    ),
    "groundness": (
        "Task instruction: Who painted the Mona Lisa?\n\n"
        "Preceding sentences: Leonardo da Vinci painted it.\n\n"
        "Output: He worked on it for years.\n\n"
        "Evidence: Mona Lisa\nThe Mona Lisa is a portrait by Leonardo da Vinci."
    ),
    "utility": (
        "Task instruction: Who painted the Mona Lisa?\n\n"
        "Output: Leonardo da Vinci painted it. He worked on it for years."
    ),
}


@pytest.mark.parametrize("aspect", sorted(ASPECTS))
def test_critic_input_exact(aspect):
    assert critic_input(aspect, ITEM) == EXPECTED_INPUTS[aspect]


def test_optional_preceding_and_input_and_string_evidence():
    item = {
        "instruction": "Name a prime.",
        "input": "Between 10 and 14.",
        "output": "13 is prime.",
        "evidence": "Primes\n13 is a prime number.",
        "preceding_sentences": None,
    }
    assert critic_input("groundness", item) == (
        "Task instruction: Name a prime. Between 10 and 14.\n\n"
        "Output: 13 is prime.\n\n"
        "Evidence: Primes\n13 is a prime number."
    )


def test_judge_prompt_exact():
    prompt = judge_prompt("relevance", ITEM)
    assert prompt == (
        ASPECTS["relevance"].instruction
        + "\n\nLabels: [Relevant], [Irrelevant]\n"
        + "Reply with the label alone on the first line, written exactly as listed (square brackets included). "
        + 'You may give a short explanation after it, starting on a new line with "Explanation:".\n\n'
        + EXPECTED_INPUTS["relevance"]
        + "\n\nLabel:"
    )
    assert judge_messages("relevance", ITEM) == [{"role": "user", "content": prompt}]


@pytest.mark.parametrize("aspect", sorted(ASPECTS))
def test_every_label_is_named_in_its_instruction(aspect):
    for label in ASPECTS[aspect].labels:
        assert label in ASPECTS[aspect].instruction


def test_critic_record_exact():
    assert critic_record("utility", ITEM, "[Utility:5]") == {
        "instruction": ASPECTS["utility"].instruction,
        "input": EXPECTED_INPUTS["utility"],
        "output": "[Utility:5]",
        "task": "utility",
    }
    with pytest.raises(DataFormatError, match="is not a utility label"):
        critic_record("utility", ITEM, "[Relevant]")


def test_missing_fields_name_the_item():
    with pytest.raises(DataFormatError, match=r"in.jsonl:3: field 'evidence'"):
        critic_input("relevance", {"instruction": "q", "_where": "in.jsonl:3"})
    with pytest.raises(DataFormatError, match="missing or empty field 'instruction'"):
        critic_input("retrieval", {"instruction": " "})
    with pytest.raises(DataFormatError, match="unknown aspect"):
        critic_input("groudness", ITEM)
