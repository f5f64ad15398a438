"""Building or loading the FAISS index of a passage corpus from its embedding shards, with search defaults.

`load_or_build_index` is what `Retriever.from_paths` and `passage_retrieval.py` (`selfrag.retrieval.pipeline`,
which re-exports these names) use: the saved index of a folder, else one built from the shards
(`build_index_from_shards`: an index that needs training trains first on a sample drawn across every shard), then
the search parameters (`apply_search_params`: explicit ones, else `default_search_params`).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from selfrag.errors import ConfigError, DataFormatError
from selfrag.retrieval.embeddings import (
    count_vectors,
    embedding_files,
    iter_shards,
    read_embedding_shard,
    read_shard_meta,
)
from selfrag.retrieval.index import CONFIG_FILE, INDEX_FILE, FaissIndex, import_faiss
from selfrag.retrieval.presets import needs_size, resolve_factory
from selfrag.retrieval.presets import train_size as presets_train_size

logger = logging.getLogger(__name__)

# FAISS's own defaults (nprobe 1, efSearch 16) lose many neighbours. Ours, from bench/index_presets.py (recall@20
# against exact search, synthetic 768-d vectors): IVF visits 1/64 of its lists (recall saturates by 1/256: IVF-SQ8
# 0.994 at 200k, 0.990 at 1M, 45x the speed of exact search), HNSW uses efSearch 256 (0.988 at 200k but 0.839 at 1M:
# pass --efSearch 1024 for large HNSW indexes, 0.956), Refine indexes re-rank 4x the candidates.
DEFAULT_EF_SEARCH, DEFAULT_K_FACTOR_RF, DEFAULT_NPROBE_FRACTION, MIN_NPROBE = 256, 4, 64, 16


def default_search_params(index: FaissIndex) -> dict[str, int]:
    """Search parameters for `index` when none are given: nprobe = max(16, nlist / 64), efSearch 256, k_factor_rf 4."""
    faiss = import_faiss()
    params = {"efSearch": DEFAULT_EF_SEARCH, "k_factor_rf": DEFAULT_K_FACTOR_RF}
    try:
        nlist = int(faiss.extract_index_ivf(index.index).nlist)
        params["nprobe"] = min(nlist, max(MIN_NPROBE, nlist // DEFAULT_NPROBE_FRACTION))
    except RuntimeError:  # not an IVF index
        pass
    return params


def apply_search_params(index: FaissIndex, explicit: dict[str, Any] | None = None) -> None:
    """Set the defaults where they apply, then the explicit values (which must apply)."""
    for name, value in default_search_params(index).items():
        if name not in (explicit or {}):
            try:
                index.set_search_params(**{name: value})
            except ConfigError:
                pass  # the parameter does not exist for this index type
    if explicit:
        index.set_search_params(**explicit)


def training_sample(paths: list[Path], size: int, seed: int = 0) -> np.ndarray:
    """About `size` vectors drawn uniformly from every shard (the shards are of equal size but the last)."""
    rng = np.random.default_rng(seed)
    quota = math.ceil(size / len(paths))
    parts = []
    for path in tqdm(paths, desc="training sample", unit="shard", disable=None):
        _, embeddings = read_embedding_shard(path)
        take = rng.choice(len(embeddings), size=min(quota, len(embeddings)), replace=False)
        parts.append(np.asarray(embeddings[np.sort(take)], dtype=np.float32))
    return np.concatenate(parts)


def build_index_from_shards(
    paths: list[Path],
    factory: str,
    dim: int | None = None,
    train_size: int | None = None,
    indexing_batch_size: int = 1_000_000,
    seed: int = 0,
    encoder_dim: int | None = None,
) -> FaissIndex:
    """Index every shard; an index that needs training first trains on a sample drawn across all shards.

    `factory` may be a preset name or leave the IVF list count out (`selfrag.retrieval.presets`): it is then sized
    to the number of vectors in the shards; `train_size` None takes the preset's rule.

    `dim` (`--projection_size`) and `encoder_dim` (the query encoder's), when given, must match the shards: checked
    on the first shard, before any indexing work."""
    _, first = read_embedding_shard(paths[0])
    if dim is not None and first.shape[1] != dim:
        raise ConfigError(
            f"the embeddings in {paths[0]} are {first.shape[1]}-d but --projection_size is {dim}; "
            f"pass --projection_size {first.shape[1]} (or leave it out)"
        )
    if encoder_dim is not None and first.shape[1] != encoder_dim:
        raise ConfigError(
            f"the query encoder makes {encoder_dim}-d vectors but the embeddings in {paths[0]} are "
            f"{first.shape[1]}-d: pass the encoder that embedded the passages"
        )
    shard_dim = first.shape[1]
    del first
    n_vectors = count_vectors(paths) if needs_size(factory) else None
    if n_vectors is not None:
        spec, factory = factory, resolve_factory(factory, n_vectors)
        logger.info("index %s for %d vectors: %s", spec, n_vectors, factory)
    index = FaissIndex(shard_dim, factory)
    if not index.is_trained:
        if train_size is None:
            train_size = presets_train_size(factory, count_vectors(paths) if n_vectors is None else n_vectors)
        index.train(training_sample(paths, train_size, seed))
    for path, (ids, embeddings) in zip(paths, iter_shards(paths)):
        try:
            index.index_data(ids, embeddings, batch_size=indexing_batch_size)
        except ConfigError as err:
            raise DataFormatError(f"{path}: {err}") from err
        logger.info("data indexing completed: %d vectors", index.ntotal)
    return index


def load_or_build_index(
    index_dir: str | None = None,
    passages_embeddings: str | None = None,
    factory: str | None = None,
    save: bool = True,
    mmap: bool = True,
    search_params: dict[str, Any] | None = None,
    train_size: int | None = None,
    indexing_batch_size: int = 1_000_000,
    projection_size: int | None = None,
    seed: int = 0,
    encoder_dim: int | None = None,
) -> FaissIndex:
    """The saved index in `index_dir` when there (its factory must match `factory` when one is asked for), else one
    built from the `passages_embeddings` glob, saved to `index_dir` (default: the shards' folder) when `save`."""
    paths = embedding_files(passages_embeddings) if passages_embeddings else []
    directory = Path(index_dir) if index_dir else (paths[0].parent if paths else None)
    if directory is None:
        raise ConfigError("pass --passages_embeddings (shards to index) or --index_dir (a saved index)")
    if (save or not paths) and (directory / INDEX_FILE).is_file():
        saved = json.loads((directory / CONFIG_FILE).read_text()) if (directory / CONFIG_FILE).is_file() else {}
        if factory and factory not in (saved.get("factory", factory), saved.get("spec")):
            raise ConfigError(
                f"{directory} holds a {saved['factory']!r} index, not {factory!r}: pass another "
                "--index_dir, or delete that index to rebuild it"
            )
        index = FaissIndex.load(directory, mmap=mmap)
    else:
        if not paths:
            raise ConfigError(f"no saved index in {directory} and no --passages_embeddings to build one from")
        index = build_index_from_shards(
            paths, factory or "Flat", projection_size, train_size, indexing_batch_size, seed, encoder_dim
        )
        if save:
            meta = read_shard_meta(paths[0]) or {}
            extra = {"encoder": meta.get("encoder"), "shards": [str(p) for p in paths], "spec": factory or "Flat"}
            index.serialize(directory, extra=extra)
            if mmap:  # continue with the memory-mapped copy, as a later run will
                index = FaissIndex.load(directory, mmap=True)
    apply_search_params(index, search_params)
    return index
