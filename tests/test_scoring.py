"""selfrag/scoring.py: critique scores from reflection-token log-probs (spec §4.3, §13.4-8).

Every expected value is computed by hand here from the designed log-probs with math.exp / math.log.
"""

from __future__ import annotations

import math

import pytest

from selfrag.backends.base import Generation
from selfrag.backends.scripted import make_generation
from selfrag.scoring import (
    UTILITY_WEIGHTS,
    CritiqueScores,
    Weights,
    first_position,
    group_probs,
    original_retrieve_ratio,
    relevance,
    retrieve_prob,
    score_generation,
    support,
    utility,
)
from selfrag.tokens import ALL_TOKENS, ISSUP_TOKENS, ISUSE_TOKENS, ReflectionVocab

VOCAB = ReflectionVocab(ids={tok: 1000 + k for k, tok in enumerate(ALL_TOKENS)})
IDS = VOCAB.ids
FLOOR = -30.0  # make_generation's default for reflection ids not given a log-prob


def gen(pieces, logprobs=None, cumulative_logprob=-1.0):
    return make_generation(pieces, IDS, logprobs, cumulative_logprob=cumulative_logprob)


def step(**by_token):
    """A step dict over all reflection ids (FLOOR), with some tokens set: step(Retrieval=-0.1)."""
    out = dict.fromkeys(IDS.values(), FLOOR)
    names = {"Retrieval": "[Retrieval]", "NoRetrieval": "[No Retrieval]"}
    for key, lp in by_token.items():
        out[IDS[names[key]]] = lp
    return out


# ------------------------------------------------------------------------------------------------ constants


def test_utility_weights():
    assert UTILITY_WEIGHTS == (-1.0, -0.5, 0.0, 0.5, 1.0)


def test_default_weights_are_the_papers():
    w = Weights()
    assert (w.w_rel, w.w_sup, w.w_use) == (1.0, 1.0, 0.5)
    assert (w.use_groundness, w.use_utility, w.use_seqscore) == (False, False, False)


# ----------------------------------------------------------------------------------------------- group_probs


def test_group_probs_renormalises():
    probs = group_probs({1: math.log(0.2), 2: math.log(0.6), 3: -5.0}, (1, 2))
    assert probs == pytest.approx([0.25, 0.75], abs=1e-12)


def test_group_probs_order_follows_ids():
    st = {1: -1.0, 2: -2.0}
    p12 = group_probs(st, (1, 2))
    p21 = group_probs(st, (2, 1))
    assert p12[0] == pytest.approx(math.exp(-1) / (math.exp(-1) + math.exp(-2)), abs=1e-15)
    assert p21 == pytest.approx([p12[1], p12[0]], abs=1e-15)


def test_group_probs_numerically_stable():
    # exp(-1000) underflows to 0.0, so the naive formula would divide 0 by 0.
    assert math.exp(-1000.0) == 0.0
    probs = group_probs({1: -1000.0, 2: -1001.0}, (1, 2))
    expected = 1.0 / (1.0 + math.exp(-1.0))  # = e^-1000 / (e^-1000 + e^-1001)
    assert all(math.isfinite(p) for p in probs)
    assert probs[0] == pytest.approx(expected, abs=1e-12)
    assert probs[1] == pytest.approx(1.0 - expected, abs=1e-12)


def test_group_probs_one_minus_inf():
    assert group_probs({1: -math.inf, 2: -3.0}, (1, 2)) == [0.0, 1.0]


def test_group_probs_all_minus_inf_raises():
    with pytest.raises(ValueError, match="have probability 0"):
        group_probs({1: -math.inf, 2: -math.inf}, (1, 2))


# ----------------------------------------------------------------------------------------- retrieval decision


def test_retrieve_prob_from_two_logprobs():
    st = step(Retrieval=-0.5, NoRetrieval=-2.0)
    expected = math.exp(-0.5) / (math.exp(-0.5) + math.exp(-2.0))
    assert retrieve_prob(st, VOCAB) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.8175744761936437, abs=1e-12)


def test_retrieve_prob_ignores_continue_token():
    st = step(Retrieval=math.log(0.3), NoRetrieval=math.log(0.1))
    st[IDS["[Continue to Use Evidence]"]] = math.log(0.6)
    assert retrieve_prob(st, VOCAB) == pytest.approx(0.75, abs=1e-12)


def test_original_retrieve_ratio_is_raw_logprob_ratio():
    st = step(Retrieval=-10.0, NoRetrieval=-12.0)
    assert original_retrieve_ratio(st, VOCAB) == pytest.approx(10.0 / 22.0, abs=1e-15)  # 0.4545...
    # Both tokens unlikely: the original retrieves (0.455 > 0.2), the paper's rule does not.
    assert original_retrieve_ratio(st, VOCAB) > 0.2
    assert retrieve_prob(st, VOCAB) == pytest.approx(math.exp(-10) / (math.exp(-10) + math.exp(-12)), abs=1e-12)


def test_original_retrieve_ratio_inverts_the_paper_rule():
    # §4.3: p(Ret)=0.9, p(NoRet)=0.1 -> ratio 0.044, so the original does NOT retrieve at threshold 0.2.
    lr, ln = math.log(0.9), math.log(0.1)
    st = step(Retrieval=lr, NoRetrieval=ln)
    ratio = original_retrieve_ratio(st, VOCAB)
    assert ratio == pytest.approx(lr / (lr + ln), abs=1e-15)
    assert ratio == pytest.approx(0.04375536, abs=1e-8)
    assert round(ratio, 3) == 0.044
    assert not ratio > 0.2
    # The paper's probability rule retrieves.
    assert retrieve_prob(st, VOCAB) == pytest.approx(0.9, abs=1e-12)
    assert retrieve_prob(st, VOCAB) > 0.2
    # And the other way round: p(Ret)=0.1 gives a ratio of 0.956, so the original retrieves.
    flipped = step(Retrieval=ln, NoRetrieval=lr)
    assert original_retrieve_ratio(flipped, VOCAB) == pytest.approx(ln / (lr + ln), abs=1e-15)
    assert original_retrieve_ratio(flipped, VOCAB) > 0.2
    assert retrieve_prob(flipped, VOCAB) == pytest.approx(0.1, abs=1e-12)


# ------------------------------------------------------------------------------------------------- positions


def test_first_position():
    g = gen(["Paris", "[Relevant]", "is", "[Fully supported]", "[Utility:5]", "[Fully supported]"])
    assert first_position(g, VOCAB.group(ISSUP_TOKENS)) == 3
    assert first_position(g, VOCAB.group(ISUSE_TOKENS)) == 4
    assert first_position(g, (IDS["[Retrieval]"],)) is None


# ------------------------------------------------------------------------------------------------- relevance


def test_relevance_at_position_zero():
    g = gen(["[Relevant]", "Paris", "."], {0: {"[Relevant]": -0.2, "[Irrelevant]": -1.7}})
    expected = math.exp(-0.2) / (math.exp(-0.2) + math.exp(-1.7))
    assert relevance(g, VOCAB) == pytest.approx(expected, abs=1e-12)


def test_relevance_read_at_position_zero_whatever_token_was_generated():
    # Position 0 is a plain word; the [Relevant] token at position 2 carries other log-probs that must be ignored.
    g = gen(
        ["Paris", "is", "[Relevant]", "big"],
        {0: {"[Relevant]": -3.0, "[Irrelevant]": -1.0}, 2: {"[Relevant]": -0.01, "[Irrelevant]": -9.0}},
    )
    expected = math.exp(-3.0) / (math.exp(-3.0) + math.exp(-1.0))
    assert relevance(g, VOCAB) == pytest.approx(expected, abs=1e-12)
    assert relevance(g, VOCAB) < 0.5


def test_relevance_uses_floor_for_unset_token():
    g = gen(["[Relevant]"], {0: {"[Relevant]": -1.0}})  # [Irrelevant] stays at FLOOR
    expected = math.exp(-1.0) / (math.exp(-1.0) + math.exp(FLOOR))
    assert relevance(g, VOCAB) == pytest.approx(expected, abs=1e-15)


def test_relevance_stable_for_very_small_logprobs():
    g = gen(["x"], {0: {"[Relevant]": -1000.0, "[Irrelevant]": -1001.0}})
    value = relevance(g, VOCAB)
    assert math.isfinite(value)
    assert value == pytest.approx(1.0 / (1.0 + math.exp(-1.0)), abs=1e-12)


# --------------------------------------------------------------------------------------------------- support


def test_support_at_first_issup_token_only():
    g = gen(
        ["[Relevant]", "Paris", "[Partially supported]", "and", "[Fully supported]"],
        {
            2: {"[Fully supported]": -1.0, "[Partially supported]": -0.5, "[No support / Contradictory]": -2.0},
            4: {"[Fully supported]": -0.001, "[Partially supported]": -8.0, "[No support / Contradictory]": -8.0},
        },
    )
    full, part, nosup = math.exp(-1.0), math.exp(-0.5), math.exp(-2.0)
    expected = (full + 0.5 * part) / (full + part + nosup)
    assert support(g, VOCAB) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.6047737, abs=1e-6)


def test_support_values_at_extremes():
    full = gen(["[Fully supported]"], {0: {"[Fully supported]": 0.0}})
    e30 = math.exp(FLOOR)
    assert support(full, VOCAB) == pytest.approx((1 + 0.5 * e30) / (1 + 2 * e30), abs=1e-15)
    part = gen(["a", "[Partially supported]"], {1: {"[Partially supported]": 0.0}})
    assert support(part, VOCAB) == pytest.approx((e30 + 0.5) / (1 + 2 * e30), abs=1e-15)
    nosup = gen(["[No support / Contradictory]"], {0: {"[No support / Contradictory]": 0.0}})
    assert support(nosup, VOCAB) == pytest.approx(1.5 * e30 / (1 + 2 * e30), abs=1e-15)


def test_support_zero_without_issup_token():
    g = gen(["[Relevant]", "Paris", "[Utility:5]"], {1: {"[Fully supported]": 0.0}})
    assert support(g, VOCAB) == 0.0


# --------------------------------------------------------------------------------------------------- utility


def test_utility_weighted_at_first_isuse_token():
    lps = [-3.0, -2.0, -1.0, -0.5, -0.1]
    g = gen(
        ["Paris", "[Utility:4]", "[Utility:1]"],
        {
            1: dict(zip(ISUSE_TOKENS, lps)),
            2: {"[Utility:1]": 0.0, "[Utility:2]": -9.0, "[Utility:3]": -9.0, "[Utility:4]": -9.0, "[Utility:5]": -9.0},
        },
    )
    ps = [math.exp(lp) for lp in lps]
    weights = [-1.0, -0.5, 0.0, 0.5, 1.0]
    expected = sum(w * p for w, p in zip(weights, ps)) / sum(ps)
    assert utility(g, VOCAB) == pytest.approx(expected, abs=1e-12)
    assert expected > 0


@pytest.mark.parametrize("k, weight", [(1, -1.0), (2, -0.5), (3, 0.0), (4, 0.5), (5, 1.0)])
def test_utility_weight_of_each_level(k, weight):
    tok = f"[Utility:{k}]"
    g = gen([tok], {0: {tok: 0.0}})
    e30 = math.exp(FLOOR)
    others = sum(w for w in (-1.0, -0.5, 0.0, 0.5, 1.0)) - weight  # every other level at FLOOR
    expected = (weight + others * e30) / (1 + 4 * e30)
    assert utility(g, VOCAB) == pytest.approx(expected, abs=1e-15)
    assert utility(g, VOCAB) == pytest.approx(weight, abs=1e-12)


def test_utility_zero_without_isuse_token():
    g = gen(["[Relevant]", "Paris", "[Fully supported]"], {0: {"[Utility:5]": 0.0}})
    assert utility(g, VOCAB) == 0.0


# ------------------------------------------------------------------------------------------ score_generation

REL_LPS = {"[Relevant]": -0.3, "[Irrelevant]": -1.5}
SUP_LPS = {"[Fully supported]": -0.4, "[Partially supported]": -1.2, "[No support / Contradictory]": -2.5}
USE_LPS = {"[Utility:1]": -4.0, "[Utility:2]": -3.0, "[Utility:3]": -2.0, "[Utility:4]": -1.0, "[Utility:5]": -0.5}


def _full_gen():
    # 5 tokens, cumulative log-prob -2.5 -> mean -0.5 -> seq = exp(-0.5)
    return gen(
        ["[Relevant]", "Paris", ".", "[Fully supported]", "[Utility:5]"],
        {0: REL_LPS, 3: SUP_LPS, 4: USE_LPS},
        cumulative_logprob=-2.5,
    )


def _by_hand():
    rel = math.exp(-0.3) / (math.exp(-0.3) + math.exp(-1.5))
    f, p, n = (math.exp(v) for v in SUP_LPS.values())
    sup = (f + 0.5 * p) / (f + p + n)
    us = [math.exp(v) for v in USE_LPS.values()]
    use = sum(w * u for w, u in zip((-1.0, -0.5, 0.0, 0.5, 1.0), us)) / sum(us)
    seq = math.exp(-2.5 / 5)
    return rel, sup, use, seq


def test_score_generation_flags_off_is_relevance_only():
    rel, _, _, _ = _by_hand()
    scores = score_generation(_full_gen(), VOCAB, Weights())
    assert scores.relevance == pytest.approx(rel, abs=1e-12)
    assert (scores.support, scores.utility, scores.seq) == (0.0, 0.0, 0.0)
    assert scores.total == pytest.approx(rel, abs=1e-12)


def test_score_generation_all_flags_default_weights():
    rel, sup, use, seq = _by_hand()
    w = Weights(use_groundness=True, use_utility=True, use_seqscore=True)
    scores = score_generation(_full_gen(), VOCAB, w)
    assert scores.relevance == pytest.approx(rel, abs=1e-12)
    assert scores.support == pytest.approx(sup, abs=1e-12)
    assert scores.utility == pytest.approx(use, abs=1e-12)
    assert scores.seq == pytest.approx(seq, abs=1e-12)
    assert scores.total == pytest.approx(seq + 1.0 * rel + 1.0 * sup + 0.5 * use, abs=1e-12)


def test_score_generation_each_flag_alone():
    rel, sup, use, seq = _by_hand()
    g = _full_gen()
    only_sup = score_generation(g, VOCAB, Weights(use_groundness=True))
    assert only_sup.total == pytest.approx(rel + sup, abs=1e-12)
    assert (only_sup.utility, only_sup.seq) == (0.0, 0.0)
    only_use = score_generation(g, VOCAB, Weights(use_utility=True))
    assert only_use.total == pytest.approx(rel + 0.5 * use, abs=1e-12)
    assert (only_use.support, only_use.seq) == (0.0, 0.0)
    only_seq = score_generation(g, VOCAB, Weights(use_seqscore=True))
    assert only_seq.total == pytest.approx(seq + rel, abs=1e-12)
    assert only_seq.seq == pytest.approx(math.exp(-0.5), abs=1e-15)
    assert (only_seq.support, only_seq.utility) == (0.0, 0.0)


def test_score_generation_custom_weights():
    rel, sup, use, seq = _by_hand()
    w = Weights(w_rel=2.0, w_sup=0.25, w_use=1.0, use_groundness=True, use_utility=True, use_seqscore=True)
    scores = score_generation(_full_gen(), VOCAB, w)
    assert scores.total == pytest.approx(seq + 2.0 * rel + 0.25 * sup + 1.0 * use, abs=1e-12)
    zero_rel = score_generation(_full_gen(), VOCAB, Weights(w_rel=0.0))
    assert zero_rel.total == 0.0
    assert zero_rel.relevance == pytest.approx(rel, abs=1e-12)


def test_score_generation_missing_tokens_give_zero_terms():
    g = gen(["[Irrelevant]", "Rome"], {0: {"[Relevant]": -2.0, "[Irrelevant]": -0.2}}, cumulative_logprob=-3.0)
    scores = score_generation(g, VOCAB, Weights(use_groundness=True, use_utility=True, use_seqscore=True))
    rel = math.exp(-2.0) / (math.exp(-2.0) + math.exp(-0.2))
    assert scores.support == 0.0
    assert scores.utility == 0.0
    assert scores.seq == pytest.approx(math.exp(-1.5), abs=1e-15)
    assert scores.total == pytest.approx(math.exp(-1.5) + rel, abs=1e-12)


def test_seq_score_is_exp_of_mean_logprob():
    g = Generation(text="ab", token_ids=[1, 2, 3, 4], cumulative_logprob=-2.0, step_logprobs=[])
    assert g.mean_logprob == -0.5
    empty = Generation(text="", token_ids=[], cumulative_logprob=-2.0)
    assert empty.mean_logprob == -2.0  # max(len, 1)


def test_critique_scores_to_dict():
    scores = CritiqueScores(relevance=0.5, support=0.25, utility=-0.5, seq=0.1, total=0.6)
    assert scores.to_dict() == {"relevance": 0.5, "support": 0.25, "utility": -0.5, "seq": 0.1, "total": 0.6}
