"""Prompt templates and task instructions, byte for byte as the released Self-RAG models expect them.

These strings are part of the model interface (original `retrieval_lm/utils.py:7-41`); do not edit them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from selfrag.errors import ConfigError, DataFormatError
from selfrag.tokens import NO_RETRIEVAL, PARAGRAPH_END, PARAGRAPH_START, RETRIEVAL

PROMPT_DICT = {
    "prompt_input": "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
    "prompt_no_input": "### Instruction:\n{instruction}\n\n### Response:\n",
    "prompt_no_input_retrieval": (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Paragraph:\n{paragraph}\n\n### Instruction:\n{instruction}\n\n### Response:"
    ),
    "prompt_open_instruct": "<user>\n{instruction}\n<assistant>\n",
    "prompt_open_instruct_retrieval": "<user>\nReference:{paragraph}\n{instruction}\n<assistant>\n",
    "llama_chat_prompt": "[INST]{instruction}[/INST]",
    "llama_chat_prompt_retrieval": "[INST]{paragraph}\n{instruction}[/INST]",
}

TASK_INST = {
    "wow": (
        "Given a chat history separated by new lines, generates an informative, knowledgeable and engaging response. "
    ),
    "fever": "Is the following statement correct or not? Say true if it's correct; otherwise say false.",
    "eli5": "Provide a paragraph-length response using simple words to answer the following question.",
    "obqa": "Given four answer candidates, A, B, C and D, choose the best answer choice.",
    "arc_easy": "Given four answer candidates, A, B, C and D, choose the best answer choice.",
    "arc_c": "Given four answer candidates, A, B, C and D, choose the best answer choice.",
    "trex": "Given the input format 'Subject Entity [SEP] Relationship Type,' predict the target entity.",
    "asqa": (
        "Answer the following question. The question may be ambiguous and have multiple correct answers, "
        "and in that case, you have to provide a long-form answer including all correct answers."
    ),
}

# Tasks whose answer is one of a closed set: scores of passages that lead to the same answer are summed. The runners
# read this from the task registry (`selfrag.tasks`: the entries with `choices`); the set stays here, written out,
# because the registry imports this module, and tests/test_tasks.py checks that the two agree.
CLOSED_TASKS = frozenset({"fever", "arc_c"})

ARC_LETTERS = ("A", "B", "C", "D")


def format_prompt(instruction: str, paragraph: str | None = None, tokenizer: Any | None = None) -> str:
    """The generator prompt `### Instruction:\\n{instruction}\\n\\n### Response:\\n`, optionally with a passage.

    With `tokenizer` (`--use_chat_template`), the prompt is instead `chat_template_prompt(tokenizer, instruction)`: the
    tokenizer's chat template with one user turn, up to the opening of the assistant turn, exactly the prompt that
    training under `--use_chat_template` masks. `paragraph` is appended in both cases.

    >>> format_prompt("Who wrote Hamlet?")
    '### Instruction:\\nWho wrote Hamlet?\\n\\n### Response:\\n'
    """
    if tokenizer is not None:
        prompt = chat_template_prompt(tokenizer, instruction)
    else:
        prompt = PROMPT_DICT["prompt_no_input"].format(instruction=instruction)
    if paragraph is not None:
        prompt += paragraph
    return prompt


def chat_template_prompt(tokenizer: Any, instruction: str) -> str:
    """The generation prompt of `instruction` under the tokenizer's chat template: one user turn, then the opening
    of the assistant turn (`add_generation_prompt=True`). It equals the prompt part of
    `selfrag.training.encode.encode_example(..., chat_template=True)` for a record with this instruction and no
    `input`. Templates usually write the BOS themselves, so backends must tokenize it without adding special tokens
    (`GenParams.add_special_tokens=False`).

    Raises `ConfigError` when the tokenizer has no chat template.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"--use_chat_template: the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template "
            "(tokenizer.chat_template is unset; base models and models trained without --use_chat_template have "
            "none): drop --use_chat_template to use the '### Instruction:' prompt the released models expect"
        )
    messages = [{"role": "user", "content": instruction}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def format_evidence(ctx: Mapping[str, Any]) -> str:
    """`[Retrieval]<paragraph>{title}\\n{text}</paragraph>`: the suffix that feeds one passage to the generator."""
    return f"{RETRIEVAL}{PARAGRAPH_START}{ctx.get('title', '')}\n{ctx['text']}{PARAGRAPH_END}"


def no_retrieval_prompt(prompt: str) -> str:
    """The prompt that forces the no-retrieval path (original run_short_form.py:172)."""
    return prompt + NO_RETRIEVAL


def arc_choices(item: Mapping[str, Any], where: str = "") -> dict[str, str]:
    """Map ARC choices to letters A-D the way the original does (labels "1".."4" become A..D, a missing D is "").

    Raises `DataFormatError` when `choices` is not `{"text": [...], "label": [...]}`.
    """
    choices = item.get("choices")
    if not isinstance(choices, Mapping) or not all(
        isinstance(choices.get(key), Sequence) and not isinstance(choices.get(key), str) for key in ("text", "label")
    ):
        raise DataFormatError(f"{where}field 'choices' must be {{'text': [...], 'label': [...]}} for --task arc_c")
    if len(choices["text"]) != len(choices["label"]):
        raise DataFormatError(f"{where}'choices.text' and 'choices.label' have different lengths")
    letters: dict[str, str] = {}
    for label, text in zip(choices["label"], choices["text"]):
        label = str(label)
        if label in {"1", "2", "3", "4"}:
            label = ARC_LETTERS[int(label) - 1]
        letters[label] = text
    return letters


def build_instruction(item: Mapping[str, Any], task: str | None, where: str = "") -> str:
    """The `instruction` of a short-form item (original run_short_form.py:217-246).

    - `arc_c`: task instruction + `\\n\\n### Input:\\n` + question + `\\nA: ...\\nB: ...\\nC: ...\\nD: ...`
    - other tasks in `TASK_INST` (PubHealth runs as `fever`): task instruction + `\\n\\n## Input:\\n\\n` + question
    - no task (PopQA, TriviaQA): the question itself

    The runners go through the task registry (`selfrag.tasks.short_form_instruction`), which gives the same
    instruction for these tasks and also knows registered ones.
    """
    return task_instruction(item, TASK_INST.get(task), task == "arc_c", where)


def task_instruction(
    item: Mapping[str, Any], instruction: str | None, list_choices: bool = False, where: str = ""
) -> str:
    """The short-form `instruction` of an item for a task instruction (`build_instruction`'s forms, given the
    instruction itself rather than a `TASK_INST` key).

    - `list_choices` (ARC): instruction + `\\n\\n### Input:\\n` + question + `\\nA: ...\\nB: ...\\nC: ...\\nD: ...`
      (the item's `choices`, by `arc_choices`)
    - an instruction: instruction + `\\n\\n## Input:\\n\\n` + question
    - none: the question itself
    """
    question = item["question"]
    if instruction is None:
        return question
    if list_choices:
        letters = arc_choices(item, where)
        options = "".join(f"\n{letter}: {letters.get(letter, '')}" for letter in ARC_LETTERS)
        return instruction + "\n\n### Input:\n" + question + options
    return instruction + "\n\n## Input:\n\n" + question
