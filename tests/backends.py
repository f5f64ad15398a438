"""Backend wrappers shared by the runner tests."""

from __future__ import annotations


class FailingBackend:
    """Delegates to `inner` but dies on its `fail_on_call`-th generate call, like a run killed mid-way; counts calls.

    `fail_on_call=-1` never fails (a counting wrapper).
    """

    def __init__(self, inner, fail_on_call: int):
        self.inner, self.fail_on_call, self.calls, self.tokenizer = inner, fail_on_call, 0, inner.tokenizer

    def generate(self, prompts, params):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt
        return self.inner.generate(prompts, params)
