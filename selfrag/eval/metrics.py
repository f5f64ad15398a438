"""Short-form metrics: the paper's `match` and strict metrics next to it.

- `match`: 1 if any gold string is a substring of the prediction (case-sensitive, no normalisation). This is
  what the paper reports as "accuracy" for PopQA, TriviaQA, PubHealth and ARC (original metrics.py:83-87). It
  is lenient: for ARC a gold "C" matches any capital C in the output.
- `exact_match` / `f1`: SQuAD-style, after `normalize_answer`, maxed over the golds.
- `accuracy`: parses the answer as the task's entry in `selfrag.tasks` says: the option letter for `arc_c`,
  true/false for `fever` (PubHealth); for open tasks it is `exact_match`.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

from selfrag.tasks import task_for_flag

METRICS = ("match", "accuracy", "exact_match", "f1")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if any gold is a substring of `prediction` (the paper's metric), else 0.0."""
    return float(any(gold in prediction for gold in golds))


def map_fact_label(prediction: str) -> str:
    """`SUPPORTS` -> `true`, `REFUTES` -> `false` before matching, as the original (run_short_form.py:344-347)."""
    if "SUPPORTS" in prediction:
        return "true"
    if "REFUTES" in prediction:
        return "false"
    return prediction


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(g) for g in golds))


def token_f1(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    overlap = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1(prediction: str, golds: Sequence[str]) -> float:
    return max((token_f1(prediction, g) for g in golds), default=0.0)


_CHOICE_PATTERNS = (
    re.compile(r"^\s*\(?([A-D])\)?(?:[.:,)]|\s*$)"),  # "B", "B.", "(B)", "B: text"; not "A dog ..."
    re.compile(r"\b(?i:answer|choice|option)\s*(?:is|:)?\s*\(?([A-D])\b"),  # "The answer is B"; not "... is a dog"
)


def parse_choice(prediction: str) -> str | None:
    """The option letter A-D a prediction commits to, or None.

    >>> parse_choice("B: the Moon"), parse_choice("The answer is (C)."), parse_choice("Carbon dioxide")
    ('B', 'C', None)
    """
    for pattern in _CHOICE_PATTERNS:
        found = pattern.search(prediction)
        if found:
            return found.group(1).upper()
    return None


def parse_true_false(prediction: str) -> str | None:
    """`true` or `false` from the first such word (or SUPPORTS / REFUTES), or None.

    >>> parse_true_false("True, it is correct."), parse_true_false("REFUTES"), parse_true_false("maybe")
    ('true', 'false', None)
    """
    found = re.search(r"\b(true|false|supports|refutes)\b", prediction, re.IGNORECASE)
    if not found:
        return None
    word = found.group(1).lower()
    return {"supports": "true", "refutes": "false"}.get(word, word)


# `accuracy`'s parser of each `answer_parser` a task may name (selfrag.tasks), with how the golds are written.
ANSWER_PARSERS: dict[str, tuple[Callable[[str], str | None], Callable[[str], str]]] = {
    "choice": (parse_choice, str.upper),
    "true_false": (parse_true_false, str.lower),
}


def accuracy(prediction: str, golds: Sequence[str], task: str | None) -> float:
    """Strict accuracy: the answer as the task's `answer_parser` reads it (selfrag.tasks): the option letter
    (`arc_c`), true/false (`fever`); else exact match."""
    spec = task_for_flag(task)
    if spec is None or spec.answer_parser is None:
        return exact_match(prediction, golds)
    parse, normalize = ANSWER_PARSERS[spec.answer_parser]
    return float(parse(prediction) in {normalize(g.strip()) for g in golds})


def metric_fn(name: str, task: str | None) -> Callable[[str, Sequence[str]], float]:
    """The per-item function for `--metric name`."""
    if name == "match":
        return lambda pred, golds: match(map_fact_label(pred), golds)
    if name == "accuracy":
        return lambda pred, golds: accuracy(pred, golds, task)
    if name == "exact_match":
        return exact_match
    if name == "f1":
        return f1
    raise ValueError(f"unknown metric {name!r}; choose one of {METRICS}")
