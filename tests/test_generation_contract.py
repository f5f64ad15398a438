"""`selfrag.backends.base.Generation` refuses an inconsistent completion with the project's `BackendError`."""

from __future__ import annotations

import math

import pytest

from selfrag.backends.base import Generation
from selfrag.errors import BackendError, SelfRagError


def test_step_logprobs_must_match_the_tokens():
    with pytest.raises(BackendError, match="step_logprobs must have one entry per generated token"):
        Generation(text="ab", token_ids=[1, 2], cumulative_logprob=-1.0, step_logprobs=[{5: -0.1}])


def test_cumulative_logprob_must_not_be_nan():
    with pytest.raises(BackendError, match="cumulative_logprob is NaN") as caught:
        Generation(text="a", token_ids=[1], cumulative_logprob=math.nan)
    assert isinstance(caught.value, SelfRagError) and not isinstance(caught.value, AssertionError)


def test_consistent_generations_pass():
    assert Generation(text="ab", token_ids=[1, 2], cumulative_logprob=-1.0, step_logprobs=[{5: -0.1}, {5: -0.2}])
    assert Generation(text="", token_ids=[], cumulative_logprob=0.0).mean_logprob == 0.0
