"""Index presets sized to the corpus: a name (`--index_preset`) or a FAISS factory string whose IVF list count is
left out (`IVF,SQ8`), completed from the number of vectors the way FAISS's guidelines say
(https://github.com/facebookresearch/faiss/wiki/Guidelines-to-choose-an-index):

* lists: a power of two between 4·√N and 16·√N (the one nearest 8·√N), but at most N / 39, since k-means wants at
  least 39 training points per centroid (FAISS warns below that); at least 1;
* from 1M vectors on, an HNSW coarse quantiser (`IVF{K}_HNSW32`): assigning each vector to one of tens of thousands
  of centroids by brute force is what makes building a large IVF index slow;
* training sample: 50 points per list (FAISS's k-means uses at most 256 per centroid), at least 65,536 (what the
  SQ / PQ codebooks need), at most N; indexes without IVF keep the original's 1M.

| preset | factory | recall@20 vs exact (bench/index_presets.py) | RAM at 21M 768-d passages |
|---|---|---|---|
| `exact` | `Flat` | 1.000 | 60 GiB |
| `compressed` | `IVF{K},SQ8` | 0.990 at 1M, 0.994 at 200k | 15.4 GiB |
| `small` | `IVF{K},SQ6` | 0.969 at 1M | 11.6 GiB |
"""

from __future__ import annotations

import math
import re

from selfrag.errors import ConfigError

PRESETS = {"exact": "Flat", "compressed": "IVF,SQ8", "small": "IVF,SQ6"}
MIN_POINTS_PER_LIST = 39  # below this FAISS's k-means warns that the clustering is poor
TRAIN_POINTS_PER_LIST = 50
MIN_TRAIN_SIZE = 65_536
DEFAULT_TRAIN_SIZE = 1_000_000
HNSW_QUANTIZER_FROM = 1_000_000
_BARE_IVF = re.compile(r"\bIVF(?=[,_])")


def ivf_lists(n_vectors: int) -> int:
    """The IVF list count for `n_vectors` (see the module docstring)."""
    if n_vectors < 1:
        raise ConfigError("cannot size an IVF index for an empty corpus")
    best = 2 ** round(math.log2(8 * math.sqrt(n_vectors)))
    cap = max(1, n_vectors // MIN_POINTS_PER_LIST)
    return max(1, min(best, 2 ** int(math.log2(cap))))


def needs_size(spec: str) -> bool:
    """Whether `spec` (a preset name or a factory string) can only be built once the corpus size is known."""
    return bool(_BARE_IVF.search(PRESETS.get(spec, spec)))


def resolve_factory(spec: str, n_vectors: int) -> str:
    """The FAISS factory string for a preset name or a factory string, with the IVF list count filled in."""
    factory = PRESETS.get(spec, spec)
    if not _BARE_IVF.search(factory):
        return factory
    lists = ivf_lists(n_vectors)
    quantizer = f"IVF{lists}_HNSW32" if n_vectors >= HNSW_QUANTIZER_FROM else f"IVF{lists}"
    return _BARE_IVF.sub(quantizer, factory)


def train_size(factory: str, n_vectors: int) -> int:
    """Vectors to train `factory` on for a corpus of `n_vectors` (see the module docstring)."""
    match = re.search(r"\bIVF(\d+)", factory)
    if not match:
        return min(n_vectors, DEFAULT_TRAIN_SIZE)
    return min(n_vectors, max(MIN_TRAIN_SIZE, TRAIN_POINTS_PER_LIST * int(match.group(1))))
