"""Is an answer backed by the passage it cites? The model's own IsRel and IsSup judgements, as labels.

Self-RAG ranks the passage-conditioned answers by their critique scores, so the best-ranked answer can still come
from a passage the model judged `[Irrelevant]`, or one it did not judge to support the answer (when no passage in
the corpus is about the question, every candidate is like that). These labels let a view say so:

- `relevant`: p([Relevant]) > p([Irrelevant]) right after the passage (the IsRel score is above 0.5); when the
  model generated one of the two there, this is the one it generated (greedy decoding);
- `support`: the first IsSup token the model generated: `"full"`, `"partial"` or `"none"` (`[No support /
  Contradictory]`); None when it generated none (after `[Irrelevant]` it usually does not);
- grounded: relevant and fully supported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from selfrag.tokens import FULLY_SUPPORTED, IRRELEVANT, NO_SUPPORT, PARTIALLY_SUPPORTED, RELEVANT

SUPPORT_LABELS = {FULLY_SUPPORTED: "full", PARTIALLY_SUPPORTED: "partial", NO_SUPPORT: "none"}
SUPPORT_TOKENS = {label: token for token, label in SUPPORT_LABELS.items()}
# weakest first: no IsSup token at all, then [No support / Contradictory], [Partially supported], [Fully supported]
_SUPPORT_ORDER = (None, "none", "partial", "full")


def support_label(text: str) -> str | None:
    """The label of the first IsSup token in a completion (reflection tokens kept), or None if it has none."""
    found = [(text.find(token), label) for token, label in SUPPORT_LABELS.items() if token in text]
    return min(found)[1] if found else None


def judgement(text: str, relevance: float) -> dict[str, Any]:
    """`{"relevant": bool, "support": "full" | "partial" | "none" | None}` of one completion and its IsRel score."""
    return {"relevant": relevance > 0.5, "support": support_label(text)}


def grounded(judged: Mapping[str, Any]) -> bool:
    """A passage that was judged relevant and to fully support the answer."""
    return bool(judged["relevant"]) and judged["support"] == "full"


def weakest(judgements: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One judgement for a passage cited by several segments: relevant only if every one is, the weakest support."""
    judgements = list(judgements)
    return {
        "relevant": all(j["relevant"] for j in judgements),
        "support": min((j["support"] for j in judgements), key=_SUPPORT_ORDER.index),
    }


def describe(judged: Mapping[str, Any]) -> str:
    """The judgement in reflection tokens: `[Irrelevant], no IsSup token` or `[Relevant], [Fully supported]`."""
    rel = RELEVANT if judged["relevant"] else IRRELEVANT
    sup = SUPPORT_TOKENS[judged["support"]] if judged["support"] else "no IsSup token"
    return f"{rel}, {sup}"
