"""selfrag/prompts.py: byte-exact prompt templates and instruction assembly (spec §3, §13.1, §13.3)."""

from __future__ import annotations

import pytest

from selfrag.errors import DataFormatError
from selfrag.prompts import (
    CLOSED_TASKS,
    PROMPT_DICT,
    TASK_INST,
    arc_choices,
    build_instruction,
    format_evidence,
    format_prompt,
    no_retrieval_prompt,
)

MCQ = "Given four answer candidates, A, B, C and D, choose the best answer choice."
FEVER = "Is the following statement correct or not? Say true if it's correct; otherwise say false."

# ------------------------------------------------------------------------------------------------ PROMPT_DICT


def test_prompt_dict_exact():
    assert PROMPT_DICT == {
        "prompt_input": "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
        "prompt_no_input": "### Instruction:\n{instruction}\n\n### Response:\n",
        "prompt_no_input_retrieval": "Below is an instruction that describes a task. Write a response that "
        "appropriately completes the request.\n\n### Paragraph:\n{paragraph}\n\n### Instruction:\n{instruction}"
        "\n\n### Response:",
        "prompt_open_instruct": "<user>\n{instruction}\n<assistant>\n",
        "prompt_open_instruct_retrieval": "<user>\nReference:{paragraph}\n{instruction}\n<assistant>\n",
        "llama_chat_prompt": "[INST]{instruction}[/INST]",
        "llama_chat_prompt_retrieval": "[INST]{paragraph}\n{instruction}[/INST]",
    }


def test_prompt_newline_endings():
    assert PROMPT_DICT["prompt_no_input"].endswith("### Response:\n")
    assert PROMPT_DICT["prompt_input"].endswith("### Response:\n")
    # §3.5: no trailing newline on the retrieval baseline prompt.
    assert PROMPT_DICT["prompt_no_input_retrieval"].endswith("### Response:")
    assert not PROMPT_DICT["prompt_no_input_retrieval"].endswith("\n")


def test_prompt_dict_templates_format():
    assert PROMPT_DICT["prompt_input"].format(instruction="I", input="X") == (
        "### Instruction:\nI\n\n### Input:\nX\n\n### Response:\n"
    )
    assert PROMPT_DICT["prompt_open_instruct_retrieval"].format(paragraph="P", instruction="I") == (
        "<user>\nReference:P\nI\n<assistant>\n"
    )
    assert PROMPT_DICT["llama_chat_prompt_retrieval"].format(paragraph="P", instruction="I") == "[INST]P\nI[/INST]"


# -------------------------------------------------------------------------------------------------- TASK_INST


def test_task_inst_exact():
    assert TASK_INST == {
        "wow": "Given a chat history separated by new lines, generates an informative, knowledgeable and engaging "
        "response. ",
        "fever": FEVER,
        "eli5": "Provide a paragraph-length response using simple words to answer the following question.",
        "obqa": MCQ,
        "arc_easy": MCQ,
        "arc_c": MCQ,
        "trex": "Given the input format 'Subject Entity [SEP] Relationship Type,' predict the target entity.",
        "asqa": "Answer the following question. The question may be ambiguous and have multiple correct answers, "
        "and in that case, you have to provide a long-form answer including all correct answers.",
    }


def test_task_inst_wow_trailing_space():
    assert TASK_INST["wow"].endswith("response. ")
    assert TASK_INST["wow"][-2:] == ". "


def test_no_task_inst_for_popqa_triviaqa_factscore():
    for task in ("popqa", "triviaqa", "tqa", "factscore", "pubhealth"):
        assert task not in TASK_INST


def test_closed_tasks():
    assert CLOSED_TASKS == frozenset({"fever", "arc_c"})


# --------------------------------------------------------------------------------------------- format helpers


def test_format_prompt_golden():
    assert format_prompt("Who wrote Hamlet?") == "### Instruction:\nWho wrote Hamlet?\n\n### Response:\n"


def test_format_prompt_with_paragraph_appends_verbatim():
    assert format_prompt("Q", paragraph="[Retrieval]<paragraph>T\nX</paragraph>") == (
        "### Instruction:\nQ\n\n### Response:\n[Retrieval]<paragraph>T\nX</paragraph>"
    )


def test_format_prompt_keeps_braces_in_instruction():
    assert format_prompt("f({x})") == "### Instruction:\nf({x})\n\n### Response:\n"


def test_format_evidence_golden():
    ctx = {"title": "Jane Austen", "text": "Jane Austen was an English novelist.", "id": "7", "score": "1.5"}
    assert format_evidence(ctx) == (
        "[Retrieval]<paragraph>Jane Austen\nJane Austen was an English novelist.</paragraph>"
    )


def test_format_evidence_without_title():
    assert format_evidence({"text": "Body."}) == "[Retrieval]<paragraph>\nBody.</paragraph>"


def test_retrieval_prompt_composition():
    ctx = {"title": "Paris", "text": "Paris is the capital of France."}
    prompt = format_prompt("What is the capital of France?") + format_evidence(ctx)
    assert prompt == (
        "### Instruction:\nWhat is the capital of France?\n\n### Response:\n"
        "[Retrieval]<paragraph>Paris\nParis is the capital of France.</paragraph>"
    )


def test_no_retrieval_prompt_golden():
    assert no_retrieval_prompt("### Instruction:\nQ\n\n### Response:\n") == (
        "### Instruction:\nQ\n\n### Response:\n[No Retrieval]"
    )


# ------------------------------------------------------------------------------------------ build_instruction


def _arc_item(labels, texts, question="Which gas do plants absorb?"):
    return {"question": question, "choices": {"label": labels, "text": texts}, "answerKey": "C"}


def test_build_instruction_arc_letters():
    item = _arc_item(["A", "B", "C", "D"], ["Oxygen", "Nitrogen", "Carbon dioxide", "Helium"])
    assert build_instruction(item, "arc_c") == (
        MCQ + "\n\n### Input:\nWhich gas do plants absorb?\nA: Oxygen\nB: Nitrogen\nC: Carbon dioxide\nD: Helium"
    )


def test_build_instruction_arc_numeric_labels_mapped():
    item = _arc_item(["1", "2", "3", "4"], ["one", "two", "three", "four"], question="Q?")
    assert build_instruction(item, "arc_c") == MCQ + "\n\n### Input:\nQ?\nA: one\nB: two\nC: three\nD: four"


def test_build_instruction_arc_int_labels_mapped():
    item = _arc_item([1, 2, 3, 4], ["one", "two", "three", "four"], question="Q?")
    assert build_instruction(item, "arc_c") == MCQ + "\n\n### Input:\nQ?\nA: one\nB: two\nC: three\nD: four"


def test_build_instruction_arc_three_choices_empty_d():
    item = _arc_item(["A", "B", "C"], ["x", "y", "z"], question="Q?")
    out = build_instruction(item, "arc_c")
    assert out == MCQ + "\n\n### Input:\nQ?\nA: x\nB: y\nC: z\nD: "
    assert out.endswith("\nD: ")


def test_build_instruction_arc_label_order_follows_letters():
    item = _arc_item(["D", "B", "A", "C"], ["d", "b", "a", "c"], question="Q?")
    assert build_instruction(item, "arc_c") == MCQ + "\n\n### Input:\nQ?\nA: a\nB: b\nC: c\nD: d"


def test_build_instruction_arc_e_choice_not_printed():
    item = _arc_item(["A", "B", "C", "D", "E"], ["a", "b", "c", "d", "e"], question="Q?")
    assert build_instruction(item, "arc_c") == MCQ + "\n\n### Input:\nQ?\nA: a\nB: b\nC: c\nD: d"


def test_arc_choices_mapping():
    assert arc_choices(_arc_item(["1", "2", "3"], ["x", "y", "z"])) == {"A": "x", "B": "y", "C": "z"}
    assert arc_choices(_arc_item(["A", "B"], ["x", "y"])) == {"A": "x", "B": "y"}


def test_build_instruction_fever():
    item = {"question": "Vitamin C cures colds."}
    assert build_instruction(item, "fever") == FEVER + "\n\n## Input:\n\nVitamin C cures colds."


def test_build_instruction_other_task_in_task_inst():
    item = {"question": "Q?"}
    assert build_instruction(item, "asqa") == TASK_INST["asqa"] + "\n\n## Input:\n\nQ?"


def test_build_instruction_no_task_is_raw_question():
    item = {"question": "What is the occupation of Marie Curie?"}
    assert build_instruction(item, None) == "What is the occupation of Marie Curie?"
    assert build_instruction(item, "popqa") == "What is the occupation of Marie Curie?"


def test_pubhealth_full_prompt_example():
    # §3.4: the full short-form PubHealth prompt.
    claim = "Drinking water prevents kidney stones."
    prompt = format_prompt(build_instruction({"question": claim}, "fever"))
    assert prompt == (
        "### Instruction:\nIs the following statement correct or not? Say true if it's correct; otherwise say "
        "false.\n\n## Input:\n\n" + claim + "\n\n### Response:\n"
    )


@pytest.mark.parametrize(
    "choices",
    [
        None,
        "A: x B: y",
        ["x", "y"],
        {"text": ["x", "y"]},
        {"label": ["A", "B"]},
        {"text": None, "label": ["A"]},
        {"text": 3, "label": ["A"]},
        {"text": "xy", "label": "AB"},  # strings are sequences but not lists of choices
    ],
)
def test_malformed_choices_raise(choices):
    item = {"question": "Q?", "choices": choices}
    with pytest.raises(DataFormatError) as info:
        build_instruction(item, "arc_c", where="data.jsonl:3: ")
    message = str(info.value)
    assert message.startswith("data.jsonl:3: field 'choices' must be")
    assert "--task arc_c" in message


def test_missing_choices_raise():
    with pytest.raises(DataFormatError, match="field 'choices'"):
        build_instruction({"question": "Q?"}, "arc_c")


def test_choices_length_mismatch_raises():
    item = _arc_item(["A", "B", "C"], ["x", "y"])
    with pytest.raises(DataFormatError) as info:
        arc_choices(item, where="f.jsonl:9: ")
    assert str(info.value) == "f.jsonl:9: 'choices.text' and 'choices.label' have different lengths"


def test_choices_not_checked_for_other_tasks():
    assert build_instruction({"question": "Q?", "choices": None}, "fever") == FEVER + "\n\n## Input:\n\nQ?"
