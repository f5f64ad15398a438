"""A backend that replays designed completions: for tests of the decoding algorithms with exact, known scores.

Like lm-eval's DummyLM and dspy's DummyLM, it ships in the library so users can test their own pipelines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from selfrag.backends.base import Generation, GenerationBackend, GenParams
from selfrag.errors import BackendError


class ScriptedBackend(GenerationBackend):
    """Answers each prompt from `script`, a dict `{prompt: Generation}` or a function `prompt -> Generation`.

    Every call is recorded in `calls` (the list of prompt lists), so tests can assert how work was batched.
    """

    def __init__(self, script: Mapping[str, Generation] | Callable[[str], Generation], tokenizer: object = None):
        self.script = script
        self.tokenizer = tokenizer
        self.calls: list[list[str]] = []

    def generate(self, prompts: Sequence[str], params: GenParams) -> list[Generation]:
        self.calls.append(list(prompts))
        out = []
        for prompt in prompts:
            if callable(self.script):
                gen = self.script(prompt)
            elif prompt in self.script:
                gen = self.script[prompt]
            else:
                raise BackendError(f"ScriptedBackend has no completion for prompt {prompt!r}")
            missing = [i for step in gen.step_logprobs for i in params.watch_token_ids if i not in step]
            if missing:
                raise BackendError(f"scripted completion for {prompt!r} lacks watched ids {sorted(set(missing))}")
            out.append(gen)
        return out


def make_generation(
    pieces: Sequence[str],
    vocab_ids: Mapping[str, int],
    logprobs: Mapping[int, Mapping[str, float]] | None = None,
    cumulative_logprob: float = -1.0,
    floor: float = -30.0,
) -> Generation:
    """Build a `Generation` from text pieces, one token each, for scripted tests.

    Args:
        pieces: the generated tokens as strings; reflection-token strings get their real ids, others get
            ids counting from 0 (they only need to differ from the reflection ids).
        vocab_ids: token string -> id for the reflection tokens (`ReflectionVocab.ids`).
        logprobs: `{position: {token string: logprob}}`; every other reflection id gets `floor` at every step.
        cumulative_logprob: the sequence log-prob to report.
    """
    logprobs = logprobs or {}
    token_ids = [vocab_ids.get(p, k) for k, p in enumerate(pieces)]
    steps = []
    for t in range(len(pieces)):
        step = dict.fromkeys(vocab_ids.values(), floor)
        step.update({vocab_ids[tok]: lp for tok, lp in logprobs.get(t, {}).items()})
        steps.append(step)
    return Generation(
        text="".join(pieces), token_ids=token_ids, cumulative_logprob=cumulative_logprob, step_logprobs=steps
    )
