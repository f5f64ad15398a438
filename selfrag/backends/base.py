"""The generation-backend contract shared by the vllm, HF transformers and scripted backends.

Self-RAG reads its critique scores from the log-probabilities of the reflection tokens at each generated
position. The original asked vllm for the log-probs of the *whole vocabulary* (32016 per position), which is
the main cost of inference and is refused by current vllm. A backend here instead returns, at every generated
position, the log-probabilities of exactly the `watch_token_ids` the caller names.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from selfrag.errors import BackendError


@dataclass(frozen=True)
class GenParams:
    """Decoding settings. Self-RAG decodes greedily (`temperature=0`) everywhere.

    `add_special_tokens=False` tokenizes the prompts without the tokenizer's BOS: for prompts built with a chat
    template (`--use_chat_template`), which write their own.
    """

    max_tokens: int = 15
    temperature: float = 0.0
    top_p: float = 1.0
    watch_token_ids: tuple[int, ...] = ()
    seed: int = 633
    add_special_tokens: bool = True


@dataclass
class Generation:
    """One completion.

    Attributes:
        text: the decoded completion with special tokens kept (reflection tokens stay visible) and without a
            final end-of-sequence token.
        token_ids: generated ids, including the end-of-sequence id when generation stopped on it (as vllm).
        cumulative_logprob: sum of the log-probs of `token_ids`.
        step_logprobs: one dict per entry of `token_ids`, `{watched_id: logprob}` for every watched id.

    A backend that builds an inconsistent one (step_logprobs not one per token, a NaN cumulative_logprob) gets a
    `BackendError`.
    """

    text: str
    token_ids: list[int]
    cumulative_logprob: float
    step_logprobs: list[dict[int, float]] = field(default_factory=list)

    @property
    def mean_logprob(self) -> float:
        """`cumulative_logprob / max(len(token_ids), 1)`, the original's sequence score before `exp`."""
        return self.cumulative_logprob / max(len(self.token_ids), 1)

    def __post_init__(self) -> None:
        if self.step_logprobs and len(self.step_logprobs) != len(self.token_ids):
            raise BackendError("step_logprobs must have one entry per generated token")
        if math.isnan(self.cumulative_logprob):
            raise BackendError("cumulative_logprob is NaN")


def eos_token_ids(tokenizer: Any, generation_eos: int | Iterable[int] | None) -> set[int]:
    """The ids that end a completion: the generation config's `eos_token_id` (an id or a list) plus the
    tokenizer's `eos_token_id`."""
    eos = [] if generation_eos is None else [generation_eos] if isinstance(generation_eos, int) else generation_eos
    return {i for i in (*eos, tokenizer.eos_token_id) if i is not None}


def decode_completion(tokenizer: Any, token_ids: Sequence[int], eos_ids: Iterable[int]) -> str:
    """`Generation.text`: the completion decoded with special tokens kept, without a final end-of-sequence id."""
    token_ids = list(token_ids)
    text_ids = token_ids[:-1] if token_ids and token_ids[-1] in set(eos_ids) else token_ids
    return tokenizer.decode(text_ids, skip_special_tokens=False)


class GenerationBackend(abc.ABC):
    """A language model that completes prompts.

    Contract for `generate(prompts, params) -> list[Generation]`:
      - one `Generation` per prompt, in order; all prompts are processed as one batch (implementations may
        split it internally, never the caller);
      - prompts are strings, tokenized with the model's tokenizer (adding BOS as the tokenizer does, unless
        `params.add_special_tokens` is False);
      - every watched id appears in every `step_logprobs` entry, with its real log-probability under the
        model's (untempered) next-token distribution;
      - decoding stops at `max_tokens` or after the end-of-sequence token.
    """

    tokenizer: object

    @abc.abstractmethod
    def generate(self, prompts: Sequence[str], params: GenParams) -> list[Generation]:
        raise NotImplementedError

    @property
    def context_length(self) -> int | None:
        """The most tokens (prompt plus completion) the model takes, or None when unknown (an API, a script)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release accelerator memory (vllm engines); a no-op by default."""
