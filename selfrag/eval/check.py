"""Check eval items against the expected form of their dataset (`selfrag.eval.formats.TASK_FORMATS`).

`check_item` lists the ways one item differs from the form; `check_items` runs it over a file's items, locating
each problem as `file:line`, and `build_report` gathers the statistics into a `CheckReport`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from selfrag.data import where
from selfrag.errors import DataFormatError
from selfrag.eval.formats import CONVERT_HINT, MAX_LISTED, PASSAGE_KEYS, DatasetFormat, dataset_format
from selfrag.prompts import ARC_LETTERS, arc_choices

logger = logging.getLogger(__name__)


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
