"""Convert known variants of the Self-RAG eval files into the expected form (`selfrag.eval.formats.TASK_FORMATS`).

Each rule takes a copy of the item and returns it, changed or not; a value it cannot map raises DataFormatError.
Rules only rename or re-type fields: they never drop information.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

from selfrag.data import where
from selfrag.errors import DataFormatError
from selfrag.eval.check import CheckReport, _is_strings, build_report, check_item
from selfrag.eval.formats import MAX_LISTED, PASSAGE_KEYS, DatasetFormat, dataset_format


def rename_passages(item: dict[str, Any], fmt: DatasetFormat) -> dict[str, Any]:
    """`top_contexts` (the original's fallback key) or ALCE's `docs` -> `ctxs`; for ASQA, `ctxs` / `top_contexts` ->
    `docs`. Applies only when the expected key is absent; the first present of `ctxs`, `top_contexts`, `docs` wins."""
    if fmt.passages not in item:
        other = next((k for k in PASSAGE_KEYS if k in item), None)
        if other:
            item[fmt.passages] = item.pop(other)
    return item


def answer_to_answers(item: dict[str, Any], fmt: DatasetFormat) -> dict[str, Any]:
    """`answer` -> `answers` when `answers` is absent: `{"answer": "Paris"}` -> `{"answers": ["Paris"]}`; a list is
    kept as a list."""
    if "answers" not in item and "answer" in item:
        answer = item.pop("answer")
        if not isinstance(answer, (str, list)):
            raise DataFormatError(
                f"{where(item)}: field 'answer' must be a string or a list of strings; found {type(answer).__name__}"
            )
        item["answers"] = [answer] if isinstance(answer, str) else answer
    return item


def popqa_raw(item: dict[str, Any], fmt: DatasetFormat) -> dict[str, Any]:
    """A row of the original PopQA release -> `answers` and `pop`: `possible_answers` (a JSON-encoded list of
    strings, e.g. `'["poet", "poetess"]'`) is decoded into `answers`, and `s_pop` (the subject's popularity) is
    renamed `pop`. Each applies only when the target field is absent."""
    if "answers" not in item and "possible_answers" in item:
        raw = item.pop("possible_answers")
        try:
            answers = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError as err:
            raise DataFormatError(
                f"{where(item)}: 'possible_answers' is not a JSON-encoded list ({err.msg}): {raw[:80]!r}"
            ) from err
        if not _is_strings(answers):
            raise DataFormatError(
                f"{where(item)}: 'possible_answers' must encode a non-empty list of strings; found {raw!r:.80}"
            )
        item["answers"] = answers
    if "pop" not in item and "s_pop" in item:
        item["pop"] = item.pop("s_pop")
    return item


_HEALTH_FACT_LABELS = {0: "false", 1: "mixture", 2: "true", 3: "unproven"}  # HF `health_fact` ClassLabel order
_TRUE_FALSE = {"true": "true", "false": "false", "supports": "true", "refutes": "false"}


def pubhealth_raw(item: dict[str, Any], fmt: DatasetFormat) -> dict[str, Any]:
    """A PUBHEALTH / HF `health_fact` row -> `question` and `answers`: `claim` is renamed `question`, and a `label`
    (0 false, 1 mixture, 2 true, 3 unproven, as an int, a digit string or the name) becomes `answers` `["false"]` or
    `["true"]`. Mixture and unproven have no true/false answer and raise. Each applies only when the target field
    (and, for `label`, `answer`) is absent."""
    if "question" not in item and "claim" in item:
        item["question"] = item.pop("claim")
    if "answers" not in item and "answer" not in item and "label" in item:
        label = item["label"]
        name = _HEALTH_FACT_LABELS.get(int(label), "unknown") if str(label).isdigit() else str(label).strip().lower()
        if name not in ("true", "false"):
            raise DataFormatError(
                f"{where(item)}: PubHealth label {label!r} ({name}) has no true/false answer; the original evaluation "
                "keeps only true and false claims, so pass --drop_invalid to exclude such items"
            )
        del item["label"]
        item["answers"] = [name]
    return item


def pubhealth_answers(item: dict[str, Any], fmt: DatasetFormat) -> dict[str, Any]:
    """PubHealth answers -> lowercase `true` / `false`: `True`, `FALSE`, ... are lowercased and FEVER's `SUPPORTS` /
    `REFUTES` (any case) become `true` / `false`; anything else raises."""
    answers = item.get("answers")
    if not isinstance(answers, list):
        return item  # the check reports it
    mapped = []
    for answer in answers:
        key = answer.strip().lower() if isinstance(answer, str) else None
        if key not in _TRUE_FALSE:
            raise DataFormatError(
                f"{where(item)}: PubHealth answer {answer!r} cannot be mapped to 'true' or 'false' (accepted: "
                "true/false/SUPPORTS/REFUTES in any case); fix the item or pass --drop_invalid to exclude it"
            )
        mapped.append(_TRUE_FALSE[key])
    item["answers"] = mapped
    return item


def arc_raw(item: dict[str, Any], fmt: DatasetFormat) -> dict[str, Any]:
    """A row of AI2's ARC release, `{"question": {"stem": ..., "choices": [{"text", "label"}, ...]}}`, -> a string
    `question` and `choices: {"text": [...], "label": [...]}`. Ints in `answerKey` and `choices.label` become
    strings. A digit `answerKey` stays a digit: the runner maps it (prompts.arc_choices, short_form.gold_answers)."""
    question = item.get("question")
    if isinstance(question, Mapping) and "stem" in question and "choices" not in item:
        choices = question.get("choices")
        if not isinstance(choices, list) or not all(
            isinstance(c, Mapping) and {"text", "label"} <= c.keys() for c in choices
        ):
            raise DataFormatError(f"{where(item)}: 'question.choices' must be a list of {{text, label}} objects")
        extra = {k: v for k, v in question.items() if k not in ("stem", "choices")}
        item["question"] = question["stem"]
        item["choices"] = {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]}
        if extra:  # keep anything else the question object held
            item["question_extra"] = extra
    if isinstance(item.get("answerKey"), int) and not isinstance(item["answerKey"], bool):
        item["answerKey"] = str(item["answerKey"])
    choices = item.get("choices")
    if isinstance(choices, Mapping) and isinstance(choices.get("label"), list):
        item["choices"] = {
            **choices,
            "label": [str(label) if isinstance(label, int) else label for label in choices["label"]],
        }
    return item


def passage_strings(item: dict[str, Any], fmt: DatasetFormat) -> dict[str, Any]:
    """Numeric passage `id` and `score` -> strings, as the original `ctxs` store them: `{"id": 7, "score": 1.5}` ->
    `{"id": "7", "score": "1.5"}`. Only for `ctxs`; ALCE's `docs` keep their numbers."""
    passages = item.get(fmt.passages)
    if fmt.passages != "ctxs" or not isinstance(passages, list):
        return item
    converted = []
    for ctx in passages:
        if isinstance(ctx, Mapping):
            ctx = {
                k: str(v) if k in ("id", "score") and isinstance(v, (int, float)) and not isinstance(v, bool) else v
                for k, v in ctx.items()
            }
        converted.append(ctx)
    item[fmt.passages] = converted
    return item


Rule = Callable[[dict[str, Any], DatasetFormat], dict[str, Any]]

CONVERSION_RULES: dict[str, tuple[Rule, ...]] = {
    "popqa": (rename_passages, popqa_raw, answer_to_answers, passage_strings),
    "triviaqa": (rename_passages, answer_to_answers, passage_strings),
    "pubhealth": (rename_passages, pubhealth_raw, answer_to_answers, pubhealth_answers, passage_strings),
    "arc_c": (rename_passages, arc_raw, passage_strings),
    "asqa": (rename_passages,),  # ALCE's `answer` is the long-form reference: it passes through
    "factscore": (rename_passages, passage_strings),
}
# The rules of a dataset without its own (a task registered with an input format, `selfrag.tasks.register`).
DEFAULT_RULES: tuple[Rule, ...] = (rename_passages, passage_strings)


def convert_item(item: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """A copy of `item` in the expected form of `dataset`, by the rules in `CONVERSION_RULES[dataset]` (else
    `DEFAULT_RULES`).

    The rules, in order (see each function):
      - `rename_passages`: `top_contexts` / `docs` -> `ctxs` (ASQA: `ctxs` / `top_contexts` -> `docs`).
      - `popqa_raw` (PopQA): `possible_answers` (JSON-encoded list) -> `answers`; `s_pop` -> `pop`.
      - `pubhealth_raw` (PubHealth): `claim` -> `question`; `label` 0/2 -> `answers` `["false"]`/`["true"]`.
      - `answer_to_answers` (short-form QA): `answer` (string or list) -> `answers` list.
      - `pubhealth_answers` (PubHealth): `True`/`SUPPORTS`/... -> lowercase `true`/`false`.
      - `arc_raw` (ARC): AI2's nested `question.stem`/`question.choices` -> flat; int labels and keys -> strings.
      - `passage_strings` (`ctxs`): numeric `id`/`score` -> strings.

    An item already in the expected form comes back equal. The input is not modified; `_where` is kept so later
    messages name the source line.

    Example:
        >>> convert_item({"question": "q", "answer": "a", "top_contexts": [{"title": "t", "text": "x", "id": 1,
        ...     "score": 1.5}]}, "popqa")
        {'question': 'q', 'ctxs': [{'title': 't', 'text': 'x', 'id': '1', 'score': '1.5'}], 'answers': ['a']}

    Raises:
        DataFormatError: a value no rule can map (a PubHealth `mixture` label, an answer `maybe`), naming the line.
    """
    fmt = dataset_format(dataset)
    out = dict(item)
    for rule in CONVERSION_RULES.get(dataset, DEFAULT_RULES):
        out = rule(out, fmt)
    return out


def convert_items(
    items: list[dict[str, Any]], dataset: str, drop_invalid: bool = False
) -> tuple[list[dict[str, Any]], CheckReport]:
    """Convert every item, then check it; return the items to write and the report on them.

    An item that cannot be converted, or still has a problem after conversion, is kept as it is and its problems
    are reported; with `drop_invalid` it is excluded instead, and counted in `n_dropped` / `dropped`.
    """
    kept: list[dict[str, Any]] = []
    kept_problems: list[list[str]] = []
    dropped: list[str] = []
    for item in items:
        try:
            new = convert_item(item, dataset)
            problems = [f"{where(new)}: {msg}" for msg in check_item(new, dataset)]
        except DataFormatError as err:
            new, problems = dict(item), [str(err)]
        if problems and drop_invalid:
            dropped += problems
            continue
        kept.append(new)
        kept_problems.append(problems)
    n_dropped = len(items) - len(kept)
    if not kept:
        raise DataFormatError(
            f"all {len(items)} items have problems, so nothing is left to write; the first: {dropped[0]}"
        )
    report = build_report(kept, kept_problems, dataset)
    return kept, dataclasses.replace(report, n_dropped=n_dropped, dropped=dropped[:MAX_LISTED])
