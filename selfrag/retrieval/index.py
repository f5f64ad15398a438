"""FAISS inner-product indexes with the original `Indexer` API, built from any FAISS factory string.

The original (`src/index.py`, docs/original_selfrag.md §6.4) offers `IndexFlatIP`, or `IndexPQ` when
`--n_subquantizers > 0`, and keeps the passage ids in a Python list pickled to `index_meta.faiss`. A flat index of
21M Contriever vectors needs ~60 GiB of RAM. `FaissIndex` takes a factory string instead, so the compressed presets
(`IVF65536_HNSW32,SQ8` ~15.4 GiB for 21M, `...,SQ6` ~11.6 GiB, `OPQ64_256,IVF65536_HNSW32,PQ64`, `HNSW32`, ...;
bench/index_presets.py measures recall, RAM and speed) use the same code path. Indexes are saved as `index.faiss`
+ `index_ids.npy` + `index_config.json` and read back memory-mapped (`faiss.IO_FLAG_MMAP_IFC`), so the OS pages in
only what searches touch. An index written by the original (`index.faiss` + `index_meta.faiss`) loads too.

Ids: passage ids are kept as a numpy array (int64 when every id is a plain integer, as in DPR; else bytes), never as
21M Python strings.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from selfrag.errors import ConfigError, DataFormatError

logger = logging.getLogger(__name__)

INDEX_FILE, IDS_FILE, CONFIG_FILE, ORIGINAL_META_FILE = "index.faiss", "index_ids.npy", "index_config.json", \
    "index_meta.faiss"


def import_faiss() -> Any:
    try:
        import faiss
    except ImportError as err:
        raise ConfigError("retrieval needs faiss: pip install 'selfrag[retrieval]' (faiss-cpu, or faiss-gpu)") from err
    return faiss


def ids_to_array(ids: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Passage ids as int64 when all are plain integers ('17', 17), else as bytes ('doc-17', '017')."""
    if isinstance(ids, np.ndarray) and ids.dtype.kind in "iuS":
        return ids.astype(np.int64) if ids.dtype.kind in "iu" else ids
    values = [v.decode() if isinstance(v, bytes) else str(v) for v in ids]
    if all(v.isdigit() and (v == "0" or v[0] != "0") and len(v) < 19 for v in values):
        return np.array([int(v) for v in values], dtype=np.int64)
    return np.array([v.encode("utf-8") for v in values], dtype=bytes)


def ids_to_str(ids: np.ndarray) -> list[str]:
    return [v.decode("utf-8") for v in ids.tolist()] if ids.dtype.kind == "S" else [str(v) for v in ids.tolist()]


def concat_ids(chunks: Sequence[np.ndarray]) -> np.ndarray:
    if not chunks:
        return np.zeros(0, dtype=np.int64)
    if len({c.dtype.kind for c in chunks}) > 1:  # ints and strings mixed: everything as bytes
        chunks = [np.array([str(v).encode() for v in c.tolist()], dtype=bytes) if c.dtype.kind != "S" else c
                  for c in chunks]
    return np.concatenate(chunks)


def original_factory(n_subquantizers: int = 0, n_bits: int = 8) -> str:
    """The original's choice (`src/index.py:17-21`): IndexPQ with `n_subquantizers > 0`, else IndexFlatIP."""
    return f"PQ{n_subquantizers}x{n_bits}" if n_subquantizers > 0 else "Flat"


def _skip_polysemous_training(faiss: Any, index: Any) -> None:
    """Factory `PQ` / `IVF...,PQ` indexes train polysemous codes (a slow annealing, 10x the PQ training time here)
    that only serve Hamming-filtered search (`polysemous_ht`), which is never used; the factory's `np` suffix turns
    it off, and so does this, for any factory string."""
    index = faiss.downcast_index(index)
    for attr in ("index", "base_index"):  # IndexPreTransform (OPQ), IndexRefine
        inner = getattr(index, attr, None)
        if inner is not None and hasattr(inner, "ntotal"):
            _skip_polysemous_training(faiss, inner)
    if hasattr(index, "do_polysemous_training"):
        index.do_polysemous_training = False


class FaissIndex:
    """An inner-product FAISS index plus the passage id of each vector (contriever's `Indexer` API).

    Args:
        dim: vector dimension (768 for Contriever; the original's `--projection_size`).
        factory: a FAISS factory string: `Flat` (exact), `PQ64`, `IVF4096,PQ64`, `OPQ64,IVF4096,PQ64`, `HNSW32`,
            `IVF4096,SQ8`, `IVF4096,PQ64,Refine(SQ8)`, ... (https://github.com/facebookresearch/faiss/wiki/The-index-factory).
        index: an already built faiss index (instead of `factory`).
        ids: the passage ids of the vectors already in `index`.
        search_params: FAISS search parameters, e.g. `{"nprobe": 64}` (IVF) or `{"efSearch": 128}` (HNSW).

    Example:
        >>> index = FaissIndex(4)
        >>> index.index_data(["a", "b"], np.eye(4, dtype=np.float32)[:2])
        >>> index.search_knn(np.eye(4, dtype=np.float32)[1:2], k=1)[0][0]
        ['b']
    """

    def __init__(
        self,
        dim: int,
        factory: str = "Flat",
        *,
        index: Any = None,
        ids: np.ndarray | None = None,
        search_params: dict[str, Any] | None = None,
        source: str = "",
    ) -> None:
        faiss = import_faiss()
        if index is None:
            try:
                index = faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
            except RuntimeError as err:
                raise ConfigError(
                    f"FAISS cannot build index {factory!r} for dimension {dim}: {str(err).splitlines()[0]}; see "
                    "https://github.com/facebookresearch/faiss/wiki/The-index-factory (e.g. Flat, IVF4096,PQ64, HNSW32)"
                ) from err
            _skip_polysemous_training(faiss, index)
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ConfigError(f"{source or 'the index'} does not use the inner-product metric; rebuild it")
        self.index = index
        self.factory = factory
        self.dim = int(index.d)
        self.source = source
        self.config: dict[str, Any] = {}
        self._id_chunks: list[np.ndarray] = [] if ids is None else [ids]
        self.search_params: dict[str, Any] = {}
        if search_params:
            self.set_search_params(**search_params)

    # ---- building ----

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    @property
    def ids(self) -> np.ndarray:
        if len(self._id_chunks) > 1:
            self._id_chunks = [concat_ids(self._id_chunks)]
        return self._id_chunks[0] if self._id_chunks else np.zeros(0, dtype=np.int64)

    def _check_dim(self, vectors: np.ndarray, what: str) -> np.ndarray:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise ConfigError(f"{what} must be a 2-d array [n, dim]; got shape {vectors.shape}")
        if vectors.shape[1] != self.dim:
            raise ConfigError(
                f"{what} have dimension {vectors.shape[1]} but the index{' ' + self.source if self.source else ''} "
                f"holds {self.dim}-d vectors: use the encoder that embedded the passages (see index_config.json), "
                "or rebuild the index (and --projection_size) for this encoder"
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def train(self, sample: np.ndarray) -> None:
        """Train the codebooks / coarse quantiser (IVF, PQ, SQ, OPQ) on a sample of the vectors."""
        sample = self._check_dim(sample, "training vectors")
        if self.is_trained:
            return
        logger.info("training %s on %d vectors", self.factory, len(sample))
        self.index.train(sample)

    def index_data(self, ids: Sequence[Any] | np.ndarray, embeddings: np.ndarray, batch_size: int = 1_000_000) -> None:
        """Add vectors and their passage ids (cast to float32, in chunks); an untrained index first trains on them,
        as the original does (callers with a better, corpus-wide sample call `train` first)."""
        embeddings = self._check_dim(embeddings, "passage embeddings")
        if len(ids) != len(embeddings):
            raise DataFormatError(f"{len(ids)} ids for {len(embeddings)} embeddings; they must pair up")
        if not self.is_trained:
            self.train(embeddings)
        for start in range(0, len(embeddings), batch_size):
            self.index.add(embeddings[start : start + batch_size])
        self._id_chunks.append(ids_to_array(ids))
        logger.debug("total data indexed %d", self.ntotal)

    # ---- searching ----

    def set_search_params(self, **params: Any) -> None:
        """Set FAISS search parameters, e.g. `nprobe=64` (IVF), `efSearch=128` (HNSW), `k_factor_rf=4` (Refine)."""
        faiss = import_faiss()
        space = faiss.ParameterSpace()
        for name, value in params.items():
            if value is None:
                continue
            try:
                space.set_index_parameter(self.index, name, value)
            except RuntimeError as err:
                raise ConfigError(f"search parameter {name}={value} does not apply to index {self.factory!r} "
                                  f"({str(err).splitlines()[0]})") from err
            self.search_params[name] = value

    def search(self, queries: np.ndarray, k: int, batch_size: int = 2048) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: (scores [n, k] float32, positions [n, k] int64, -1 where fewer than k found)."""
        queries = self._check_dim(queries, "query embeddings")
        if k < 1:
            raise ConfigError(f"k must be at least 1; got {k}")
        scores = np.empty((len(queries), k), dtype=np.float32)
        positions = np.empty((len(queries), k), dtype=np.int64)
        for start in range(0, len(queries), batch_size):
            chunk = queries[start : start + batch_size]
            scores[start : start + len(chunk)], positions[start : start + len(chunk)] = self.index.search(chunk, k)
        return scores, positions

    def search_knn(self, query_vectors: np.ndarray, top_docs: int, index_batch_size: int = 2048
                   ) -> list[tuple[list[str], np.ndarray]]:
        """The original's return shape: one `(passage ids, scores)` pair per query, best first."""
        scores, positions = self.search(query_vectors, top_docs, index_batch_size)
        ids = self.ids
        results = []
        for row_scores, row_positions in zip(scores, positions):
            keep = row_positions >= 0
            results.append((ids_to_str(ids[row_positions[keep]]), row_scores[keep]))
        return results

    def to_gpu(self) -> bool:
        """Move the index to all visible GPUs when faiss was built with GPU support; False when it stays on CPU."""
        faiss = import_faiss()
        if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() == 0:
            logger.info("faiss has no GPU support here (or no GPU); searching on CPU")
            return False
        try:
            self.index = faiss.index_cpu_to_all_gpus(self.index)
        except RuntimeError as err:  # e.g. HNSW has no GPU version
            logger.warning("index %s stays on CPU: %s", self.factory, str(err).splitlines()[0])
            return False
        return True

    # ---- saving and loading ----

    def serialize(self, dir_path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
        """Write `index.faiss`, `index_ids.npy` and `index_config.json` (factory, dim, count, ...) to `dir_path`."""
        faiss = import_faiss()
        directory = Path(dir_path)
        directory.mkdir(parents=True, exist_ok=True)
        index = self.index
        if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(index).__name__:
            index = faiss.index_gpu_to_cpu(index)
        ids = self.ids
        if len(ids) != self.ntotal:
            raise DataFormatError(f"the index holds {self.ntotal} vectors but {len(ids)} ids")
        logger.info("serializing index to %s", directory / INDEX_FILE)
        tmp = directory / (INDEX_FILE + ".tmp")
        faiss.write_index(index, str(tmp))
        os.replace(tmp, directory / INDEX_FILE)
        np.save(directory / (IDS_FILE + ".tmp.npy"), ids)
        os.replace(directory / (IDS_FILE + ".tmp.npy"), directory / IDS_FILE)
        config = {"factory": self.factory, "dim": self.dim, "metric": "inner_product", "ntotal": self.ntotal,
                  "faiss_version": getattr(faiss, "__version__", "?"), **(extra or {})}
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, dir_path: str | os.PathLike, mmap: bool = True, search_params: dict[str, Any] | None = None
             ) -> FaissIndex:
        """Read an index written by `serialize` (or by the original's `Indexer.serialize`).

        With `mmap`, vectors and codes stay on disk and are paged in as searches touch them (read-only index).
        """
        faiss = import_faiss()
        directory = Path(dir_path)
        index_file = directory / INDEX_FILE
        if not index_file.is_file():
            raise DataFormatError(f"{index_file}: no saved index; build it first (passage_retrieval.py "
                                  "--save_or_load_index builds and saves it)")
        config: dict[str, Any] = {}
        if (directory / CONFIG_FILE).is_file():
            config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        flags = faiss.IO_FLAG_MMAP_IFC if mmap else 0
        logger.info("loading index from %s%s", index_file, " (memory-mapped)" if mmap else "")
        index = faiss.read_index(str(index_file), flags)
        if (directory / IDS_FILE).is_file():
            ids = np.load(directory / IDS_FILE, mmap_mode="r" if mmap else None)
        elif (directory / ORIGINAL_META_FILE).is_file():  # the original's pickled list of ids
            with (directory / ORIGINAL_META_FILE).open("rb") as handle:
                ids = ids_to_array(pickle.load(handle))
        else:
            raise DataFormatError(f"{directory}: {INDEX_FILE} has no {IDS_FILE} (or the original's "
                                  f"{ORIGINAL_META_FILE}) next to it; rebuild the index")
        if len(ids) != index.ntotal:
            raise DataFormatError(f"{directory}: {INDEX_FILE} holds {index.ntotal} vectors but the id file has "
                                  f"{len(ids)}; the files come from different builds: rebuild the index")
        loaded = cls(index.d, config.get("factory", type(index).__name__), index=index, ids=ids,
                     search_params=search_params, source=str(index_file))
        loaded.config = config
        return loaded

    def deserialize_from(self, dir_path: str | os.PathLike, mmap: bool = True) -> None:
        """The original's in-place loader: replace this index by the one saved in `dir_path`."""
        loaded = self.load(dir_path, mmap=mmap)
        if loaded.dim != self.dim:
            raise ConfigError(f"{loaded.source} holds {loaded.dim}-d vectors, not {self.dim}-d (--projection_size)")
        self.__dict__.update(loaded.__dict__)


def build_index(
    shards: Sequence[tuple[Sequence[Any], np.ndarray]] | Any,
    dim: int,
    factory: str = "Flat",
    train_sample: np.ndarray | None = None,
    batch_size: int = 1_000_000,
    show_progress: bool = False,
) -> FaissIndex:
    """Build an index from an iterable of `(ids, embeddings)` shards; trains on `train_sample` when given."""
    index = FaissIndex(dim, factory)
    if train_sample is not None:
        index.train(train_sample)
    for ids, embeddings in tqdm(shards, desc="indexing", unit="shard", disable=not show_progress):
        index.index_data(ids, embeddings, batch_size=batch_size)
    return index
