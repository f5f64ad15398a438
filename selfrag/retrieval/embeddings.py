"""Passage embeddings in the original's sharded pickle format, generated resumably (generate_passage_embeddings.py).

Format (original generate_passage_embeddings.py:80-95, docs/original_selfrag.md §6.3): shard `i` of `num_shards` covers
rows `[i * (N // num_shards), (i + 1) * (N // num_shards))`, the last shard running to N, and is saved as
`{output_dir}/{prefix}_{i:02d}`: a pickle of `(ids: list[str], embeddings: ndarray)`, float16 when the model ran in
fp16. Embedding files written by the original load here and the other way round.

Added: a shard is written in chunks of `--save_every` passages under `{prefix}_{i:02d}.partial/` as it goes, so a
killed run continues where it stopped (the chunks carry a fingerprint of the settings; other settings are refused);
`{prefix}_{i:02d}.meta.json` records the encoder settings, which passage_retrieval.py checks against the query
encoder. Under `torchrun`, rank r of world size W embeds shard `shard_id * W + r` of `num_shards * W`, one GPU each.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import pickle
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from selfrag.cli import flag
from selfrag.errors import ConfigError, DataFormatError
from selfrag.retrieval.passages import PassageStore

logger = logging.getLogger(__name__)

# Files that live next to embedding shards but are not shards (a glob like "dir/*" must skip them).
NOT_SHARDS = (".json", ".faiss", ".npy", ".tmp", ".log", ".partial")


def shard_bounds(n: int, shard_id: int, num_shards: int) -> tuple[int, int]:
    """Rows `[start, end)` of a shard: `N // num_shards` each, the last one taking the remainder (the original)."""
    if not 0 <= shard_id < num_shards:
        raise ConfigError(f"--shard_id must lie in [0, --num_shards={num_shards}); got {shard_id}")
    size = n // num_shards
    start = shard_id * size
    return start, (n if shard_id == num_shards - 1 else start + size)


def shard_path(output_dir: str | os.PathLike, prefix: str, shard_id: int) -> Path:
    return Path(output_dir) / f"{prefix}_{shard_id:02d}"


def write_embedding_shard(path: str | os.PathLike, ids: list[str], embeddings: np.ndarray) -> None:
    """Pickle `(ids, embeddings)` as the original, through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        pickle.dump((ids, embeddings), handle, protocol=4)
    os.replace(tmp, path)


def read_embedding_shard(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """`(ids, embeddings)` from a shard written by this package or the original."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            ids, embeddings = pickle.load(handle)
    except FileNotFoundError as err:
        raise DataFormatError(f"{path}: embedding file not found") from err
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise DataFormatError(f"{path}: not an embedding shard (a pickle of (ids, embeddings)): {err}; "
                              "re-run generate_passage_embeddings.py for this shard") from err
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or len(ids) != len(embeddings):
        raise DataFormatError(f"{path}: {len(ids)} ids for embeddings of shape {embeddings.shape}; the shard is "
                              "damaged: re-run generate_passage_embeddings.py for it")
    return [str(i) for i in ids], embeddings


def count_vectors(paths: list[Path]) -> int:
    """Vectors in the shards: from their `.meta.json` where written by this package, else by reading them."""
    total = 0
    for path in paths:
        meta = read_shard_meta(path) or {}
        total += int(meta["count"]) if "count" in meta else len(read_embedding_shard(path)[0])
    return total


def embedding_files(pattern: str) -> list[Path]:
    """Shard files matching a glob (`dir/*` as the original), sorted, without indexes / metadata / partial chunks."""
    paths = sorted(Path(p) for p in glob.glob(pattern))
    shards = [p for p in paths if p.is_file() and not p.name.endswith(NOT_SHARDS)]
    if not shards:
        raise DataFormatError(f"no embedding files match --passages_embeddings {pattern!r}; generate them with "
                              "generate_passage_embeddings.py (and quote the glob: \"dir/*\")")
    return shards


def iter_shards(paths: list[Path]) -> Iterator[tuple[list[str], np.ndarray]]:
    for path in paths:
        logger.info("loading embeddings from %s", path)
        yield read_embedding_shard(path)


def distributed_shard(shard_id: int, num_shards: int, env: dict[str, str] | None = None) -> tuple[int, int, int]:
    """`(shard_id, num_shards, local_rank)` for this process: under torchrun (WORLD_SIZE > 1) rank r of W takes shard
    `shard_id * W + r` of `num_shards * W`; otherwise the flags as given."""
    env = dict(os.environ) if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return shard_id, num_shards, 0
    rank = int(env.get("RANK", "0"))
    return shard_id * world + rank, num_shards * world, int(env.get("LOCAL_RANK", str(rank)))


@dataclass
class EmbeddingConfig:
    """Flags of `generate_passage_embeddings.py`: the original's names and defaults, plus a few additions."""

    model_name_or_path: str = flag("Encoder folder or hub id (facebook/contriever-msmarco for Self-RAG).", default="")
    passages: str = flag("Passage file: DPR TSV (id, text, title) or JSONL.", default="")
    output_dir: str = flag("Folder of the embedding shards.", default="wikipedia_embeddings")
    prefix: str = flag("Shard file name prefix: {prefix}_{shard_id:02d}.", default="passages")
    shard_id: int = flag("Shard to embed (under torchrun: per node, see --num_shards).", default=0)
    num_shards: int = flag("Number of shards (under torchrun: multiplied by the number of ranks).", default=1)
    per_gpu_batch_size: int = flag("Passages per forward pass.", default=512)
    passage_maxlength: int = flag("Truncation length in tokens.", default=512)
    no_fp16: bool = flag("Run the model in float32 (default: float16 on a GPU, float32 on CPU).", default=False)
    no_title: bool = flag("Embed the text alone, not 'title text'.", default=False)
    lowercase: bool = flag("Lowercase passages before encoding.", default=False)
    normalize_text: bool = flag("Normalise unicode punctuation (contriever's normalize_text).", default=False)
    # Additions
    pooling: str = flag("mean (Contriever), cls, or auto (a sentence-transformers folder's, else mean).",
                        default="auto", metadata={"choices": ["auto", "mean", "cls"]})
    normalize_embeddings: bool | None = flag(
        "true / false: L2-normalise embeddings (default: as a sentence-transformers folder declares; off for "
        "Contriever).",
        default=None)
    passage_prefix: str = flag("Text prepended to every passage (e5: 'passage: ').", default="")
    device: str = flag("cuda, cuda:1, cpu or auto (under torchrun: cuda:LOCAL_RANK).", default="auto")
    dtype: str = flag("auto (float16 on GPU unless --no_fp16, float32 on CPU), float32, float16, bfloat16.",
                      default="auto")
    save_every: int = flag("Passages per partial chunk written while embedding (what a resumed run keeps).",
                           default=10000)
    overwrite: bool = flag("Re-embed a shard whose output file already exists.", default=False)

    def __post_init__(self) -> None:
        if not self.model_name_or_path:
            raise ConfigError("--model_name_or_path is required (the encoder, e.g. facebook/contriever-msmarco)")
        if not self.passages:
            raise ConfigError("--passages is required (a DPR TSV or a JSONL passage file)")
        for name in ("num_shards", "per_gpu_batch_size", "passage_maxlength", "save_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1; got {getattr(self, name)}")
        if not 0 <= self.shard_id < self.num_shards:
            raise ConfigError(f"--shard_id must lie in [0, --num_shards={self.num_shards}); got {self.shard_id}")

    def model_dtype(self, device: str) -> str:
        if self.dtype != "auto":
            return self.dtype
        return "float16" if device.startswith("cuda") and not self.no_fp16 else "float32"


def load_encoder(config: EmbeddingConfig, device: str) -> Any:
    from selfrag.retrieval.encoder import TextEncoder

    return TextEncoder.from_pretrained(
        config.model_name_or_path, device=device, dtype=config.model_dtype(device),
        pooling=None if config.pooling == "auto" else config.pooling,  # type: ignore[arg-type]
        normalize=config.normalize_embeddings, passage_prefix=config.passage_prefix,
        batch_size=config.per_gpu_batch_size, passage_max_length=config.passage_maxlength,
        lowercase=config.lowercase, normalize_text=config.normalize_text, use_title=not config.no_title)


def generate_passage_embeddings(config: EmbeddingConfig, encoder: Any = None, env: dict[str, str] | None = None
                                ) -> Path:
    """Embed this process's shard of `config.passages` and write `{output_dir}/{prefix}_{shard:02d}`; return its path.

    `encoder` (a `TextEncoder`) is loaded from `config` when not given. A finished shard is skipped unless
    `config.overwrite`; an interrupted one resumes from its `.partial/` chunks.
    """
    shard_id, num_shards, local_rank = distributed_shard(config.shard_id, config.num_shards, env)
    out_path = shard_path(config.output_dir, config.prefix, shard_id)
    if out_path.exists() and not config.overwrite:
        logger.info("%s exists; skipping shard %d (pass --overwrite to redo it)", out_path, shard_id)
        return out_path
    store = PassageStore.open(config.passages)
    start, end = shard_bounds(len(store), shard_id, num_shards)
    logger.info("shard %d of %d: passages %d to %d of %d", shard_id, num_shards, start, end, len(store))

    if encoder is None:
        device = config.device
        if device == "auto":
            import torch

            device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        encoder = load_encoder(config, device)
    out_dtype = np.float16 if "float16" in str(next(encoder.model.parameters()).dtype) else np.float32
    settings = {**encoder.settings(), "passage_max_length": encoder.passage_max_length, "dtype": out_dtype.__name__}
    fingerprint = {"passages": {k: v for k, v in store.fingerprint().items() if k != "mtime_ns"},
                   "shard_id": shard_id, "num_shards": num_shards, "start": start, "end": end,
                   "save_every": config.save_every, "encoder": settings}

    partial = out_path.with_name(out_path.name + ".partial")
    chunks = _resume(partial, fingerprint, config.overwrite)
    n_chunks = -(-(end - start) // config.save_every)
    done = sum(min(config.save_every, end - start - k * config.save_every) for k in chunks)
    with tqdm(total=end - start, initial=done, desc=f"shard {shard_id}", unit="passage", disable=None) as bar:
        for k in range(n_chunks):
            if k in chunks:
                continue
            lo = start + k * config.save_every
            hi = min(end, lo + config.save_every)
            embeddings = encoder.encode_passages(list(store.iter_rows(lo, hi))).astype(out_dtype)
            tmp = partial / f"chunk_{k:06d}.tmp.npy"
            np.save(tmp, embeddings)
            os.replace(tmp, partial / f"chunk_{k:06d}.npy")
            bar.update(hi - lo)

    embeddings = np.concatenate([np.load(partial / f"chunk_{k:06d}.npy") for k in range(n_chunks)]) if n_chunks \
        else np.zeros((0, encoder.dim), dtype=out_dtype)
    ids = store.ids_of(start, end)
    logger.info("saving %d passage embeddings to %s", len(ids), out_path)
    write_embedding_shard(out_path, ids, embeddings)
    meta = out_path.with_name(out_path.name + ".meta.json")
    meta.write_text(json.dumps({**fingerprint, "model_name_or_path": config.model_name_or_path, "count": len(ids),
                                "config": dataclasses.asdict(config)}, indent=1), encoding="utf-8")
    shutil.rmtree(partial)
    logger.info("total passages processed %d; written to %s", len(ids), out_path)
    return out_path


def _resume(partial: Path, fingerprint: dict[str, Any], overwrite: bool) -> set[int]:
    """Chunk numbers already written under `partial` (checked against `fingerprint`); creates the folder."""
    meta_file = partial / "meta.json"
    expected = json.loads(json.dumps(fingerprint))
    if partial.is_dir() and meta_file.is_file():
        found = json.loads(meta_file.read_text(encoding="utf-8"))
        if found != expected:
            if not overwrite:
                raise ConfigError(
                    f"{partial} holds a partial shard made with other settings ({found}); delete it, or pass "
                    "--overwrite to start this shard again"
                )
            shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    meta_file.write_text(json.dumps(expected), encoding="utf-8")
    chunks = {int(p.name[len("chunk_"):-len(".npy")]) for p in partial.glob("chunk_*.npy")
              if not p.name.endswith(".tmp.npy")}
    if chunks:
        logger.info("resuming %s: %d chunks already embedded", partial, len(chunks))
    return chunks


def read_shard_meta(path: str | os.PathLike) -> dict[str, Any] | None:
    """The `.meta.json` written next to a shard by this package (None for the original's shards)."""
    meta = Path(str(path) + ".meta.json")
    return json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else None
