"""`ChainSettings`: the settings of the generator-data chain (`selfrag.data_creation.pipeline`, which re-exports
it) that shape its results, read by the chain's steps and by its last stage (`selfrag.data_creation.assembly`)."""

from __future__ import annotations

from dataclasses import dataclass

from selfrag.errors import ConfigError


@dataclass(frozen=True)
class ChainSettings:
    """Settings that shape the chain's results (all but `batch_size` and the assembly's are in the fingerprint)."""

    ndocs: int = 10  # passages retrieved per sentence (the README's --n_docs 10)
    top_n: int = 10  # of those, passages judged for IsRel / IsSup (the README's --top_n 10)
    min_sentence_chars: int = 30  # create_retrieval_data.py:80
    batch_size: int = 64  # units per critic / retriever call, and per checkpoint write
    seed: int = 0  # assembly randomness (per item)
    no_retrieval_keep: float = 0.4  # keep-probability of a no-retrieval instance (postprocess_data.py)
    negative_samples: bool = False  # always show an irrelevant passage (--negative_samples)

    def __post_init__(self) -> None:
        if min(self.ndocs, self.top_n, self.batch_size) < 1 or self.min_sentence_chars < 0:
            raise ConfigError("--ndocs, --top_n and --batch_size must be at least 1, --min_sentence_chars at least 0")
        if not 0.0 <= self.no_retrieval_keep <= 1.0:
            raise ConfigError(f"--no_retrieval_keep must lie in [0, 1]; got {self.no_retrieval_keep}")
