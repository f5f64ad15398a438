"""The short-form algorithm on a scripted backend whose log-probs, and so every score, are known by hand."""

from __future__ import annotations

import math

import pytest

from selfrag.backends.base import Generation
from selfrag.backends.scripted import ScriptedBackend, make_generation
from selfrag.decoding.short_form import ShortFormSettings, clean_prediction, postprocess_answer, run_batch
from selfrag.prompts import format_evidence
from selfrag.scoring import Weights
from selfrag.tokens import ALL_TOKENS, ReflectionVocab

VOCAB = ReflectionVocab(ids={tok: 1000 + k for k, tok in enumerate(ALL_TOKENS)})
IDS = dict(VOCAB.ids)
CTXS = [
    {"id": "1", "title": "Paris", "text": "Paris is the capital of France."},
    {"id": "2", "title": "London", "text": "London is the capital of England."},
    {"id": "3", "title": "Berlin", "text": "Berlin is the capital of Germany."},
]
P = "### Instruction:\nWhat is the capital of France?\n\n### Response:\n"
ln = math.log


def first_pass(p_ret: float, p_noret: float, starts_with: str = "[Retrieval]") -> Generation:
    return make_generation([starts_with, "Paris"], IDS, {0: {"[Retrieval]": ln(p_ret), "[No Retrieval]": ln(p_noret)}})


def answer(text: str, p_rel: float, sup: tuple[float, float, float], use: dict[int, float], cum: float = -2.0):
    """`[Relevant]text[IsSup][Utility:k]` with given IsRel / IsSup / IsUse distributions."""
    sup_tok = ("[Fully supported]", "[Partially supported]", "[No support / Contradictory]")[sup.index(max(sup))]
    use_tok = f"[Utility:{max(use, key=use.get)}]"
    return make_generation(
        ["[Relevant]", text, sup_tok, use_tok],
        IDS,
        {
            0: {"[Relevant]": ln(p_rel), "[Irrelevant]": ln(1 - p_rel)},
            2: dict(zip(("[Fully supported]", "[Partially supported]", "[No support / Contradictory]"), map(ln, sup))),
            3: {f"[Utility:{k}]": ln(p) for k, p in use.items()},
        },
        cumulative_logprob=cum,
    )


def settings(**kw) -> ShortFormSettings:
    weights = kw.pop("weights", Weights(use_groundness=True, use_utility=True, use_seqscore=True))
    return ShortFormSettings(weights=weights, max_new_tokens=20, **kw)


def expected_total(p_rel, sup, use, cum, n_tokens=4, w=(1.0, 1.0, 0.5)):
    floor = math.exp(-30.0)  # make_generation gives unlisted reflection tokens log-prob -30
    weights = (-1.0, -0.5, 0.0, 0.5, 1.0)
    use_full = [use.get(k, floor) for k in range(1, 6)]
    utility = sum(wk * p for wk, p in zip(weights, use_full)) / sum(use_full)
    support = (sup[0] + 0.5 * sup[1]) / sum(sup)
    return math.exp(cum / n_tokens) + w[0] * p_rel + w[1] * support + w[2] * utility


def test_adaptive_retrieval_scores_and_batches_all_items_together():
    q2 = "### Instruction:\nWho wrote Hamlet?\n\n### Response:\n"
    script = {
        P: first_pass(0.9, 0.1),
        q2: first_pass(0.05, 0.95, starts_with="[No Retrieval]"),
        P + format_evidence(CTXS[0]): answer("Paris", 0.8, (0.7, 0.2, 0.1), {5: 0.6, 4: 0.4}),
        P + format_evidence(CTXS[1]): answer("London", 0.3, (0.1, 0.2, 0.7), {1: 0.9, 2: 0.1}),
        q2 + "[No Retrieval]": make_generation(["Shakespeare", "[Utility:5]"], IDS),
    }
    backend = ScriptedBackend(script)
    out = run_batch(backend, VOCAB, [P, q2], [CTXS[:2], CTXS[:2]], settings(threshold=0.2, ndocs=2))

    # Two backend calls for the whole batch: first pass, then every passage and every no-retrieval prompt.
    assert backend.calls == [
        [P, q2],
        [P + format_evidence(CTXS[0]), P + format_evidence(CTXS[1]), q2 + "[No Retrieval]"],
    ]
    a, b = out
    assert a.retrieve is True and a.retrieval_prob == pytest.approx(0.9)
    assert a.results["retrieval_0"]["score"] == pytest.approx(
        expected_total(0.8, (0.7, 0.2, 0.1), {5: 0.6, 4: 0.4}, -2.0)
    )
    assert a.results["retrieval_1"]["score"] == pytest.approx(
        expected_total(0.3, (0.1, 0.2, 0.7), {1: 0.9, 2: 0.1}, -2.0)
    )
    assert a.results["retrieval_0"]["ctx"] == CTXS[0]
    assert a.results["no_retrieval"] == "[Retrieval]Paris"
    assert a.pred == "Paris"
    assert b.retrieve is False and b.retrieval_prob == pytest.approx(0.05)
    assert b.pred == "Shakespeare" and b.results == {"no_retrieval": "[No Retrieval]Paris"}


@pytest.mark.parametrize(("threshold", "expected"), [(0.25, True), (0.35, False)])
def test_threshold_on_both_sides(threshold, expected):
    script = {P: first_pass(0.3, 0.7), P + "[No Retrieval]": make_generation(["Paris"], IDS)}
    script[P + format_evidence(CTXS[0])] = answer("Paris", 0.8, (1, 1, 1), {5: 1.0})
    out = run_batch(ScriptedBackend(script), VOCAB, [P], [CTXS[:1]], settings(threshold=threshold, ndocs=1))
    assert out[0].retrieve is expected
    assert out[0].retrieval_prob == pytest.approx(0.3)


def test_compat_original_uses_the_inverted_log_prob_ratio():
    # p(Ret) = 0.9: the paper's rule retrieves at threshold 0.2, the original's log-prob ratio (0.044) does not.
    script = {P: first_pass(0.9, 0.1), P + "[No Retrieval]": make_generation(["Paris"], IDS)}
    script[P + format_evidence(CTXS[0])] = answer("Paris", 0.8, (1, 1, 1), {5: 1.0})
    ratio = ln(0.9) / (ln(0.9) + ln(0.1))
    assert ratio == pytest.approx(0.0437, abs=1e-4)
    fixed = run_batch(ScriptedBackend(script), VOCAB, [P], [CTXS[:1]], settings(threshold=0.2, ndocs=1))
    compat = run_batch(
        ScriptedBackend(script), VOCAB, [P], [CTXS[:1]], settings(threshold=0.2, ndocs=1, compat="original")
    )
    assert fixed[0].retrieve is True
    assert compat[0].retrieve is False
    assert compat[0].original_ratio == pytest.approx(ratio)


def test_no_threshold_follows_the_models_own_choice_from_token_ids():
    retrieve = {
        P: first_pass(0.4, 0.6, starts_with="[Retrieval]"),
        P + format_evidence(CTXS[0]): answer("Paris", 0.8, (1, 1, 1), {5: 1.0}),
    }
    no = {P: first_pass(0.6, 0.4, starts_with="[No Retrieval]"), P + "[No Retrieval]": make_generation(["Paris"], IDS)}
    # Decided from ids even though p(Ret) says otherwise: the greedy token is what the model chose.
    assert run_batch(ScriptedBackend(retrieve), VOCAB, [P], [CTXS[:1]], settings(ndocs=1))[0].retrieve is True
    assert run_batch(ScriptedBackend(no), VOCAB, [P], [CTXS[:1]], settings(ndocs=1))[0].retrieve is False


def test_no_retrieval_mode_makes_one_call_and_postprocesses():
    backend = ScriptedBackend({P + "[No Retrieval]": make_generation(["Paris", "[Utility:4]", "\n"], IDS)})
    out = run_batch(backend, VOCAB, [P], [[]], settings(mode="no_retrieval"))
    assert backend.calls == [[P + "[No Retrieval]"]]
    assert out[0].pred == "Paris" and out[0].retrieve is False and out[0].retrieval_prob is None


def test_always_retrieve_skips_the_first_pass_and_works_with_one_passage():
    backend = ScriptedBackend({P + format_evidence(CTXS[0]): answer("Paris", 0.8, (1, 1, 1), {5: 1.0})})
    out = run_batch(backend, VOCAB, [P], [CTXS], settings(mode="always_retrieve", ndocs=1))
    assert backend.calls == [[P + format_evidence(CTXS[0])]]  # ndocs=1 crashed the original
    assert out[0].pred == "Paris" and list(out[0].results) == ["retrieval_0"]


def test_closed_task_sums_scores_per_answer():
    # "true" has the single best passage (score 0.9), but two passages saying "false" sum to 1.1.
    script = {
        P + format_evidence(CTXS[0]): make_generation(
            ["[Relevant]", "true"], IDS, {0: {"[Relevant]": ln(0.9), "[Irrelevant]": ln(0.1)}}
        ),
        P + format_evidence(CTXS[1]): make_generation(
            ["[Relevant]", "false"], IDS, {0: {"[Relevant]": ln(0.6), "[Irrelevant]": ln(0.4)}}
        ),
        P + format_evidence(CTXS[2]): make_generation(
            ["[Relevant]", "false"], IDS, {0: {"[Relevant]": ln(0.5), "[Irrelevant]": ln(0.5)}}
        ),
    }
    closed = settings(mode="always_retrieve", ndocs=3, closed=True, weights=Weights())
    open_ = settings(mode="always_retrieve", ndocs=3, closed=False, weights=Weights())
    assert run_batch(ScriptedBackend(script), VOCAB, [P], [CTXS], closed)[0].pred == "false"
    assert run_batch(ScriptedBackend(script), VOCAB, [P], [CTXS], open_)[0].pred == "true"


def test_ties_go_to_the_first_passage_and_first_answer():
    same = {0: {"[Relevant]": ln(0.5), "[Irrelevant]": ln(0.5)}}
    script = {
        P + format_evidence(CTXS[0]): make_generation(["[Relevant]", "A"], IDS, same),
        P + format_evidence(CTXS[1]): make_generation(["[Relevant]", "B"], IDS, same),
    }
    for closed in (False, True):
        s = settings(mode="always_retrieve", ndocs=2, closed=closed, weights=Weights())
        assert run_batch(ScriptedBackend(script), VOCAB, [P], [CTXS[:2]], s)[0].pred == "A"


def test_open_answer_compat_returns_text_without_special_tokens_but_keeps_newlines():
    gen = make_generation(
        ["[Relevant]", "Paris", "\n", "is it", "[Continue to Use Evidence]"], IDS, {0: {"[Relevant]": 0.0}}
    )
    backend = ScriptedBackend({P + format_evidence(CTXS[0]): gen})
    base = settings(mode="always_retrieve", ndocs=1, weights=Weights())
    compat = settings(mode="always_retrieve", ndocs=1, weights=Weights(), compat="original")
    assert run_batch(backend, VOCAB, [P], [CTXS], base)[0].pred == "Paris is it"
    assert run_batch(backend, VOCAB, [P], [CTXS], compat)[0].pred == "Paris\nis it"


def test_postprocess_and_clean_prediction():
    text = "[Relevant]Paris\nFrance[Continue to Use Evidence]</s>"
    assert postprocess_answer(text) == "Paris France"
    # The original removes newlines outright and keeps [Continue to Use Evidence].
    assert postprocess_answer(text, "original") == "ParisFrance[Continue to Use Evidence]"
    assert clean_prediction("") == ""  # IndexError in the original
    assert clean_prediction("#Paris") == "Paris"
    assert clean_prediction(": Paris") == "Paris"
    assert clean_prediction(": Paris", "original") == " Paris"
