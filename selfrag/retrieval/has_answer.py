"""`hasanswer`: does a retrieved passage contain a gold answer? And top-k answer recall over a retrieval run.

The eval files' `ctxs` were made by facebookresearch/contriever's `passage_retrieval.py` (docs/original_selfrag.md
§6.5), which marks every passage with `hasanswer` when the questions have `answers`, using DPR's `has_answer`
(string match over tokens). This is our implementation of the same rule:

* text and answer are put in unicode NFD form (so "é" written precomposed or as "e" + accent compare equal; accents
  are NOT removed: "Beyonce" does not match "Beyoncé", as in DPR);
* both are split by DPR's `SimpleTokenizer` rule: a maximal run of letters, digits and combining marks (unicode
  categories L*, N*, M*) is one token, any other character that is not whitespace or a control character (Z*, C*)
  is a token on its own (so "U.S." is `u . s .` and "Austen's" is `austen ' s`);
* tokens are lower-cased;
* a passage has the answer when the answer's tokens occur as a contiguous run of the passage's tokens (so "Austen"
  matches "Jane Austen's" but not "Austenite").

Only the passage `text` is searched, not its title (DPR / contriever `check_answer`). An answer with no token at all
(an empty string) matches nothing (DPR's loop would count it as found everywhere).

>>> tokenize("The U.S. capital, Washington D.C.")
['the', 'u', '.', 's', '.', 'capital', ',', 'washington', 'd', '.', 'c', '.']
>>> has_answer(["Jane Austen"], "Pride and Prejudice is Jane Austen's second novel.")
True
>>> has_answer(["Austen"], "Austenite is a phase of iron.")
False
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from selfrag.data import where
from selfrag.errors import DataFormatError

# Gold-answer fields, in the order they are looked for (PopQA / TriviaQA / PubHealth use `answers`).
ANSWER_FIELDS = ("answers", "answer", "golds")
# Recall is reported at these depths (and at the run's own depth k), as contriever's validate() logs R@5/20/100.
RECALL_DEPTHS = (1, 5, 20, 100)


def tokenize(text: str) -> list[str]:
    """DPR's SimpleTokenizer words, lower-cased, on the NFD form of `text` (see the module docstring)."""
    tokens: list[str] = []
    run: list[str] = []
    for char in unicodedata.normalize("NFD", text):
        kind = unicodedata.category(char)[0]
        if kind in "LNM":
            run.append(char)
            continue
        if run:
            tokens.append("".join(run).lower())
            run = []
        if kind not in "ZC":
            tokens.append(char.lower())
    if run:
        tokens.append("".join(run).lower())
    return tokens


def _contains(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    n = len(needle)
    if n == 0:
        return False
    first = needle[0]
    return any(haystack[i] == first and list(haystack[i : i + n]) == list(needle) for i in range(len(haystack) - n + 1))


def has_answer(answers: Iterable[str], text: str) -> bool:
    """True when the tokens of any of `answers` occur, contiguous, in the tokens of `text`."""
    words = tokenize(text)
    return any(_contains(words, tokenize(answer)) for answer in answers)


def gold_answers(item: Mapping[str, Any]) -> list[str] | None:
    """The item's gold answers from `answers`, `answer` or `golds` (a string or a list of strings), or None.

    Raises `DataFormatError` (naming the item's file and line) when the field holds something else."""
    for key in ANSWER_FIELDS:
        if key not in item or item[key] is None:
            continue
        value = item[key]
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise DataFormatError(
            f"{where(item)}: field '{key}' must be a string or a list of strings (the gold answers), found "
            f"{value!r:.80}; fix the field or rename it so that it is not read as answers"
        )
    return None


@dataclass
class AnswerRecall:
    """Top-k answer recall: the fraction of questions (with gold answers) whose first hit is at rank <= k."""

    n_docs: int
    n_items: int = 0
    n_questions: int = 0  # items with gold answers
    first_hits: list[int | None] = field(default_factory=list)  # 0-based rank of the first hit, per question

    def add(self, hits: Sequence[bool]) -> None:
        self.n_questions += 1
        self.first_hits.append(next((rank for rank, hit in enumerate(hits) if hit), None))

    def depths(self) -> list[int]:
        return sorted({d for d in RECALL_DEPTHS if d < self.n_docs} | {self.n_docs})

    def recall(self) -> dict[str, float]:
        """`{"1": r@1, "5": r@5, "20": r@20, ..., "<n_docs>": r@n_docs}` (depths up to `n_docs`)."""
        if not self.n_questions:
            return {}
        return {
            str(k): sum(1 for r in self.first_hits if r is not None and r < k) / self.n_questions for k in self.depths()
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_items": self.n_items,
            "n_questions": self.n_questions,
            "n_docs": self.n_docs,
            "recall": self.recall(),
            "match": "DPR has_answer: NFD, SimpleTokenizer words, lower-cased, contiguous token match in ctx text",
        }

    def summary(self) -> str:
        scores = " ".join(f"R@{k}: {v:.4f}" for k, v in self.recall().items())
        return f"answer recall over {self.n_questions} of {self.n_items} items with gold answers: {scores}"


def add_hasanswer(
    items: Sequence[dict[str, Any]], n_docs: int, answers: Sequence[list[str] | None] | None = None
) -> AnswerRecall:
    """Set `hasanswer` on every ctx of the items that have gold answers; return the recall of the run.

    `answers[i]` are item i's gold answers (default: `gold_answers(item)`); items without any (no `answers` /
    `answer` / `golds`) are left as they are, with no `hasanswer` key, as the original only validates when answers
    exist. Each item needs `ctxs` (a list of dicts with `text`)."""
    if answers is None:
        answers = [gold_answers(item) for item in items]
    stats = AnswerRecall(n_docs=n_docs)
    for item, golds in zip(items, answers, strict=True):
        stats.n_items += 1
        if golds is None:
            continue
        answer_tokens = [tokens for tokens in map(tokenize, golds) if tokens]
        hits = []
        for ctx in item["ctxs"]:
            words = tokenize(ctx.get("text") or "")
            hit = any(_contains(words, tokens) for tokens in answer_tokens)
            ctx["hasanswer"] = hit
            hits.append(hit)
        stats.add(hits)
    return stats
