"""passage_retrieval.py as a library: build or load the index, retrieve for a query or for whole eval files.

The original script (docs/original_selfrag.md §6.5) only has `--query`; the batch mode its README documents
(`--data FILE --output_dir DIR`) does not exist there. Here both work. Batch mode reads json / jsonl items (a glob of
files, as facebookresearch/contriever's script), takes each item's `question` (else `instruction`) as the query and
writes the same items with `ctxs = [{"id", "title", "text", "score"}]`, best first, to `output_dir/<same file name>`
(or `--output_file`). Scores are written as strings like the original eval files ("1.555113"). Items with gold
answers (`answers`, `answer` or `golds`) get `hasanswer` on each ctx (DPR's token match, `selfrag.retrieval.has_answer`,
as facebookresearch/contriever's script does), and the top-1/5/20/.../k answer recall of the file is logged and
written to `<output>.recall.json`.

Index: `--index_factory` (any FAISS factory string) or the original's `--n_subquantizers/--n_bits` (IndexPQ) or Flat.
It is built from the embedding shards (training on a sample drawn from every shard when the index type needs
training) and, with `--save_or_load_index`, saved next to the shards (or in `--index_dir`) and memory-mapped back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from selfrag.cli import flag
from selfrag.data import clean, load_items, where, write_json_atomic
from selfrag.errors import ConfigError, DataFormatError
from selfrag.retrieval.has_answer import add_hasanswer, gold_answers
from selfrag.retrieval.index import FaissIndex, original_factory
from selfrag.retrieval.index_build import (  # noqa: F401 - re-exported: passage_retrieval.py's index half
    apply_search_params,
    build_index_from_shards,
    default_search_params,
    load_or_build_index,
    training_sample,
)
from selfrag.retrieval.presets import PRESETS

logger = logging.getLogger(__name__)


@dataclass
class RetrievalConfig:
    """Flags of `passage_retrieval.py`: the original's names and defaults, plus batch mode and index presets."""

    model_name_or_path: str = flag("Query encoder: the encoder that embedded the passages.", default="")
    passages: str = flag("Passage file: DPR TSV (id, text, title) or JSONL.", default="")
    passages_embeddings: str = flag('Glob of embedding shards, quoted: "wikipedia_embeddings/*".', default="")
    query: str | None = flag("One query: print its passages and exit.", default=None)
    data: str | None = flag("json / jsonl file(s) (a glob) of items with 'question' or 'instruction'.", default=None)
    output_dir: str | None = flag("Where batch mode writes the items with ctxs (same file names).", default=None)
    output_file: str | None = flag("Output path instead of output_dir/<name> (one --data file only).", default=None)
    n_docs: int = flag("Passages per query.", default=100)
    per_gpu_batch_size: int = flag("Queries per encoder forward pass.", default=64)
    question_maxlength: int = flag("Query truncation length in tokens.", default=512)
    save_or_load_index: bool = flag(
        "Load the index from the index folder if there, else build and save it there.", default=False
    )
    indexing_batch_size: int = flag("Vectors added to the index at a time.", default=1_000_000)
    projection_size: int | None = flag(
        "Embedding dimension (original default 768); default: the shards'.", default=None
    )
    n_subquantizers: int = flag("Original index choice: IndexPQ with this many sub-quantizers (0: Flat).", default=0)
    n_bits: int = flag("Bits per sub-quantizer code (with --n_subquantizers).", default=8)
    lowercase: bool = flag("Lowercase queries (as the passages were).", default=False)
    normalize_text: bool = flag("Normalise unicode punctuation in queries (as the passages were).", default=False)
    no_fp16: bool = flag("Run the encoder in float32 (default: float16 on a GPU, float32 on CPU).", default=False)
    # Additions
    index_preset: str | None = flag(
        "Index sized to the corpus (selfrag/retrieval/presets.py): exact (Flat, ~60 GiB for 21M passages), "
        "compressed (IVF,SQ8: recall@20 0.99 of exact, ~15 GiB for 21M) or small (IVF,SQ6: 0.97, ~12 GiB).",
        default=None,
        metadata={"choices": sorted(PRESETS)},
    )
    index_factory: str | None = flag(
        "FAISS factory string: Flat, IVF,SQ8, IVF,SQ6, HNSW32, OPQ64,IVF,PQ64 ...; a bare IVF gets the list count "
        "for the corpus size (IVF4096 at 200k passages, IVF32768_HNSW32 at 21M). Default: the original's (Flat, or "
        "PQ with --n_subquantizers).",
        default=None,
    )
    index_dir: str | None = flag(
        "Folder of the saved index (default: the folder of the embedding shards).", default=None
    )
    train_size: int | None = flag(
        "Vectors sampled across all shards to train IVF / PQ / SQ / OPQ indexes (default: 50 per IVF list, at least "
        "65,536; 1M for indexes without IVF; at most the corpus).",
        default=None,
    )
    nprobe: int | None = flag(
        "IVF: inverted lists visited per query (default: 1/64 of them, at least 16).", default=None
    )
    efSearch: int | None = flag("HNSW: search breadth (default 256).", default=None)  # noqa: N815 - FAISS's name
    k_factor_rf: int | None = flag("Refine indexes: candidates re-ranked per result (default 4).", default=None)
    no_mmap: bool = flag("Read a saved index fully into RAM instead of memory-mapping it.", default=False)
    use_gpu: bool = flag("Search on the GPUs when faiss has GPU support.", default=False)
    pooling: str = flag(
        "mean (Contriever), cls, or auto (a sentence-transformers folder's, else mean).",
        default="auto",
        metadata={"choices": ["auto", "mean", "cls"]},
    )
    normalize_embeddings: bool | None = flag(
        "true / false: L2-normalise query embeddings (default: as the encoder folder says).", default=None
    )
    query_prefix: str = flag("Text prepended to every query (e5: 'query: ').", default="")
    device: str = flag("cuda, cpu or auto.", default="auto")
    dtype: str = flag("auto (float16 on GPU unless --no_fp16), float32, float16, bfloat16.", default="auto")
    seed: int = flag("Seed of the training sample.", default=0)
    # Parsed by the original, unused there and here.
    validation_workers: int = flag("Unused (original flag).", default=32)
    lang: str | None = flag("Unused (original flag).", default=None)
    dataset: str = flag("Unused (original flag).", default="none")

    def __post_init__(self) -> None:
        for name in ("model_name_or_path", "passages", "passages_embeddings"):
            if not getattr(self, name) and not (name == "passages_embeddings" and self.index_dir):
                raise ConfigError(f"--{name} is required")
        if (self.query is None) == (self.data is None):
            raise ConfigError("pass exactly one of --query (one question) and --data (json / jsonl files)")
        if self.data is not None and not (self.output_dir or self.output_file):
            raise ConfigError("batch mode (--data) needs --output_dir or --output_file")
        if self.index_preset and self.index_factory:
            raise ConfigError("pass --index_preset or --index_factory, not both")
        for name in ("n_docs", "per_gpu_batch_size", "question_maxlength", "indexing_batch_size", "train_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1; got {getattr(self, name)}")

    @property
    def factory(self) -> str:
        return self.index_preset or self.index_factory or original_factory(self.n_subquantizers, self.n_bits)

    def search_params(self) -> dict[str, int]:
        given = {"nprobe": self.nprobe, "efSearch": self.efSearch, "k_factor_rf": self.k_factor_rf}
        return {k: v for k, v in given.items() if v is not None}


def check_query_encoder(index: FaissIndex, encoder: Any) -> None:
    """Warn when the query encoder's settings differ from those that embedded the passages (dimension: an error)."""
    recorded = index.config.get("encoder") or {}
    if hasattr(encoder, "dim") and encoder.dim != index.dim:
        raise ConfigError(
            f"the query encoder {getattr(encoder, 'name', '')!r} makes {encoder.dim}-d vectors but the "
            f"index {index.source} holds {index.dim}-d ones: pass the encoder that embedded the passages"
        )
    if recorded and hasattr(encoder, "settings"):
        ours = encoder.settings()
        for key in ("pooling", "normalize", "lowercase", "normalize_text"):
            if key in recorded and recorded[key] != ours.get(key):
                logger.warning(
                    "passages were embedded with %s=%s but queries use %s=%s", key, recorded[key], key, ours.get(key)
                )


def setup_retriever(config: RetrievalConfig, encoder: Any = None) -> Any:
    """Encoder, index and passage store as the config says (the original's `setup_retriever`)."""
    from selfrag.retrieval.encoder import TextEncoder, resolve_device
    from selfrag.retrieval.passages import PassageStore
    from selfrag.retrieval.retriever import Retriever

    store = PassageStore.open(config.passages)  # a missing or malformed corpus fails before any heavy work
    if encoder is None:
        device = resolve_device(config.device)
        dtype = config.dtype if config.dtype != "auto" else ("float32" if config.no_fp16 else "auto")
        encoder = TextEncoder.from_pretrained(
            config.model_name_or_path,
            device=device,
            dtype=dtype,
            pooling=None if config.pooling == "auto" else config.pooling,  # type: ignore[arg-type]
            normalize=config.normalize_embeddings,
            query_prefix=config.query_prefix,
            batch_size=config.per_gpu_batch_size,
            query_max_length=config.question_maxlength,
            lowercase=config.lowercase,
            normalize_text=config.normalize_text,
        )
    index = load_or_build_index(
        index_dir=config.index_dir,
        passages_embeddings=config.passages_embeddings or None,
        factory=config.factory if (config.index_preset or config.index_factory or config.n_subquantizers) else None,
        save=config.save_or_load_index,
        mmap=not config.no_mmap,
        search_params=config.search_params(),
        train_size=config.train_size,
        indexing_batch_size=config.indexing_batch_size,
        projection_size=config.projection_size,
        seed=config.seed,
        encoder_dim=getattr(encoder, "dim", None),
    )
    if config.use_gpu:
        index.to_gpu()
    store.rows_for_ids(index.ids, source=index.source or config.passages_embeddings)
    check_query_encoder(index, encoder)
    return Retriever(encoder, index, store, query_batch_size=max(config.per_gpu_batch_size, 256))


def query_of(item: dict[str, Any]) -> str:
    for key in ("question", "instruction"):
        if isinstance(item.get(key), str) and item[key].strip():
            return item[key]
    raise DataFormatError(f"{where(item)}: no 'question' or 'instruction' to retrieve for")


def retrieve_files(config: RetrievalConfig, retriever: Any) -> list[Path]:
    """Batch mode: for each `--data` file, write its items with `ctxs` added; returns the output paths."""
    import glob

    paths = sorted(glob.glob(config.data or ""))
    if not paths:
        raise DataFormatError(f"no file matches --data {config.data!r}")
    if config.output_file and len(paths) > 1:
        raise ConfigError(f"--output_file names one output but --data matches {len(paths)} files; use --output_dir")
    written = []
    for path in paths:
        items = load_items(path)
        queries = [query_of(item) for item in items]
        answers = [gold_answers(item) for item in items]  # bad answer fields fail before the search
        results: list[list[dict[str, Any]]] = []
        step = retriever.query_batch_size
        for start in tqdm(
            range(0, len(queries), step), desc=f"retrieving {Path(path).name}", unit="batch", disable=None
        ):
            results.extend(retriever.search(queries[start : start + step], config.n_docs))
        out = Path(config.output_file) if config.output_file else Path(config.output_dir or ".") / Path(path).name
        if out.resolve() == Path(path).resolve():
            raise ConfigError(f"the output {out} would overwrite the input; pass another --output_dir / --output_file")
        outputs = []
        for item, hits in zip(items, results):
            ctxs = [{**hit, "score": str(np.float32(hit["score"]))} for hit in hits]  # the original's string scores
            outputs.append({**clean(item), "ctxs": ctxs})
        recall = add_hasanswer(outputs, config.n_docs, answers)
        write_items(out, outputs)
        write_json_atomic(str(out) + ".config.json", dataclasses.asdict(config))
        if recall.n_questions:
            logger.info("%s: %s", out.name, recall.summary())
            write_json_atomic(str(out) + ".recall.json", recall.to_dict())
        else:
            logger.info("%s: no item has gold answers (answers / answer / golds): no hasanswer, no recall", out.name)
        logger.info("saved %d items with %d passages each to %s", len(outputs), config.n_docs, out)
        written.append(out)
    return written


def write_items(path: Path, items: list[dict[str, Any]]) -> None:
    """A `.json` list or JSON Lines (any other suffix), written through a temporary file."""
    if path.suffix == ".json":
        write_json_atomic(path, items)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for item in items:
            handle.write(json.dumps(item, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
