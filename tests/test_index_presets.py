"""Index presets sized to the corpus (selfrag/retrieval/presets.py): list counts, quantisers and training samples
from the number of vectors, as FAISS's guidelines say; and the presets through passage_retrieval.py."""

from __future__ import annotations

import pytest

from selfrag.errors import ConfigError
from selfrag.retrieval.presets import ivf_lists, needs_size, resolve_factory, train_size


@pytest.mark.parametrize(
    ("n", "lists"),
    [(30, 1), (100, 2), (10_000, 256), (200_000, 4096), (1_000_000, 8192), (21_015_324, 32768)],
)
def test_list_count_follows_faiss_guidelines(n, lists):
    assert ivf_lists(n) == lists
    assert n // lists >= 39 or lists == 1  # enough training points per centroid
    if n >= 100_000:  # below that the 39-points cap wins (10k: 256 lists, not 400-1600)
        assert 4 * n**0.5 <= lists <= 16 * n**0.5


@pytest.mark.parametrize(
    ("spec", "n", "factory"),
    [
        ("compressed", 200_000, "IVF4096,SQ8"),
        ("small", 200_000, "IVF4096,SQ6"),
        ("exact", 200_000, "Flat"),
        ("compressed", 21_015_324, "IVF32768_HNSW32,SQ8"),
        ("IVF,SQ8", 10_000, "IVF256,SQ8"),
        ("OPQ64,IVF,PQ64", 200_000, "OPQ64,IVF4096,PQ64"),
        ("IVF_HNSW32,SQ8", 200_000, "IVF4096_HNSW32,SQ8"),
        ("IVF1024,SQ8", 200_000, "IVF1024,SQ8"),  # a list count given is kept
        ("HNSW32", 200_000, "HNSW32"),
    ],
)
def test_resolve_factory(spec, n, factory):
    assert resolve_factory(spec, n) == factory
    assert needs_size(spec) == (factory != spec and spec not in ("exact",))


def test_training_sample_size():
    assert train_size("IVF4096,SQ8", 200_000) == 200_000  # 50 a list would be 204,800: the whole corpus
    assert train_size("IVF256,SQ8", 1_000_000) == 65_536  # the SQ / PQ codebooks' minimum
    assert train_size("IVF32768_HNSW32,SQ8", 21_015_324) == 1_638_400
    assert train_size("PQ64", 21_015_324) == 1_000_000 and train_size("Flat", 500) == 500
    with pytest.raises(ConfigError, match="empty corpus"):
        ivf_lists(0)
