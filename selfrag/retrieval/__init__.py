"""Dense retrieval as in the original (Contriever + FAISS), with compressed indexes and a lazily read corpus.

- `encoder.TextEncoder`: any HF encoder; Contriever = mean pooling without normalisation (the default).
- `passages.PassageStore`: DPR TSV (`id\\ttext\\ttitle`) or JSONL passages read on demand through a byte-offset index.
- `index.FaissIndex`: the original `Indexer` API (`index_data`, `search_knn`, `serialize`, `deserialize_from`) over
  any FAISS factory string (`Flat`, `IVF4096,PQ64`, `HNSW32`, ...), saved to disk and memory-mapped back.
- `retriever.Retriever`: `search(queries, k) -> [[{id, title, text, score}, ...], ...]`.
- `embeddings`: `generate_passage_embeddings.py` (sharded, resumable); `index_build`: the index built from the
  embedding shards or loaded from its folder; `pipeline`: `passage_retrieval.py`.

faiss is imported only by the modules that need it (`pip install 'selfrag[retrieval]'`, i.e. faiss-cpu).
"""

from __future__ import annotations

from typing import Any

__all__ = ["FaissIndex", "PassageStore", "Retriever", "TextEncoder"]

_HOMES = {
    "FaissIndex": "selfrag.retrieval.index",
    "PassageStore": "selfrag.retrieval.passages",
    "Retriever": "selfrag.retrieval.retriever",
    "TextEncoder": "selfrag.retrieval.encoder",
}


def __getattr__(name: str) -> Any:  # lazy, so `import selfrag.retrieval` needs neither torch nor faiss
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(name)
