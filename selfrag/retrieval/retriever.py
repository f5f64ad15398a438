"""`Retriever(encoder, index, passages).search(queries, k)`: the Python API behind passage_retrieval.py.

Results are ranked lists of `{"id", "title", "text", "score"}`. `score` is a float here (the inner product); the
batch CLI writes it as a string (`str(np.float32)`, e.g. "1.555113"), as the original's eval files carry it
(docs/original_selfrag.md §6.5). The runners read either (`float(ctx["score"])`).

The encoder may be a `TextEncoder` or any callable `list[str] -> array [n, d]` (dspy-style), so tests and other
embedders plug in without a model; passages may be a `PassageStore` (lazy, for big corpora) or in-memory dicts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from selfrag.errors import ConfigError
from selfrag.retrieval.encoder import TextEncoder, as_query_encoder
from selfrag.retrieval.index import FaissIndex
from selfrag.retrieval.index_build import load_or_build_index
from selfrag.retrieval.passages import MemoryPassages, PassageStore

logger = logging.getLogger(__name__)


class Retriever:
    """Dense retrieval: embed queries, search the index, read the passages found.

    Args:
        encoder: a `TextEncoder`, or any callable mapping a list of queries to an array [n, dim].
        index: a `FaissIndex` whose ids are passage ids.
        passages: a `PassageStore`, a list of passage dicts (`id`, `title`, `text`) or a mapping id -> passage.
        query_batch_size: queries embedded and searched at a time.

    Example (one-hot embedder, no model):
        >>> docs = [{"id": "a", "title": "A", "text": "x"}, {"id": "b", "title": "B", "text": "y"}]
        >>> index = FaissIndex(2); index.index_data(["a", "b"], np.eye(2, dtype=np.float32))
        >>> Retriever(lambda qs: np.eye(2)[[1 for _ in qs]], index, docs).search(["q"], k=1)[0][0]["id"]
        'b'
    """

    def __init__(
        self,
        encoder: TextEncoder | Any,
        index: FaissIndex,
        passages: PassageStore | MemoryPassages | Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]],
        query_batch_size: int = 1024,
    ) -> None:
        self.encoder = encoder
        self._encode = as_query_encoder(encoder)
        self.index = index
        self.passages = passages if hasattr(passages, "lookup") else MemoryPassages(passages)  # type: ignore[arg-type]
        self.query_batch_size = query_batch_size

    @classmethod
    def from_paths(
        cls,
        model_name_or_path: str,
        passages: str,
        index_dir: str | None = None,
        passages_embeddings: str | None = None,
        index_factory: str | None = None,
        device: str | None = None,
        mmap: bool = True,
        search_params: dict[str, Any] | None = None,
        encoder: Any = None,
        **encoder_kwargs: Any,
    ) -> Retriever:
        """Load an encoder, a passage file and the index saved in `index_dir` (default: the shards' folder), or build
        one (`index_factory`, default Flat) from the `passages_embeddings` glob and save it there. Extra keyword
        arguments go to `TextEncoder.from_pretrained` (e.g. `lowercase=True`)."""
        store = PassageStore.open(passages)
        if encoder is None:
            encoder = TextEncoder.from_pretrained(model_name_or_path, device=device, **encoder_kwargs)
        index = load_or_build_index(index_dir=index_dir, passages_embeddings=passages_embeddings,
                                    factory=index_factory, mmap=mmap, search_params=search_params,
                                    encoder_dim=getattr(encoder, "dim", None))
        store.rows_for_ids(index.ids, source=index.source or "the index")  # every indexed id must be a passage
        return cls(encoder, index, store)

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[dict[str, Any]]]:
        """The top-`k` passages of each query, best first: `[[{"id", "title", "text", "score": float}, ...], ...]`."""
        if isinstance(queries, str):
            raise ConfigError("search() takes a list of queries; wrap a single query in a list")
        results: list[list[dict[str, Any]]] = []
        for start in range(0, len(queries), self.query_batch_size):
            batch = list(queries[start : start + self.query_batch_size])
            scores, positions = self.index.search(self._encode(batch), k)
            keep = positions >= 0
            found = self.passages.lookup(self.index.ids[positions[keep]])
            cursor = 0
            for row in range(len(batch)):
                hits = []
                for score in scores[row][keep[row]]:
                    passage = found[cursor]
                    cursor += 1
                    hits.append({"id": str(passage["id"]), "title": passage.get("title", ""),
                                 "text": passage["text"], "score": float(score)})
                results.append(hits)
        return results

    def search_document(self, query: str, n_docs: int = 10) -> list[dict[str, Any]]:
        """The original demo API (`search_document_demo`): passages for one query."""
        return self.search([query], n_docs)[0]
