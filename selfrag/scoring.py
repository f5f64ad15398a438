"""Critique scores from reflection-token log-probabilities (paper §3.3, "Tree-decoding with critique tokens").

All functions are pure: they read a `Generation`'s `token_ids` and `step_logprobs` (see backends/base.py).
Probabilities of a token group are normalised within the group, computed as a softmax over the group's
log-probs, which equals `exp(lp_k) / sum_j exp(lp_j)` but does not underflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from selfrag.backends.base import Generation
from selfrag.tokens import (
    FULLY_SUPPORTED,
    IRRELEVANT,
    ISSUP_TOKENS,
    ISUSE_TOKENS,
    NO_RETRIEVAL,
    PARTIALLY_SUPPORTED,
    RELEVANT,
    RETRIEVAL,
    ReflectionVocab,
)

# IsUse weights for [Utility:1] .. [Utility:5] (original run_short_form.py:146).
UTILITY_WEIGHTS = (-1.0, -0.5, 0.0, 0.5, 1.0)


def group_probs(step: Mapping[int, float], ids: Sequence[int]) -> list[float]:
    """Probabilities of `ids` renormalised among themselves: `exp(lp_k) / sum_j exp(lp_j)`."""
    lps = [step[i] for i in ids]
    top = max(lps)
    if top == -math.inf:
        raise ValueError(f"all of the tokens {list(ids)} have probability 0; cannot normalise")
    weights = [math.exp(lp - top) for lp in lps]
    total = sum(weights)
    return [w / total for w in weights]


def retrieve_prob(step: Mapping[int, float], vocab: ReflectionVocab) -> float:
    """`p([Retrieval]) / (p([Retrieval]) + p([No Retrieval]))` at one position (paper App. A.3)."""
    p_ret, _ = group_probs(step, (vocab[RETRIEVAL], vocab[NO_RETRIEVAL]))
    return p_ret


def original_retrieve_ratio(step: Mapping[int, float], vocab: ReflectionVocab) -> float:
    """The original short form's ratio over *raw log-probs* `lr / (lr + ln)` (run_short_form.py:76-81).

    It grows as p([Retrieval]) falls, so thresholding it inverts the paper's rule; kept for `--compat original`.
    """
    lr, ln = step[vocab[RETRIEVAL]], step[vocab[NO_RETRIEVAL]]
    return lr / (lr + ln)


def first_position(gen: Generation, ids: Sequence[int]) -> int | None:
    """Index of the first generated token whose id is in `ids`, or None."""
    wanted = set(ids)
    return next((t for t, tok in enumerate(gen.token_ids) if tok in wanted), None)


def relevance(gen: Generation, vocab: ReflectionVocab) -> float:
    """IsRel: `P([Relevant]) / (P([Relevant]) + P([Irrelevant]))` at generated position 0.

    Position 0 is where the model emits IsRel right after `</paragraph>`; the original reads it there whatever
    token was generated (run_short_form.py:101-110).
    """
    _, p_rel = group_probs(gen.step_logprobs[0], vocab.group((IRRELEVANT, RELEVANT)))
    return p_rel


def support(gen: Generation, vocab: ReflectionVocab) -> float:
    """IsSup: `(P(Full) + 0.5 * P(Partial)) / (P(Full) + P(Partial) + P(No support))` at the first IsSup token.

    0.0 when the completion contains no IsSup token (original run_short_form.py:112-133).
    """
    ids = vocab.group(ISSUP_TOKENS)
    pos = first_position(gen, ids)
    if pos is None:
        return 0.0
    probs = dict(zip(ISSUP_TOKENS, group_probs(gen.step_logprobs[pos], ids)))
    return probs[FULLY_SUPPORTED] + 0.5 * probs[PARTIALLY_SUPPORTED]


def utility(gen: Generation, vocab: ReflectionVocab) -> float:
    """IsUse: `sum_k w_k P([Utility:k])` with w = (-1, -0.5, 0, 0.5, 1), at the first IsUse token; else 0.0."""
    ids = vocab.group(ISUSE_TOKENS)
    pos = first_position(gen, ids)
    if pos is None:
        return 0.0
    return sum(w * p for w, p in zip(UTILITY_WEIGHTS, group_probs(gen.step_logprobs[pos], ids)))


@dataclass(frozen=True)
class Judgement:
    """One reflection aspect as the model wrote it: the token it generated (None: it wrote none of the group's) and
    that token's probability within its group at that position."""

    token: str | None = None
    prob: float | None = None


def judge(gen: Generation, vocab: ReflectionVocab, tokens: Sequence[str], at: int | None = None) -> Judgement:
    """The first generated token of the group `tokens` (only position `at`, when given) and its group probability."""
    ids = vocab.group(tokens)
    pos = first_position(gen, ids) if at is None else (at if at < len(gen.token_ids) else None)
    if pos is None or gen.token_ids[pos] not in ids:
        return Judgement()
    k = ids.index(gen.token_ids[pos])
    return Judgement(tokens[k], group_probs(gen.step_logprobs[pos], ids)[k])


def judgements(gen: Generation, vocab: ReflectionVocab) -> tuple[Judgement, Judgement, Judgement]:
    """IsRel (at position 0, where it follows `</paragraph>`), IsSup and IsUse of one completion."""
    return (
        judge(gen, vocab, (IRRELEVANT, RELEVANT), at=0),
        judge(gen, vocab, ISSUP_TOKENS),
        judge(gen, vocab, ISUSE_TOKENS),
    )


@dataclass(frozen=True)
class Weights:
    """Weights of the critique terms in the segment score (paper: 1.0 / 1.0 / 0.5)."""

    w_rel: float = 1.0
    w_sup: float = 1.0
    w_use: float = 0.5
    use_groundness: bool = False
    use_utility: bool = False
    use_seqscore: bool = False


@dataclass(frozen=True)
class CritiqueScores:
    """The parts of one passage-conditioned completion's score, and their weighted sum `total`."""

    relevance: float
    support: float
    utility: float
    seq: float
    total: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def score_generation(gen: Generation, vocab: ReflectionVocab, weights: Weights) -> CritiqueScores:
    """`[exp(mean logprob)] + w_rel * IsRel + w_sup * IsSup + w_use * IsUse` (original run_short_form.py:150-160).

    IsSup and IsUse count only when enabled (`--use_groundness`, `--use_utility`); the sequence term only with
    `--use_seqscore`.
    """
    rel = relevance(gen, vocab)
    sup = support(gen, vocab) if weights.use_groundness else 0.0
    use = utility(gen, vocab) if weights.use_utility else 0.0
    seq = math.exp(gen.mean_logprob) if weights.use_seqscore else 0.0
    total = seq + weights.w_rel * rel + weights.w_sup * sup + weights.w_use * use
    return CritiqueScores(relevance=rel, support=sup, utility=use, seq=seq, total=total)
