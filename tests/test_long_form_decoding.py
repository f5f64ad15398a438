"""Segment-level beam search on a scripted backend whose scores, and so the best path, are known by hand.

Weights: only IsRel counts (w_rel=1), so a step's score is p([Relevant]) at its first position and a path's
score is the mean of those (the original: their product, deepest level only).
"""

from __future__ import annotations

import math

import pytest

from selfrag.backends.base import Generation
from selfrag.backends.scripted import ScriptedBackend, make_generation
from selfrag.decoding.long_form import (
    LongFormSettings,
    assemble_answer,
    beam_search,
    clean_segment,
    fix_spacing,
    split_segment,
)
from selfrag.prompts import format_evidence
from selfrag.scoring import Weights
from selfrag.tokens import ALL_TOKENS, ReflectionVocab

VOCAB = ReflectionVocab(ids={tok: 1000 + k for k, tok in enumerate(ALL_TOKENS)})
IDS = dict(VOCAB.ids)
A = {"id": "a", "title": "Alpha", "text": "Alpha text."}
B = {"id": "b", "title": "Beta", "text": "Beta text."}
P = "### Instruction:\nQ\n\n### Response:\n"
REL_ONLY = Weights(w_rel=1.0, w_sup=0.0, w_use=0.0)


def seg(text: str, p_rel: float, more: bool) -> Generation:
    """`[Relevant]text[Fully supported]` (+ `[Retrieval]` if the model asks for more) with p([Relevant]) = p_rel."""
    pieces = ["[Relevant]", text, "[Fully supported]"] + (["[Retrieval]", "next"] if more else ["[Utility:5]"])
    return make_generation(pieces, IDS, {0: {"[Relevant]": math.log(p_rel), "[Irrelevant]": math.log(1 - p_rel)}})


def ctx1(text: str) -> str:
    """The context after a first segment: the prompt plus the segment with its reflection tokens."""
    return P + f"[Relevant]{text}[Fully supported]"


def settings(**kw) -> LongFormSettings:
    return LongFormSettings(
        **{"mode": "always_retrieve", "ndocs": 2, "beam_width": 2, "max_depth": 3, "weights": REL_ONLY, **kw}
    )


TREE = {  # level 1: A asks for more (0.6), B finishes (0.9); level 2 under A: A (0.5) and B (0.8) finish
    P + format_evidence(A): seg("Alpha one.", 0.6, more=True),
    P + format_evidence(B): seg("Beta one.", 0.9, more=False),
    ctx1("Alpha one.") + format_evidence(A): seg("Alpha two.", 0.5, more=False),
    ctx1("Alpha one.") + format_evidence(B): seg("Beta two.", 0.8, more=False),
}


def test_finished_shorter_path_can_win_and_levels_are_batched():
    backend = ScriptedBackend(TREE)
    [result] = beam_search(backend, VOCAB, [P], [[A, B]], settings())
    # Means: B = 0.9; A->A = 0.55; A->B = 0.7. B finished at depth 1 and stays in the beam: it wins.
    assert [n.segment for n in result.path] == ["[Relevant]Beta one.[Fully supported][Utility:5]"]
    assert result.path[0].score == pytest.approx(0.9)
    scores = {n.pred.split("]")[1].split("[")[0]: n.score for n in result.tree[1:]}
    assert scores == pytest.approx({"Alpha one.": 0.6, "Beta one.": 0.9, "Alpha two.": 0.55, "Beta two.": 0.7})
    # One call per level: both passages at level 1, then only the path that asked for retrieval.
    assert backend.calls == [
        [P + format_evidence(A), P + format_evidence(B)],
        [ctx1("Alpha one.") + format_evidence(A), ctx1("Alpha one.") + format_evidence(B)],
    ]
    assert (result.answer, result.citations) == ("Beta one [1].", [B])


def test_compat_original_multiplies_and_reads_the_deepest_level_only():
    [result] = beam_search(ScriptedBackend(TREE), VOCAB, [P], [[A, B]], settings(compat="original"))
    # Products: A->B = 0.48 > A->A = 0.30; B (0.9) finished early and is never compared.
    assert [n.ctx["id"] for n in result.path] == ["a", "b"]
    assert result.path[-1].score == pytest.approx(0.48)
    # Citations by depth, each segment's last character dropped, as the original.
    assert (result.answer, result.citations) == ("Alpha one [1]. Beta two [2].", [A, B])


def test_beam_width_one_is_greedy_segment_by_segment():
    tree = {
        P + format_evidence(A): seg("Alpha one.", 0.9, more=True),
        P + format_evidence(B): seg("Beta one.", 0.6, more=False),
        ctx1("Alpha one.") + format_evidence(A): seg("Alpha two.", 0.7, more=False),
        ctx1("Alpha one.") + format_evidence(B): seg("Beta two.", 0.8, more=False),
    }
    backend = ScriptedBackend(tree)
    [result] = beam_search(backend, VOCAB, [P], [[A, B]], settings(beam_width=1))
    # Greedy: the best passage at each step: A (0.9), then B (0.8).
    assert [n.ctx["id"] for n in result.path] == ["a", "b"]
    assert result.path[-1].score == pytest.approx((0.9 + 0.8) / 2)
    assert len(backend.calls) == 2 and len(backend.calls[1]) == 2  # only A's path was expanded
    assert (result.answer, result.citations) == ("Alpha one [1]. Beta two [2].", [A, B])
    assert assemble_answer(result, settings(beam_width=1, cite=False)) == ("Alpha one. Beta two.", [])


def test_max_depth_limits_the_number_of_segments():
    backend = ScriptedBackend(TREE)
    [result] = beam_search(backend, VOCAB, [P], [[A, B]], settings(max_depth=2))
    assert len(backend.calls) == 1  # max_depth counts the root: one segment
    assert [n.ctx["id"] for n in result.path] == ["b"]


def test_ties_keep_the_first_passage():
    tree = {
        P + format_evidence(A): seg("Alpha.", 0.5, more=False),
        P + format_evidence(B): seg("Beta.", 0.5, more=False),
    }
    for compat in ("none", "original"):
        [result] = beam_search(ScriptedBackend(tree), VOCAB, [P], [[A, B]], settings(beam_width=1, compat=compat))
        assert result.path[0].ctx is A


def test_several_questions_share_each_levels_call():
    q2 = "### Instruction:\nQ2\n\n### Response:\n"
    tree = dict(TREE)
    tree[q2 + format_evidence(A)] = seg("Other.", 0.7, more=False)
    backend = ScriptedBackend(tree)
    r1, r2 = beam_search(backend, VOCAB, [P, q2], [[A, B], [A]], settings(ndocs=2))
    assert len(backend.calls) == 2 and len(backend.calls[0]) == 3
    assert [n.ctx["id"] for n in r2.path] == ["a"] and [n.ctx["id"] for n in r1.path] == ["b"]


def test_citations_reuse_numbers_and_drop_repeated_segments():
    tree = {
        P + format_evidence(A): seg("Alpha one.", 0.9, more=True),
        P + format_evidence(B): seg("Beta one.", 0.1, more=False),
        ctx1("Alpha one.") + format_evidence(A): seg("Alpha two.", 0.8, more=True),
        ctx1("Alpha one.") + format_evidence(B): seg("Alpha one.", 0.1, more=True),
    }
    ctx2 = ctx1("Alpha one.") + "[Relevant]Alpha two.[Fully supported]"
    tree[ctx2 + format_evidence(A)] = seg("Alpha one.", 0.1, more=False)
    tree[ctx2 + format_evidence(B)] = seg("Beta three", 0.9, more=False)
    [result] = beam_search(ScriptedBackend(tree), VOCAB, [P], [[A, B]], settings(beam_width=1, max_depth=4))
    assert [n.ctx["id"] for n in result.path] == ["a", "a", "b"]
    # The same passage keeps its number; a segment without final punctuation gets the citation appended.
    assert (result.answer, result.citations) == ("Alpha one [1]. Alpha two [1]. Beta three [2]", [A, B])


def test_live_retrieval_is_asked_with_the_answer_so_far():
    queries = []
    fresh = {"id": "f", "title": "Fresh", "text": "Fresh text."}

    def source(batch):
        queries.extend(batch)
        return [[A] if len(queries) == 1 else [fresh] for _ in batch]

    tree = {
        P + format_evidence(A): seg("Alpha one.", 0.9, more=True),
        ctx1("Alpha one.") + format_evidence(fresh): seg("New.", 0.8, more=False),
    }
    [result] = beam_search(ScriptedBackend(tree), VOCAB, [P], [[B]], settings(), passage_source=source)
    assert queries == [(0, ""), (0, "Alpha one.")]  # the answer so far, without reflection tokens
    assert [n.ctx["id"] for n in result.path] == ["a", "f"]


def test_retrieval_requests_come_from_token_ids_not_text():
    # The text shows "[Retrieval]" but no [Retrieval] id was generated: the segment is finished.
    gen = Generation(
        text="Paris.[Retrieval]",
        token_ids=[5, 6],
        cumulative_logprob=-1.0,
        step_logprobs=[dict.fromkeys(IDS.values(), -5.0)] * 2,
    )
    assert split_segment(gen, VOCAB, settings()) == ("Paris.[Retrieval]", False)
    gen = make_generation(["[Relevant]", "Paris.", "[Retrieval]", "more"], IDS)
    assert split_segment(gen, VOCAB, settings()) == ("[Relevant]Paris.", True)


def test_no_retrieval_token_becomes_a_retrieval_point_above_the_threshold():
    gen = make_generation(
        ["Paris.", "[No Retrieval]", "More."],
        IDS,
        {
            1: {
                "[Retrieval]": math.log(0.6),
                "[No Retrieval]": math.log(0.3),
                "[Continue to Use Evidence]": math.log(0.1),
            }
        },
    )
    assert split_segment(gen, VOCAB, settings(threshold=None)) == ("Paris.[No Retrieval]More.", False)
    assert split_segment(gen, VOCAB, settings(threshold=0.5)) == ("Paris.", True)  # 0.6/0.9 = 0.67 > 0.5
    assert split_segment(gen, VOCAB, settings(threshold=0.7)) == ("Paris.[No Retrieval]More.", False)
    # The original adds p(Continue): (0.6 + 0.1) / 0.9 = 0.78 > 0.7.
    assert split_segment(gen, VOCAB, settings(threshold=0.7, compat="original")) == ("Paris.", True)


def test_no_retrieval_mode_and_adaptive_root_decision():
    backend = ScriptedBackend(
        {P + "[No Retrieval]": make_generation(["Paris is big.", "[Utility:5]", "\n\nNoise"], IDS)}
    )
    [result] = beam_search(backend, VOCAB, [P], [[A]], settings(mode="no_retrieval"))
    assert backend.calls == [[P + "[No Retrieval]"]] and result.retrieve is False
    assert (result.answer, result.citations) == ("Paris is big.", [])
    first = make_generation(
        ["[Retrieval]", "x"], IDS, {0: {"[Retrieval]": math.log(0.3), "[No Retrieval]": math.log(0.7)}}
    )
    tree = {
        P: first,
        P + format_evidence(A): seg("Alpha.", 0.9, more=False),
        P + "[No Retrieval]": make_generation(["Plain."], IDS),
    }
    for threshold, retrieves in ((0.2, True), (0.4, False), (None, True)):
        [result] = beam_search(
            ScriptedBackend(tree), VOCAB, [P], [[A]], settings(mode="adaptive_retrieval", threshold=threshold)
        )
        assert result.retrieve is retrieves and result.retrieval_prob == pytest.approx(0.3)
    # The original never retrieves without a threshold.
    [result] = beam_search(
        ScriptedBackend(tree), VOCAB, [P], [[A]], settings(mode="adaptive_retrieval", compat="original")
    )
    assert result.retrieve is False


def test_text_helpers():
    assert fix_spacing("It is 3.5 m long.Next one") == "It is 3.5 m long. Next one"
    assert fix_spacing("It is 3.5 m long.Next", "original") == "It is 3. 5 m long. Next"
    assert clean_segment(" [Relevant]Paris  is\nbig.[Continue to Use Evidence]</s>") == "Paris is big."
    assert (
        clean_segment(" [Relevant]Paris.[Continue to Use Evidence]</s>", "original")
        == "Paris.[Continue to Use Evidence]"
    )
