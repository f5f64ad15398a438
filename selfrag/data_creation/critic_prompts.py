"""Judge and critic prompts for the five reflection aspects, written for this project (docs Appendix A).

The original GPT-4 prompts are long prose with few-shot demos; ours are short, own-worded instructions that keep
the same inputs and label sets:

| aspect            | inputs                                                        | labels                     |
|-------------------|---------------------------------------------------------------|----------------------------|
| `retrieval`       | instruction                                                   | [Retrieval] [No Retrieval] |
| `multi_retrieval` | instruction, preceding sentences (optional), evidence, output | + [Continue to Use Evidence]|
| `relevance`       | instruction, evidence                                         | [Relevant] [Irrelevant]    |
| `groundness`      | instruction, preceding sentences (optional), output, evidence | the 3 IsSup tokens         |
| `utility`         | instruction, output                                           | [Utility:1] .. [Utility:5] |

One item is a dict with `instruction` (plus optional `input`, appended after a space as the original utility
script did), and per aspect `output` (the whole answer), `target_output` (the judged sentence; falls back to
`output`), `evidence` (a string, or a passage dict with `title` / `text`, rendered `title\\ntext`) and
`preceding_sentences` (optional).

The same `instruction` + `input` pair becomes the critic's training record (`critic_record`), which the critic is
trained on with the prompt of §3.6 (`### Instruction:\\n...\\n\\n### Input:\\n...\\n\\n### Response:`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from selfrag import tokens
from selfrag.data import where
from selfrag.errors import DataFormatError

ANSWER_FORMAT = (
    "Reply with the label alone on the first line, written exactly as listed (square brackets included). "
    'You may give a short explanation after it, starting on a new line with "Explanation:".'
)


@dataclass(frozen=True)
class Aspect:
    """One reflection aspect: its critic instruction, the fields its input needs, and its labels."""

    name: str
    labels: tuple[str, ...]
    instruction: str  # what the critic (and the judge) is asked; own wording
    fields: tuple[str, ...]  # input lines, in order: instruction, preceding, evidence, output, target


RETRIEVAL = Aspect(
    name="retrieval",
    labels=(tokens.RETRIEVAL, tokens.NO_RETRIEVAL),
    instruction=(
        "Decide whether answering the task instruction well calls for looking up outside documents, such as "
        "encyclopedia pages or web search results. Answer [Retrieval] when a good answer depends on facts, "
        "figures or knowledge that a reference source would supply or confirm. Answer [No Retrieval] when the "
        "task can be done well without any lookup, for example creative writing, rewriting given text, "
        "arithmetic, or opinions."
    ),
    fields=("instruction",),
)

MULTI_RETRIEVAL = Aspect(
    name="multi_retrieval",
    labels=(tokens.CONTINUE, tokens.NO_RETRIEVAL, tokens.RETRIEVAL),
    instruction=(
        "You see a task instruction, possibly the sentences written so far, one piece of evidence, and the next "
        "output sentence. Decide what the writer needs before that sentence can be trusted. Answer "
        "[Continue to Use Evidence] if the given evidence alone is enough to check the sentence. Answer "
        "[No Retrieval] if the sentence makes no factual claim that would need checking. Answer [Retrieval] if "
        "the sentence makes factual claims that the evidence does not cover, so more documents are needed."
    ),
    fields=("instruction", "preceding_sentences", "evidence", "target_output"),
)

RELEVANCE = Aspect(
    name="relevance",
    labels=(tokens.RELEVANT, tokens.IRRELEVANT),
    instruction=(
        "Judge whether the evidence is on topic for the task instruction (and any preceding text) and offers "
        "information that helps to carry out the task. Answer [Relevant] if it does, even partially; answer "
        "[Irrelevant] if it is off topic or gives nothing useful for the task."
    ),
    fields=("instruction", "evidence"),
)

GROUNDNESS = Aspect(
    name="groundness",
    labels=(tokens.FULLY_SUPPORTED, tokens.PARTIALLY_SUPPORTED, tokens.NO_SUPPORT),
    instruction=(
        "Check how much of the output is backed by the evidence. Judge only whether the evidence states or "
        "clearly implies what the output says, not whether the output is true in the world. Answer "
        "[Fully supported] if every claim in the output is backed by the evidence; [Partially supported] if "
        "some claims are backed and others are missing from the evidence; [No support / Contradictory] if the "
        "output is not backed at all, ignores the evidence, or contradicts it."
    ),
    fields=("instruction", "preceding_sentences", "target_output", "evidence"),
)

UTILITY = Aspect(
    name="utility",
    labels=tokens.ISUSE_TOKENS,
    instruction=(
        "Rate how useful the output is as a reply to the task instruction, whether or not it is factually "
        "correct, on a scale of 1 to 5. [Utility:5]: it answers the request completely, with detail and "
        "clarity. [Utility:4]: it answers the request, with small gaps or room to improve. [Utility:3]: "
        "acceptable but needs notable additions or fixes. [Utility:2]: it touches the request but misses its "
        "main point. [Utility:1]: it is off topic or of no use."
    ),
    fields=("instruction", "output"),
)

ASPECTS: dict[str, Aspect] = {a.name: a for a in (RETRIEVAL, MULTI_RETRIEVAL, RELEVANCE, GROUNDNESS, UTILITY)}

FIELD_NAMES = {
    "instruction": "Task instruction",
    "preceding_sentences": "Preceding sentences",
    "evidence": "Evidence",
    "output": "Output",
    "target_output": "Output",
}


def get_aspect(name: str) -> Aspect:
    if name not in ASPECTS:
        raise DataFormatError(f"unknown aspect {name!r}; choose one of {sorted(ASPECTS)}")
    return ASPECTS[name]


def task_instruction(item: Mapping[str, Any]) -> str:
    """The item's instruction, with its `input` appended after a space when there is one."""
    instruction = item.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise DataFormatError(f"{where(item)}: missing or empty field 'instruction'")
    extra = item.get("input") or ""
    if not isinstance(extra, str):
        raise DataFormatError(f"{where(item)}: field 'input' must be a string")
    return f"{instruction} {extra}" if extra.strip() else instruction


def render_evidence(evidence: Any, item: Mapping[str, Any]) -> str:
    """A string as is; a passage dict as `title\\ntext` (the original's evidence format)."""
    if isinstance(evidence, str) and evidence.strip():
        return evidence
    if isinstance(evidence, Mapping) and isinstance(evidence.get("text"), str):
        title = evidence.get("title") or ""
        return f"{title}\n{evidence['text']}" if title else evidence["text"]
    raise DataFormatError(f"{where(item)}: field 'evidence' must be a non-empty string or a {{title, text}} passage")


def field_value(field: str, item: Mapping[str, Any]) -> str | None:
    """The text of one input line, or None for an absent optional `preceding_sentences`."""
    if field == "instruction":
        return task_instruction(item)
    if field == "preceding_sentences":
        value = item.get("preceding_sentences")
        return value if isinstance(value, str) and value.strip() else None
    if field == "evidence":
        return render_evidence(item.get("evidence"), item)
    if field == "target_output":
        value = item.get("target_output", item.get("output"))
    else:
        value = item.get(field)
    if not isinstance(value, str) or not value.strip():
        raise DataFormatError(f"{where(item)}: missing or empty field '{field}'")
    return value


def critic_input(aspect: str | Aspect, item: Mapping[str, Any]) -> str:
    """The `input` of the critic record: one `Name: value` line per field, blank lines between."""
    aspect = get_aspect(aspect) if isinstance(aspect, str) else aspect
    lines = []
    for field in aspect.fields:
        value = field_value(field, item)
        if value is not None:
            lines.append(f"{FIELD_NAMES[field]}: {value}")
    return "\n\n".join(lines)


def judge_prompt(aspect: str | Aspect, item: Mapping[str, Any]) -> str:
    """The user message sent to the judge: the aspect's instruction, the label list, the answer format, the input."""
    aspect = get_aspect(aspect) if isinstance(aspect, str) else aspect
    return (
        f"{aspect.instruction}\n\nLabels: {', '.join(aspect.labels)}\n{ANSWER_FORMAT}\n\n"
        f"{critic_input(aspect, item)}\n\nLabel:"
    )


def judge_messages(aspect: str | Aspect, item: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"role": "user", "content": judge_prompt(aspect, item)}]


def critic_record(aspect: str | Aspect, item: Mapping[str, Any], label: str) -> dict[str, str]:
    """One critic training record `{instruction, input, output, task}` (the format the critic trainer reads)."""
    aspect = get_aspect(aspect) if isinstance(aspect, str) else aspect
    if label not in aspect.labels:
        raise DataFormatError(f"{where(item)}: {label!r} is not a {aspect.name} label {aspect.labels}")
    return {
        "instruction": aspect.instruction,
        "input": critic_input(aspect, item),
        "output": label,
        "task": aspect.name,
    }
