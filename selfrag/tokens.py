"""The reflection-token vocabulary: the single source of truth for every token string and group.

Self-RAG (paper Table 1) adds 15 tokens to the generator's vocabulary. The insertion order below is the one of
the original `finetune.py:446-463`, which gives the released `selfrag/selfrag_llama2_7b` the ids 32000..32014.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from selfrag.errors import VocabError

RETRIEVAL = "[Retrieval]"
NO_RETRIEVAL = "[No Retrieval]"
CONTINUE = "[Continue to Use Evidence]"
RELEVANT = "[Relevant]"
IRRELEVANT = "[Irrelevant]"
FULLY_SUPPORTED = "[Fully supported]"
PARTIALLY_SUPPORTED = "[Partially supported]"
NO_SUPPORT = "[No support / Contradictory]"
PARAGRAPH_START = "<paragraph>"
PARAGRAPH_END = "</paragraph>"

# Groups, in the paper's names. The order inside each group is the one the scoring functions rely on.
RETRIEVE_TOKENS = (NO_RETRIEVAL, RETRIEVAL, CONTINUE)
ISREL_TOKENS = (IRRELEVANT, RELEVANT)
ISSUP_TOKENS = (FULLY_SUPPORTED, PARTIALLY_SUPPORTED, NO_SUPPORT)
ISUSE_TOKENS = tuple(f"[Utility:{k}]" for k in range(1, 6))
CONTEXT_TOKENS = (PARAGRAPH_START, PARAGRAPH_END)

# Order of `additional_special_tokens` in the original finetune.py (ids 32000..32014 on Llama-2).
ALL_TOKENS = (
    NO_RETRIEVAL,
    RETRIEVAL,
    CONTINUE,
    IRRELEVANT,
    RELEVANT,
    PARAGRAPH_START,
    PARAGRAPH_END,
    *ISUSE_TOKENS,
    FULLY_SUPPORTED,
    PARTIALLY_SUPPORTED,
    NO_SUPPORT,
)

# The 14 strings the original strips from answers (utils.py:52-53). `[Continue to Use Evidence]` is not among
# them, which is an upstream quirk (docs/upstream_quirks.md); `strip_reflection_tokens` removes all 15.
ORIGINAL_CONTROL_TOKENS = (*ISSUP_TOKENS, NO_RETRIEVAL, RETRIEVAL, IRRELEVANT, RELEVANT, *CONTEXT_TOKENS, *ISUSE_TOKENS)


@dataclass(frozen=True)
class ReflectionVocab:
    """Token ids of the reflection tokens in one tokenizer.

    Build it with `ReflectionVocab.from_tokenizer(tokenizer)`; it refuses tokenizers that lack any token.
    """

    ids: Mapping[str, int]

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, source: str | None = None) -> ReflectionVocab:
        """Look up every reflection token; raise `VocabError` if one is missing or is not a single token."""
        where = f" of {source}" if source else ""
        vocab = tokenizer.get_vocab()
        missing = [tok for tok in ALL_TOKENS if tok not in vocab or vocab[tok] == tokenizer.unk_token_id]
        if missing:
            raise VocabError(
                f"the tokenizer{where} lacks the Self-RAG reflection tokens {missing}; "
                "use a Self-RAG checkpoint (e.g. selfrag/selfrag_llama2_7b) or one trained with "
                "retrieval_lm/finetune.py --use_special_tokens"
            )
        ids = {tok: vocab[tok] for tok in ALL_TOKENS}
        if len(set(ids.values())) != len(ids):
            raise VocabError(f"the tokenizer{where} maps several reflection tokens to one id: {ids}")
        return cls(ids=ids)

    def group(self, tokens: tuple[str, ...]) -> tuple[int, ...]:
        """Ids of a token group, e.g. `vocab.group(ISSUP_TOKENS)`."""
        return tuple(self.ids[t] for t in tokens)

    @property
    def all_ids(self) -> tuple[int, ...]:
        return tuple(self.ids[t] for t in ALL_TOKENS)

    def __getitem__(self, token: str) -> int:
        return self.ids[token]


def strip_reflection_tokens(text: str, tokens: tuple[str, ...] = ALL_TOKENS) -> str:
    """Remove reflection-token strings from `text` (no other change)."""
    for tok in tokens:
        text = text.replace(tok, "")
    return text
