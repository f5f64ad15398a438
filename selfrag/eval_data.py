"""Check downloaded Self-RAG eval files and convert known variants into the form the runners read.

The expected form of each file is that of the original `eval_data` release (docs/original_selfrag.md §11); it is
listed per dataset in `TASK_FORMATS`. `check_items` reports every deviation with its `file:line`, `convert_item`
normalises the variants we know of (other field names, raw PopQA / PUBHEALTH / AI2-ARC rows, numeric passage ids
and scores), and `prepare_eval_file` ties them together for `scripts/prepare_eval_data.py`:

    python scripts/prepare_eval_data.py --input_file ~/Downloads/eval_data/popqa_longtail_w_gs.jsonl \
        --output_file eval_data/popqa_longtail_w_gs.jsonl
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import statistics
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfrag.data import clean, load_items, where, write_json_atomic
from selfrag.errors import ConfigError, DataFormatError
from selfrag.prompts import ARC_LETTERS, arc_choices

logger = logging.getLogger(__name__)

MAX_LISTED = 20  # problems listed in a report; the rest are only counted
PASSAGE_KEYS = ("ctxs", "top_contexts", "docs")  # where passages may live; the format names the expected one
CONVERT_HINT = "--output_file converts it"


@dataclass(frozen=True)
class DatasetFormat:
    """The expected form of one eval file (docs/original_selfrag.md §11).

    Attributes:
        name: the dataset name (`--dataset`).
        file_names: the file names in the original release, for `detect_dataset`.
        query_field: the field holding the question or prompt (`input` for FactScore).
        gold: how the gold answers are stored: `aliases` (`answers`, a non-empty list of strings), `true_false`
            (`answers`, `["true"]` or `["false"]`, lowercase), `answer_key` (`choices` `{text, label}` and
            `answerKey`), `alce` (ALCE's `qa_pairs` / `answer`, passed through unchecked) or `None` (no gold).
        passages: the key of the passage list: `ctxs`, or ALCE's `docs` for ASQA.
        required_strings: other fields that must be non-empty strings.
        run: how the runners use the file.
    """

    name: str
    file_names: tuple[str, ...]
    query_field: str
    gold: str | None
    passages: str
    required_strings: tuple[str, ...] = ()
    run: str = ""


TASK_FORMATS: dict[str, DatasetFormat] = {
    fmt.name: fmt
    for fmt in (
        DatasetFormat(
            "popqa",
            ("popqa_longtail_w_gs.jsonl",),
            "question",
            "aliases",
            "ctxs",
            run="retrieval_lm/run_short_form.py, no --task",
        ),
        DatasetFormat(
            "triviaqa",
            ("triviaqa_test_w_gs.jsonl", "triviaqa_test.jsonl"),
            "question",
            "aliases",
            "ctxs",
            run="retrieval_lm/run_short_form.py, no --task",
        ),
        DatasetFormat(
            "pubhealth",
            ("health_claims_processed.jsonl",),
            "question",
            "true_false",
            "ctxs",
            run="retrieval_lm/run_short_form.py --task fever",
        ),
        DatasetFormat(
            "arc_c",
            ("arc_challenge_processed.jsonl",),
            "question",
            "answer_key",
            "ctxs",
            run="retrieval_lm/run_short_form.py --task arc_c",
        ),
        DatasetFormat(
            "asqa",
            ("asqa_eval_gtr_top100.json",),
            "question",
            "alce",
            "docs",
            run="retrieval_lm/run_long_form_static.py --task asqa (a JSON list, ALCE's format)",
        ),
        DatasetFormat(
            "factscore",
            ("factscore_unlabeled_alpaca_13b_retrieval.jsonl",),
            "input",
            None,
            "ctxs",
            required_strings=("topic",),
            run="retrieval_lm/run_long_form_static.py --task factscore",
        ),
    )
}


def dataset_format(dataset: str) -> DatasetFormat:
    """The `DatasetFormat` of `dataset`; raises `ConfigError` naming the known datasets."""
    if dataset not in TASK_FORMATS:
        raise ConfigError(f"unknown dataset '{dataset}'; expected one of {sorted(TASK_FORMATS)}")
    return TASK_FORMATS[dataset]


def detect_dataset(path: str | os.PathLike) -> str:
    """The dataset of an eval file, from its name in the original release (e.g. `arc_challenge_processed.jsonl`).

    Raises:
        ConfigError: the name is not one of the release's; the caller must pass the dataset explicitly.
    """
    name = Path(path).name
    for fmt in TASK_FORMATS.values():
        if name in fmt.file_names:
            return fmt.name
    known = sorted(n for fmt in TASK_FORMATS.values() for n in fmt.file_names)
    raise ConfigError(
        f"cannot tell the dataset from the file name '{name}' (known names: {known}); "
        f"pass --dataset, one of {sorted(TASK_FORMATS)}"
    )


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (eval files can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class CheckReport:
    """What `check_items` / `convert_items` found in a file.

    Attributes:
        dataset: the dataset name the items were checked against.
        n_items: items checked (after dropping, for a conversion).
        n_with_ctxs: items whose passage list (`ctxs`, or `docs` for ASQA) is non-empty.
        ctxs_min, ctxs_median, ctxs_max: passages per item (an item without passages counts 0).
        n_passages: passages in all items.
        n_passages_without_id_or_score: passages lacking `id` or `score`: the web / gold passages of the
            `_w_gs` files, which have only `title` and `text`.
        label_counts: gold labels for PubHealth (`answers`) and ARC (`answerKey` as written), else empty.
        problems: the first `MAX_LISTED` problems, each `file:line: message`.
        n_problems: all problems; the file is in the expected form when this is 0.
        n_dropped, dropped: items excluded by `drop_invalid`, and the first `MAX_LISTED` reasons.
        input_file, sha256: the file read and its SHA-256 (set by `prepare_eval_file`).
        output_file, output_sha256: the file written, when one was.
    """

    dataset: str
    n_items: int
    n_with_ctxs: int
    ctxs_min: int
    ctxs_median: float
    ctxs_max: int
    n_passages: int
    n_passages_without_id_or_score: int
    label_counts: dict[str, int]
    problems: list[str]
    n_problems: int
    n_dropped: int = 0
    dropped: list[str] = field(default_factory=list)
    input_file: str | None = None
    sha256: str | None = None
    output_file: str | None = None
    output_sha256: str | None = None

    @property
    def ok(self) -> bool:
        """True when no problem remains."""
        return self.n_problems == 0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ok": self.ok}

    def log(self, log: logging.Logger = logger) -> None:
        """Log the report: counts and checksum at INFO, problems at ERROR, dropped items at WARNING."""
        source = f" from {self.input_file} (sha256 {self.sha256})" if self.input_file else ""
        log.info("%s: items: %d%s", self.dataset, self.n_items, source)
        log.info(
            "passages per item: min %d, median %g, max %d; items with passages: %d; passages lacking "
            "id/score (web passages): %d of %d",
            self.ctxs_min,
            self.ctxs_median,
            self.ctxs_max,
            self.n_with_ctxs,
            self.n_passages_without_id_or_score,
            self.n_passages,
        )
        if self.label_counts:
            log.info("labels: %s", self.label_counts)
        if self.n_dropped:
            log.warning(
                "items dropped (--drop_invalid): %d; their problems:%s",
                self.n_dropped,
                _listing(self.dropped, self.n_dropped),
            )
        if self.output_file:
            log.info("wrote %s (sha256 %s)", self.output_file, self.output_sha256)
        if self.ok:
            log.info("no problems: the file is in the expected %s form", self.dataset)
        else:
            log.error("%d problems:%s", self.n_problems, _listing(self.problems, self.n_problems))


def _listing(lines: list[str], total: int) -> str:
    more = f"\n  ... and {total - len(lines)} more" if total > len(lines) else ""
    return "".join(f"\n  {line}" for line in lines) + more


def _describe(item: Mapping[str, Any], name: str) -> str:
    if name not in item:
        return "it is missing"
    text = json.dumps(item[name], ensure_ascii=False)
    return f"found {type(item[name]).__name__} {text[:80]}{'...' if len(text) > 80 else ''}"


def _alternative_hint(item: Mapping[str, Any], name: str, alternatives: tuple[str, ...]) -> str:
    """` (found 'answer'; ...)` when `name` is missing and a field that conversion maps to it is present."""
    if name in item:
        return ""
    return next((f" (found '{k}'; {CONVERT_HINT})" for k in alternatives if k in item), "")


def _is_strings(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v.strip() for v in value)


def _check_aliases(item: Mapping[str, Any]) -> list[str]:
    if _is_strings(item.get("answers")):
        return []
    hint = _alternative_hint(item, "answers", ("answer", "possible_answers"))
    return [f"field 'answers' must be a non-empty list of strings; {_describe(item, 'answers')}{hint}"]


def _check_true_false(item: Mapping[str, Any]) -> list[str]:
    answers = item.get("answers")
    if isinstance(answers, list) and answers and all(a in ("true", "false") for a in answers):
        return []
    hint = _alternative_hint(item, "answers", ("answer", "label"))
    return [
        f'field \'answers\' must be ["true"] or ["false"], lowercase, since the match metric is '
        f"case-sensitive; {_describe(item, 'answers')}{hint}"
    ]


def _check_answer_key(item: Mapping[str, Any]) -> list[str]:
    try:
        arc_choices(item)
    except DataFormatError as err:
        return [str(err)]
    labels = [_arc_letter(label) for label in item["choices"]["label"]]
    problems = []
    if len(set(labels)) != len(labels):
        problems.append(f"choice labels {item['choices']['label']} repeat after mapping 1-4 to A-D")
    if not all(isinstance(text, str) for text in item["choices"]["text"]):
        problems.append("every 'choices.text' must be a string")
    if not isinstance(item.get("answerKey"), str):
        hint = f" ({CONVERT_HINT})" if isinstance(item.get("answerKey"), int) else ""
        problems.append(f"field 'answerKey' must be a string; {_describe(item, 'answerKey')}{hint}")
    elif _arc_letter(item["answerKey"]) not in labels:
        problems.append(f"answerKey {item['answerKey']!r} is not among the choice labels {item['choices']['label']}")
    elif _arc_letter(item["answerKey"]) not in ARC_LETTERS:
        # The original prompt shows only A-D (run_short_form.py:217-242), so such an item can never be answered.
        problems.append(f"answerKey {item['answerKey']!r} is outside A-D; the prompt shows only choices A-D")
    return problems


_GOLD_CHECKS: dict[str | None, Callable[[Mapping[str, Any]], list[str]]] = {
    "aliases": _check_aliases,
    "true_false": _check_true_false,
    "answer_key": _check_answer_key,
    "alce": lambda item: [],
    None: lambda item: [],
}


def _arc_letter(label: Any) -> str:
    """An ARC label as the prompt shows it: "1".."4" become A-D (prompts.arc_choices), others are kept."""
    label = str(label)
    return ARC_LETTERS[int(label) - 1] if label in {"1", "2", "3", "4"} else label


def _check_passages(item: Mapping[str, Any], fmt: DatasetFormat) -> list[str]:
    key = fmt.passages
    if key not in item:
        other = next((k for k in PASSAGE_KEYS if k in item), None)
        if other:
            return [f"missing field '{key}' (found '{other}'; {CONVERT_HINT})"]
        return [f"missing field '{key}' (retrieved passages); add them with retrieval_lm/passage_retrieval.py"]
    passages = item[key]
    if not isinstance(passages, list) or not passages:
        return [f"field '{key}' must be a non-empty list of passages; {_describe(item, key)}"]
    # One message per kind of fault, naming the passages, so that a file with numeric scores gives one line per item.
    faults: dict[str, list[int]] = {}
    for k, ctx in enumerate(passages):
        if not isinstance(ctx, Mapping):
            faults.setdefault("not an object", []).append(k)
            continue
        for name in ("title", "text"):
            if not isinstance(ctx.get(name), str):
                faults.setdefault(f"no string '{name}'", []).append(k)
        if key == "ctxs":  # ALCE's docs keep their numeric scores
            for name in ("id", "score"):
                if name in ctx and not isinstance(ctx[name], str):
                    faults.setdefault(
                        f"non-string '{name}' (the original files store strings; {CONVERT_HINT})", []
                    ).append(k)
    return [f"{key}{indices}: {fault}" for fault, indices in faults.items()]


def check_item(item: Mapping[str, Any], dataset: str) -> list[str]:
    """The ways `item` differs from the expected form of `dataset` (messages without location; empty when fine)."""
    fmt = dataset_format(dataset)
    problems = []
    for name in (fmt.query_field, *fmt.required_strings):
        value = item.get(name)
        if not isinstance(value, str) or not value.strip():
            hint = _alternative_hint(item, name, ("claim",)) if dataset == "pubhealth" else ""
            if dataset == "arc_c" and isinstance(value, Mapping) and "stem" in value:
                hint = f" (AI2's nested ARC format; {CONVERT_HINT})"
            problems.append(f"field '{name}' must be a non-empty string; {_describe(item, name)}{hint}")
    problems += _GOLD_CHECKS[fmt.gold](item)
    problems += _check_passages(item, fmt)
    return problems


def _passages(item: Mapping[str, Any], fmt: DatasetFormat) -> list[Any]:
    for key in (fmt.passages, *PASSAGE_KEYS):
        if isinstance(item.get(key), list):
            return item[key]
    return []


def _label(item: Mapping[str, Any], fmt: DatasetFormat) -> str | None:
    if fmt.gold == "true_false":
        answers = item.get("answers")
        return "/".join(map(str, answers)) if isinstance(answers, list) else "<missing>"
    if fmt.gold == "answer_key":
        return str(item.get("answerKey", "<missing>"))
    return None


def build_report(items: list[dict[str, Any]], located_problems: list[list[str]], dataset: str) -> CheckReport:
    """Statistics of `items` plus their problems (`located_problems[i]` holds item i's `file:line: message`s)."""
    fmt = dataset_format(dataset)
    counts = [len(_passages(item, fmt)) for item in items]
    passages = [ctx for item in items for ctx in _passages(item, fmt)]
    bare = sum(not (isinstance(ctx, Mapping) and "id" in ctx and "score" in ctx) for ctx in passages)
    labels = Counter(label for label in (_label(item, fmt) for item in items) if label is not None)
    problems = [p for item_problems in located_problems for p in item_problems]
    return CheckReport(
        dataset=dataset,
        n_items=len(items),
        n_with_ctxs=sum(c > 0 for c in counts),
        ctxs_min=min(counts, default=0),
        ctxs_median=statistics.median(counts) if counts else 0,
        ctxs_max=max(counts, default=0),
        n_passages=sum(counts),
        n_passages_without_id_or_score=bare,
        label_counts=dict(sorted(labels.items())),
        problems=problems[:MAX_LISTED],
        n_problems=len(problems),
    )


def check_items(items: list[dict[str, Any]], dataset: str) -> CheckReport:
    """Check items (as `load_items` returns them) against the expected form of `dataset`, collecting all problems.

    Example: an ARC file whose second line has `"answerKey": "E"` but labels A-D gives a report with
    `n_problems == 1` and `problems == ["arc.jsonl:2: answerKey 'E' is not among the choice labels [...]"]`.
    """
    located = [[f"{where(item)}: {msg}" for msg in check_item(item, dataset)] for item in items]
    return build_report(items, located, dataset)


# ------------------------------------------------------------------------------------------------- conversion rules
# Each rule takes a copy of the item and returns it, changed or not; a value it cannot map raises DataFormatError.
# Rules only rename or re-type fields: they never drop information.


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


def convert_item(item: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """A copy of `item` in the expected form of `dataset`, by the rules in `CONVERSION_RULES[dataset]`.

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
    for rule in CONVERSION_RULES[dataset]:
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


# ------------------------------------------------------------------------------------------------------- file level


def write_items(path: str | os.PathLike, items: list[dict[str, Any]]) -> None:
    """Write items atomically: a JSON list for a `.json` path (as ALCE's files), else JSON Lines."""
    path = Path(path)
    records = [clean(item) for item in items]
    if path.suffix == ".json":
        write_json_atomic(path, records)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def prepare_eval_file(
    input_file: str | os.PathLike,
    dataset: str | None = None,
    output_file: str | os.PathLike | None = None,
    drop_invalid: bool = False,
) -> CheckReport:
    """Check `input_file`; with `output_file`, convert it and write the result when no problem remains.

    Args:
        input_file: a downloaded eval file (JSON Lines, or a `.json` list).
        dataset: a key of `TASK_FORMATS`; default: detected from the file name (`detect_dataset`).
        output_file: where to write the converted items (`.json`: a JSON list, else JSON Lines). Not written while
            problems remain, so a half-valid file never sits under an eval name.
        drop_invalid: exclude items that still have problems after conversion (counted in the report).

    Returns:
        The report, with `input_file`, `sha256` and, when written, `output_file` and `output_sha256`; also logged.
    """
    dataset = dataset or detect_dataset(input_file)
    dataset_format(dataset)
    if output_file is not None and Path(output_file).resolve() == Path(input_file).resolve():
        raise ConfigError(
            f"--output_file {output_file} is the input file; write to another path so the download stays as it was"
        )
    items = load_items(input_file)
    sha256 = file_sha256(input_file)
    if output_file is None:
        if drop_invalid:
            logger.warning("--drop_invalid has no effect without --output_file")
        report = check_items(items, dataset)
    else:
        converted, report = convert_items(items, dataset, drop_invalid=drop_invalid)
        if report.ok:
            write_items(output_file, converted)
            report = dataclasses.replace(report, output_file=str(output_file), output_sha256=file_sha256(output_file))
        else:
            logger.error(
                "not writing %s: %d problems remain; fix them in the input, or pass --drop_invalid to "
                "exclude those items",
                output_file,
                report.n_problems,
            )
    report = dataclasses.replace(report, input_file=str(input_file), sha256=sha256)
    report.log()
    return report
