"""Are the quickstart model's reflection tokens meaningful? Measured on held-out questions and instructions.

Held-out factual questions are about entities no training question mentioned (their passages are in the corpus);
held-out instructions use other numbers, words and names than the training ones. Measured:

- retrieval decision: p([Retrieval]) / (p([Retrieval]) + p([No Retrieval])) at the first position, for questions
  (should retrieve) and instructions (should not), with the decision at the paper's threshold 0.2 and at 0.5;
- relevance: p([Relevant]) vs p([Irrelevant]) right after the passage, for the entity's own passage (should be
  relevant) and for the best-ranked passage about another entity (should be irrelevant), and how often the own
  passage gets the higher p([Relevant]) of the two;
- answers: the full short-form loop (adaptive retrieval, threshold 0.2, top-3 passages, ranked by
  IsRel + IsSup + 0.5 IsUse), scored with `match`, and how often the chosen passage is the entity's own.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from selfrag.backends.base import GenParams
from selfrag.backends.hf import HFBackend
from selfrag.decoding.short_form import ShortFormSettings, run_batch
from selfrag.eval.metrics import match
from selfrag.prompts import format_evidence, format_prompt
from selfrag.quickstart import facts, world
from selfrag.scoring import Weights
from selfrag.tokens import IRRELEVANT, RELEVANT, ReflectionVocab

logger = logging.getLogger(__name__)

NDOCS = 3
THRESHOLD = 0.2
# the paper's short-form scoring: IsRel + IsSup + 0.5 IsUse (run_short_form.py --use_groundness --use_utility)
WEIGHTS = Weights(use_groundness=True, use_utility=True)


def _p_relevant(logprobs: dict[int, float], vocab: ReflectionVocab) -> float:
    rel, irr = math.exp(logprobs.get(vocab[RELEVANT], -1e9)), math.exp(logprobs.get(vocab[IRRELEVANT], -1e9))
    return rel / (rel + irr) if rel + irr > 0 else 0.5


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def evaluate(adapter_dir: str | Path = world.ADAPTER_DIR, retriever: Any = None, backend: Any = None) -> dict[str, Any]:
    """The report written to `adapter/eval.json`: a `summary` and the per-item records."""
    retriever = retriever or world.build_retriever()
    if backend is None:
        model, tokenizer = world.load_generator(adapter_dir)
        backend = HFBackend(model, tokenizer, max_batch_size=32)
    vocab = ReflectionVocab.from_tokenizer(backend.tokenizer)
    questions = facts.questions(held_out=True)
    instructions = facts.instructions(held_out=True)
    texts = [q.question for q in questions] + [i.instruction for i in instructions]
    prompts = [format_prompt(t) for t in texts]
    ctxs = retriever.search(texts, k=NDOCS)

    settings = ShortFormSettings(
        mode="adaptive_retrieval", threshold=THRESHOLD, ndocs=NDOCS, max_new_tokens=32, weights=WEIGHTS
    )
    results = run_batch(backend, vocab, prompts, ctxs, settings)

    # relevance probe: own passage vs the best-ranked passage about another entity, one token each
    own = [next(c for c in retriever.search([q.question], k=20)[0] if c["title"] == q.title) for q in questions]
    other = [next(c for c in found if c["title"] != q.title) for q, found in zip(questions, ctxs)]
    probes = [format_prompt(q.question) + format_evidence(c) for q, c in zip(questions, own)]
    probes += [format_prompt(q.question) + format_evidence(c) for q, c in zip(questions, other)]
    gens = backend.generate(probes, GenParams(max_tokens=1, watch_token_ids=vocab.all_ids))
    p_rel = [_p_relevant(g.step_logprobs[0], vocab) for g in gens]
    p_rel_own, p_rel_other = p_rel[: len(questions)], p_rel[len(questions) :]

    records = []
    for i, (text, result) in enumerate(zip(texts, results)):
        is_question = i < len(questions)
        record = {
            "input": text,
            "kind": "question" if is_question else "instruction",
            "pred": result.pred,
            "p_retrieval": result.retrieval_prob,
            "retrieved": result.retrieve,
        }
        if is_question:
            q = questions[i]
            best = max(
                (v for k, v in result.results.items() if k.startswith("retrieval_")),
                key=lambda v: v["score"],
                default=None,
            )
            record.update(
                answer=q.answer,
                match=match(result.pred, [q.answer]),
                chosen_title=best["ctx"]["title"] if best else None,
                gold_title=q.title,
                p_relevant_own=p_rel_own[i],
                p_relevant_other=p_rel_other[i],
                other_title=other[i]["title"],
            )
        records.append(record)

    qs = [r for r in records if r["kind"] == "question"]
    ins = [r for r in records if r["kind"] == "instruction"]
    summary = {
        "held_out_questions": len(qs),
        "held_out_instructions": len(ins),
        "retrieve_rate_questions@0.2": _mean([float(r["p_retrieval"] > 0.2) for r in qs]),
        "retrieve_rate_instructions@0.2": _mean([float(r["p_retrieval"] > 0.2) for r in ins]),
        "retrieve_rate_questions@0.5": _mean([float(r["p_retrieval"] > 0.5) for r in qs]),
        "retrieve_rate_instructions@0.5": _mean([float(r["p_retrieval"] > 0.5) for r in ins]),
        "mean_p_retrieval_questions": _mean([r["p_retrieval"] for r in qs]),
        "mean_p_retrieval_instructions": _mean([r["p_retrieval"] for r in ins]),
        "own_passage_judged_relevant": _mean([float(p > 0.5) for p in p_rel_own]),
        "other_passage_judged_irrelevant": _mean([float(p < 0.5) for p in p_rel_other]),
        "own_passage_more_relevant_than_other": _mean([float(a > b) for a, b in zip(p_rel_own, p_rel_other)]),
        "answer_match": _mean([r["match"] for r in qs]),
        "chosen_passage_is_own": _mean([float(r["chosen_title"] == r["gold_title"]) for r in qs if r["retrieved"]]),
    }
    return {"summary": summary, "settings": {"ndocs": NDOCS, "threshold": THRESHOLD}, "records": records}
