"""Short-form Self-RAG decoding: decide whether to retrieve, answer with each passage, rank by critique scores.

For a batch of questions (paper §3.3; original run_short_form.py:51-200):

1. First pass (adaptive mode): generate from the bare prompt and read p([Retrieval]) at the first position.
2. Decide per question: always / never / `p(Ret) / (p(Ret) + p(NoRet)) > threshold`, or, without a threshold,
   whether the model itself generated `[Retrieval]`.
3. Second pass, one backend call for the whole batch: for retrieving questions one prompt per passage
   (`prompt + [Retrieval]<paragraph>title\\ntext</paragraph>`), for the others `prompt + [No Retrieval]`.
4. Score each passage's completion with IsRel / IsSup / IsUse (+ sequence score) and keep the best; for
   closed-set tasks (fever, arc_c) scores of passages giving the same answer are summed first.

`compat="original"` reproduces the original's quirks where reported numbers depend on them (docs/upstream_quirks.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from selfrag.backends.base import Generation, GenerationBackend, GenParams
from selfrag.prompts import format_evidence, no_retrieval_prompt
from selfrag.scoring import (
    CritiqueScores,
    Judgement,
    Weights,
    judgements,
    original_retrieve_ratio,
    retrieve_prob,
    score_generation,
)
from selfrag.tokens import ALL_TOKENS, ORIGINAL_CONTROL_TOKENS, RETRIEVAL, ReflectionVocab, strip_reflection_tokens

Mode = Literal["adaptive_retrieval", "no_retrieval", "always_retrieve"]
Compat = Literal["none", "original"]

_END_STRINGS = ("</s>", "<|endoftext|>")


@dataclass(frozen=True)
class ShortFormSettings:
    """Settings of the decoding algorithm (the CLI's `ShortFormConfig` resolves its flags into these).

    `add_special_tokens=False` for prompts built with a chat template, which hold their own BOS (`GenParams`).
    """

    mode: Mode = "adaptive_retrieval"
    threshold: float | None = None
    ndocs: int = 10
    max_new_tokens: int = 15
    closed: bool = False
    weights: Weights = field(default_factory=Weights)
    compat: Compat = "none"
    add_special_tokens: bool = True


@dataclass
class Candidate:
    """The answer written with one passage, and how the model judged it.

    `text` is the completion with its reflection tokens; `answer` the same text cleaned as a prediction; `rel` /
    `sup` / `use` the IsRel / IsSup / IsUse tokens the model wrote with their probabilities; `scores` the parts of
    the passage's score before weights, and their weighted sum `scores.total`, which ranks the candidates.
    """

    passage: Mapping[str, Any]
    text: str
    answer: str
    rel: Judgement
    sup: Judgement
    use: Judgement
    scores: CritiqueScores
    generation: Generation = field(repr=False, compare=False)


@dataclass
class ItemResult:
    """Outcome for one question: the retrieval decision, one candidate per passage tried, and the answer.

    `chosen` indexes the winning candidate (None when nothing was retrieved); `first` is the first pass's
    generation (adaptive mode), `no_retrieval` the generation after `[No Retrieval]` when the question did not
    retrieve. `results` is the original's view of the same: `no_retrieval` (text of the answer without passages) and
    `retrieval_{i}: {pred, score, ctx, critique}` for each passage tried.
    """

    pred: str
    retrieve: bool
    retrieval_prob: float | None = None
    original_ratio: float | None = None
    candidates: list[Candidate] = field(default_factory=list)
    chosen: int | None = None
    first: Generation | None = field(default=None, repr=False)
    no_retrieval: Generation | None = field(default=None, repr=False)

    @property
    def results(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.first is not None or self.no_retrieval is not None:
            out["no_retrieval"] = (self.first or self.no_retrieval).text  # type: ignore[union-attr]
        for i, c in enumerate(self.candidates):
            out[f"retrieval_{i}"] = {
                "pred": c.text,
                "score": c.scores.total,
                "ctx": dict(c.passage),
                "critique": c.scores.to_dict(),
            }
        return out

    @property
    def chosen_generation(self) -> Generation:
        """The generation the answer was read from."""
        if self.chosen is not None:
            return self.candidates[self.chosen].generation
        return self.no_retrieval  # type: ignore[return-value]

    def to_record(self) -> dict[str, Any]:
        """The record a run keeps per item (its partial file's line, without the index and prompt)."""
        return {
            "pred": self.pred,
            "results": self.results,
            "retrieve": self.retrieve,
            "retrieval_prob": self.retrieval_prob,
            "original_ratio": self.original_ratio,
        }


def postprocess_answer(text: str, compat: Compat = "none") -> str:
    """Remove reflection and end-of-text strings from an answer.

    Default: all 15 reflection tokens are removed and whitespace is collapsed. `compat="original"` does exactly
    what the original's `postprocess_answer_option_conditioned` does: remove the 14 control strings (not
    `[Continue to Use Evidence]`), `</s>`, every newline and `<|endoftext|>`, and nothing else.
    """
    if compat == "original":
        text = strip_reflection_tokens(text, ORIGINAL_CONTROL_TOKENS)
        return text.replace("</s>", "").replace("\n", "").replace("<|endoftext|>", "")
    text = strip_reflection_tokens(text, ALL_TOKENS)
    for end in _END_STRINGS:
        text = text.replace(end, "")
    return " ".join(text.split())


def clean_prediction(pred: str, compat: Compat = "none") -> str:
    """Drop one leading `#` or `:` (original run_short_form.py:331, without its IndexError on empty text)."""
    if pred[:1] in {"#", ":"}:
        pred = pred[1:]
    return pred if compat == "original" else pred.strip()


def decide_retrieval(
    first: Generation | None, vocab: ReflectionVocab, settings: ShortFormSettings
) -> tuple[bool, float | None, float | None]:
    """(retrieve?, p(Ret)/(p(Ret)+p(NoRet)) at position 0, the original's log-prob ratio)."""
    if settings.mode == "always_retrieve":
        return True, None, None
    if settings.mode == "no_retrieval" or first is None:
        return False, None, None
    p_ret = retrieve_prob(first.step_logprobs[0], vocab)
    ratio = original_retrieve_ratio(first.step_logprobs[0], vocab)
    if settings.threshold is None:
        # The model's own greedy choice; decided from ids, since decoded text may have special tokens stripped.
        return vocab[RETRIEVAL] in first.token_ids, p_ret, ratio
    value = ratio if settings.compat == "original" else p_ret
    return value > settings.threshold, p_ret, ratio


def rerank(
    generations: Sequence[Generation],
    ctxs: Sequence[Mapping[str, Any]],
    vocab: ReflectionVocab,
    settings: ShortFormSettings,
) -> tuple[str, list[Candidate], int]:
    """Score each passage's completion and pick the answer (original run_short_form.py:177-200).

    Returns the answer, the candidates and the index of the chosen one: the best score (the first passage wins
    ties); for closed-set tasks the answer whose candidates' scores sum highest, and its first candidate.
    """
    candidates = []
    answer_scores: dict[str, float] = {}
    best_i, best_score = 0, float("-inf")
    for i, (gen, ctx) in enumerate(zip(generations, ctxs)):
        scores = score_generation(gen, vocab, settings.weights)
        rel, sup, use = judgements(gen, vocab)
        answer = postprocess_answer(gen.text, settings.compat)
        candidates.append(Candidate(ctx, gen.text, answer, rel, sup, use, scores, gen))
        if settings.closed:
            answer_scores[answer] = answer_scores.get(answer, 0.0) + scores.total
        if scores.total > best_score:  # strict: the first passage wins ties
            best_i, best_score = i, scores.total
    if settings.closed:  # max() keeps the first-inserted answer among equal sums, as the original's stable sort
        winner = max(answer_scores, key=answer_scores.__getitem__)
        return winner, candidates, next(i for i, c in enumerate(candidates) if c.answer == winner)
    if settings.compat == "original":
        # The original returns vllm's text, from which skip_special_tokens=True already removed the tokens.
        return strip_reflection_tokens(generations[best_i].text), candidates, best_i
    return candidates[best_i].answer, candidates, best_i


def run_batch(
    backend: GenerationBackend,
    vocab: ReflectionVocab,
    prompts: Sequence[str],
    evidences: Sequence[Sequence[Mapping[str, Any]]],
    settings: ShortFormSettings,
) -> list[ItemResult]:
    """Answer a batch of questions with at most two backend calls (first pass; passages and no-retrieval)."""
    params = GenParams(
        max_tokens=settings.max_new_tokens,
        watch_token_ids=vocab.all_ids,
        add_special_tokens=settings.add_special_tokens,
    )
    firsts: list[Generation | None] = [None] * len(prompts)
    if settings.mode == "adaptive_retrieval":
        firsts = list(backend.generate(list(prompts), params))

    decisions = [decide_retrieval(first, vocab, settings) for first in firsts]

    # Second pass: every passage of every retrieving question and every non-retrieving prompt, in one call.
    second_prompts: list[str] = []
    spans: list[tuple[int, int]] = []
    for prompt, ctxs, (retrieve, _, _) in zip(prompts, evidences, decisions):
        start = len(second_prompts)
        if retrieve:
            second_prompts.extend(prompt + format_evidence(ctx) for ctx in ctxs[: settings.ndocs])
        else:
            second_prompts.append(no_retrieval_prompt(prompt))
        spans.append((start, len(second_prompts)))
    seconds = backend.generate(second_prompts, params) if second_prompts else []

    out = []
    for first, ctxs, (retrieve, p_ret, ratio), (start, end) in zip(firsts, evidences, decisions, spans):
        gens = seconds[start:end]
        item = ItemResult(pred="", retrieve=retrieve, retrieval_prob=p_ret, original_ratio=ratio, first=first)
        if retrieve:
            pred, item.candidates, item.chosen = rerank(gens, ctxs[: settings.ndocs], vocab, settings)
        else:
            pred, item.no_retrieval = postprocess_answer(gens[0].text, settings.compat), gens[0]
        item.pred = clean_prediction(pred, settings.compat)
        out.append(item)
    return out
