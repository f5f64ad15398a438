"""An answer whose cited passage the model judged irrelevant or unsupported is shown as such: the labels of
selfrag.grounding, the server's `relevant` / `support` / `grounded` fields (short and long form, on a scripted
backend whose reflection tokens are set by hand), and the quickstart's printout.

    python -m pytest -q tests/test_grounding.py
"""

from __future__ import annotations

import math

import pytest

from selfrag.backends.scripted import ScriptedBackend, make_generation
from selfrag.decoding.config import DecodingConfig
from selfrag.grounding import describe, grounded, judgement, support_label, weakest
from selfrag.prompts import format_evidence, format_prompt, no_retrieval_prompt
from selfrag.quickstart import run
from selfrag.server import RequestOptions, SelfRagEngine
from selfrag.tokens import ALL_TOKENS, ReflectionVocab

VOCAB = ReflectionVocab(ids={tok: 1000 + k for k, tok in enumerate(ALL_TOKENS)})
IDS = dict(VOCAB.ids)
PAPER = dict(use_groundness=True, use_utility=True)  # IsRel + IsSup + 0.5 IsUse, as the quickstart


# ------------------------------------------------------------------------------------------------------ labels


def test_support_is_the_first_issup_token_generated():
    assert support_label("[Relevant]Oslo.[Fully supported][Utility:5]") == "full"
    assert support_label("[Relevant]Oslo.[Partially supported][Utility:4]") == "partial"
    assert support_label("[Relevant]Rome.[No support / Contradictory][Utility:1]") == "none"
    assert support_label("[Irrelevant]Hamilton wrote Hamlet.[Utility:5]") is None
    assert support_label("a[Partially supported]b[Fully supported]") == "partial"


def test_relevance_above_one_half_is_relevant_and_only_full_support_is_grounded():
    assert judgement("[Relevant]Oslo.[Fully supported]", 0.99) == {"relevant": True, "support": "full"}
    assert judgement("[Irrelevant]Oslo.[Fully supported]", 0.5) == {"relevant": False, "support": "full"}
    assert [grounded({"relevant": r, "support": s}) for r, s in [(True, "full"), (False, "full")]] == [True, False]
    assert [grounded({"relevant": True, "support": s}) for s in ("partial", "none", None)] == [False] * 3


def test_a_passage_cited_twice_keeps_its_weakest_judgement():
    full, partial = {"relevant": True, "support": "full"}, {"relevant": True, "support": "partial"}
    assert weakest([full, partial]) == partial
    assert weakest([full, {"relevant": False, "support": "none"}]) == {"relevant": False, "support": "none"}
    assert weakest([{"relevant": True, "support": None}, full]) == {"relevant": True, "support": None}
    assert describe({"relevant": False, "support": None}) == "[Irrelevant], no IsSup token"
    assert describe({"relevant": True, "support": "none"}) == "[Relevant], [No support / Contradictory]"


# ------------------------------------------------------------------------------------------------------ server


class WordTokenizer:
    """What the engine asks of a tokenizer when the vocabulary is given: token counts (words here) and eos."""

    eos_token_id = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": text.split()}


def gen(pieces: list[str], p_rel: float | None = None) -> object:
    """A completion of one token per piece; p([Relevant]) at position 0 and the other reflection tokens certain."""
    logprobs = {t: {p: 0.0} for t, p in enumerate(pieces) if p in IDS}
    if p_rel is not None:
        logprobs[0] = {"[Relevant]": math.log(p_rel), "[Irrelevant]": math.log(1 - p_rel)}
    return make_generation(pieces, IDS, logprobs)


def engine_for(script: dict) -> SelfRagEngine:
    backend = ScriptedBackend(script, tokenizer=WordTokenizer())
    return SelfRagEngine(backend, "scripted", vocab=VOCAB)


MOROCCO = {"id": "m", "title": "Morocco", "text": "Morocco is a country in Africa. Its capital city is Rabat."}
DENMARK = {"id": "d", "title": "Denmark", "text": "Denmark is a country in Europe. Its capital city is Copenhagen."}
NORWAY = {"id": "n", "title": "Norway", "text": "Norway is a country in Europe. Its capital city is Oslo."}
HAMLET, OSLO = format_prompt("Who wrote Hamlet?"), format_prompt("What is the capital of Norway?")


def short(question: str, ctxs: list[dict], mode: str = "always_retrieve") -> RequestOptions:
    decoding = DecodingConfig(max_new_tokens=8, mode=mode, ndocs=max(len(ctxs), 1), **PAPER)
    return RequestOptions(instruction=question, decoding=decoding, ctxs=tuple(ctxs) or None)


def test_short_form_answer_from_an_irrelevant_passage_is_not_grounded():
    script = {  # no passage is about Hamlet; the best-ranked answer still cites Morocco (0.1 + 0.5 > 0.02 + 0.5)
        HAMLET + format_evidence(MOROCCO): gen(["[Irrelevant]", "Hamilton wrote Hamlet.", "[Utility:5]"], 0.1),
        HAMLET + format_evidence(DENMARK): gen(["[Irrelevant]", "Hamlet.", "[Utility:5]"], 0.02),
    }
    [answer] = engine_for(script).run([short("Who wrote Hamlet?", [MOROCCO, DENMARK])])
    meta = answer.selfrag
    assert answer.text == "Hamilton wrote Hamlet."
    assert [(c["chosen"], c["relevant"], c["support"]) for c in meta["candidates"]] == [
        (True, False, None),
        (False, False, None),
    ]
    assert meta["citations"] == [{"passage": 0, "id": "m", "relevant": False, "support": None}]
    assert meta["grounded"] is False
    # the fields that existed before are unchanged, in their order, with the new ones after them
    assert list(meta) == [
        "mode",
        "long_form",
        "retrieve",
        "retrieval_prob",
        "threshold",
        "passages",
        "raw",
        "candidates",
        "citations",
        "no_retrieval",
        "grounded",
    ]
    assert list(meta["candidates"][0]) == ["passage", "text", "critique", "chosen", "relevant", "support"]


@pytest.mark.parametrize(
    ("sup_token", "support", "is_grounded"),
    [("[Fully supported]", "full", True), ("[Partially supported]", "partial", False)]
    + [("[No support / Contradictory]", "none", False)],
)
def test_short_form_grounded_only_when_the_cited_passage_fully_supports(sup_token, support, is_grounded):
    script = {
        OSLO + format_evidence(NORWAY): gen(["[Relevant]", "Oslo.", sup_token, "[Utility:5]"], 0.99),
        OSLO + format_evidence(DENMARK): gen(["[Irrelevant]", "Copenhagen.", "[Utility:5]"], 0.01),
    }
    [answer] = engine_for(script).run([short("What is the capital of Norway?", [NORWAY, DENMARK])])
    meta = answer.selfrag
    assert answer.text == "Oslo."
    assert [(c["relevant"], c["support"]) for c in meta["candidates"]] == [(True, support), (False, None)]
    assert meta["citations"] == [{"passage": 0, "id": "n", "relevant": True, "support": support}]
    assert meta["grounded"] is is_grounded


def test_an_answer_without_retrieval_is_neither_grounded_nor_ungrounded():
    script = {no_retrieval_prompt(format_prompt("What is 21 plus 34?")): gen(["55", "[Utility:5]"])}
    [answer] = engine_for(script).run([short("What is 21 plus 34?", [], mode="no_retrieval")])
    assert answer.text == "55"
    assert (answer.selfrag["citations"], answer.selfrag["candidates"], answer.selfrag["grounded"]) == ([], [], None)


def test_long_form_citations_carry_the_weakest_judgement_of_their_segments():
    alpha = {"id": "a", "title": "Alpha", "text": "Alpha text."}
    beta = {"id": "b", "title": "Beta", "text": "Beta text."}
    prompt = format_prompt("Tell me about Alpha.")
    after_one = prompt + "[Relevant]Alpha one.[Fully supported]"
    script = {  # the best path: Alpha (fully supported), then Alpha again (partially supported)
        prompt + format_evidence(alpha): gen(["[Relevant]", "Alpha one.", "[Fully supported]", "[Retrieval]"], 0.9),
        prompt + format_evidence(beta): gen(["[Irrelevant]", "Beta one.", "[Utility:2]"], 0.1),
        after_one + format_evidence(alpha): gen(["[Relevant]", " Alpha two.", "[Partially supported]"], 0.8),
        after_one + format_evidence(beta): gen(["[Irrelevant]", " Beta two.", "[Utility:1]"], 0.2),
    }
    opts = RequestOptions(
        instruction="Tell me about Alpha.",
        decoding=DecodingConfig(max_new_tokens=8, mode="always_retrieve", ndocs=2, w_sup=0.0, w_use=0.0, max_depth=3),
        long_form=True,
        ctxs=(alpha, beta),
    )
    [answer] = engine_for(script).run([opts])
    meta = answer.selfrag
    assert answer.text == "Alpha one [1]. Alpha two [1]."
    assert [(s["passage"], s["relevant"], s["support"]) for s in meta["segments"]] == [
        (0, True, "full"),
        (0, True, "partial"),
    ]
    assert meta["citations"] == [{"marker": "[1]", "passage": 0, "id": "a", "relevant": True, "support": "partial"}]
    assert meta["grounded"] is False


# ------------------------------------------------------------------------------------------------------ quickstart


def record(output: str, relevance: float) -> dict:
    passage = {"id": "39", "title": "Morocco", "text": "Morocco is a country in Africa."}
    scores = {"relevance": relevance, "support": 0.0, "utility": 1.0, "seq": 0.0, "total": relevance + 0.5}
    return {
        "question": "Who wrote Hamlet?",
        "retrieve": True,
        "p_retrieval": 0.759,
        "answer": "Hamilton wrote Hamlet.",
        "citation": passage,
        "candidates": [{"passage": passage, "output": output, "scores": scores}],
        "no_retrieval_output": None,
    }


def test_quickstart_marks_an_answer_its_passage_does_not_back():
    lines = run.render(record("[Irrelevant]Hamilton wrote Hamlet.[Utility:5]", 0.1)).splitlines()
    assert lines[-3:] == [
        "A: Hamilton wrote Hamlet. [1]  (unsupported)",
        "   [1] Morocco: Morocco is a country in Africa.",
        "   ! passage [1] was judged [Irrelevant], no IsSup token: the corpus does not back this answer",
    ]
    partly = run.render(record("[Relevant]Hamilton wrote Hamlet.[Partially supported][Utility:5]", 0.9))
    assert partly.splitlines()[-3:] == [
        "A: Hamilton wrote Hamlet. [1]  (partly supported)",
        "   [1] Morocco: Morocco is a country in Africa.",
        "   ! passage [1] was judged [Relevant], [Partially supported]: the corpus backs this answer only in part",
    ]
    full = run.render(record("[Relevant]Hamilton wrote Hamlet.[Fully supported][Utility:5]", 0.9))
    assert full.splitlines()[-2:] == [
        "A: Hamilton wrote Hamlet. [1]",
        "   [1] Morocco: Morocco is a country in Africa.",
    ]
