"""Text encoders for dense retrieval: Contriever (BERT + mean pooling, no normalisation) or any HF encoder.

The original (retrieval_lm/src/contriever.py:40-55) mean-pools `last_hidden_state` over the non-padded tokens and does
not L2-normalise, so scores are raw inner products. Passages are embedded as `title + " " + text`, optionally lowercased
and then unicode-normalised (generate_passage_embeddings.py:33-40); queries get the same lowercase / normalisation
(passage_retrieval.py:36-64). `TextEncoder` does exactly that by default, and adds CLS pooling, L2 normalisation and
e5-style query / passage prefixes for other encoders.

Anything that maps `list[str] -> array [n, d]` can stand in for an encoder in `Retriever` (see `as_query_encoder`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from selfrag.errors import ConfigError

logger = logging.getLogger(__name__)

Pooling = Literal["mean", "cls"]

# contriever src/normalize_text.py (adapted from ChemDataExtractor): the same character mapping as one table.
_DELETE = "\u0001\u0002\u0003\u0004\u0005\u0006\u0007\u0008\u000e\u000f\u0011\u0012\u0013\u0014\u0015\u0016\u0017" \
          "\u0018\u0019\u001a\u001b\u00ad"
_MAP = {
    "\u000b": " ", "\u000c": " ", "\u0085": " ",
    **dict.fromkeys("\u2010\u2011\u2043\u2012\u2013\u2014\u2015\u2212\uff0d\u207b", "-"),
    **dict.fromkeys("\u201c\u201d\u201e\u201f", '"'),
    **dict.fromkeys("\u2018\u2019\u201a\u201b\u055a\ua78b\ua78c\uff07`\u00b4", "'"),
    "\u2032": "'", "\u2035": "'", "\u2033": "''", "\u2036": "''", "\u2034": "'''", "\u2037": "'''", "\u2057": "''''",
    "\u2026": "...",
    **dict.fromkeys("\u2044\u2215", "/"),
    **dict.fromkeys("\u02dc\u2053\u223c\u223d\u223f\u301c\uff5e", "~"),
}
_TABLE = str.maketrans({**dict.fromkeys(_DELETE, None), **_MAP})


def normalize_text(text: str) -> str:
    """Contriever's `--normalize_text`: ASCII hyphens, quotes, primes, ellipses, slashes and tildes; drop controls.

    Example: `normalize_text("“Don’t” — 5…")` gives `'"Don\\'t" - 5...'`.
    """
    # Every replacement yields plain ASCII that no later rule touches, so one translate() equals the original's
    # sequence of str.replace calls; the final ' . . . ' rule runs after, as there.
    return text.translate(_TABLE).replace(" . . . ", " ... ")


def preprocess(text: str, lowercase: bool = False, normalize: bool = False) -> str:
    """The original's order: lowercase first, then `normalize_text`."""
    if lowercase:
        text = text.lower()
    if normalize:
        text = normalize_text(text)
    return text


def passage_text(passage: Mapping[str, Any], use_title: bool = True) -> str:
    """`title + " " + text` as the original, or `text` alone when `use_title` is off or the title is missing."""
    if use_title and passage.get("title") is not None:
        return f"{passage['title']} {passage['text']}"
    return str(passage["text"])


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str | None) -> str:
    """`None` or `auto`: CUDA when present, else CPU."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """`auto`: float16 on a GPU (the original's default, `--no_fp16` off), float32 on CPU."""
    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)} or 'auto'")
    return DTYPES[dtype]


def sentence_transformers_defaults(path: str | Path) -> dict[str, Any]:
    """Pooling and normalisation declared by a sentence-transformers folder (`modules.json`, `1_Pooling/`), if any."""
    path = Path(path)
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return {}
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    found: dict[str, Any] = {"normalize": any(m.get("type", "").endswith(".Normalize") for m in modules)}
    for module in modules:
        if module.get("type", "").endswith(".Pooling"):
            config_file = path / module.get("path", "") / "config.json"
            if config_file.is_file():
                pooling = json.loads(config_file.read_text(encoding="utf-8"))
                if pooling.get("pooling_mode_cls_token"):
                    found["pooling"] = "cls"
                elif pooling.get("pooling_mode_mean_tokens"):
                    found["pooling"] = "mean"
    return found


def _has_pooler_weights(path: str) -> bool:
    """Whether a local safetensors checkpoint holds `pooler.*` weights (False when unknown)."""
    files = sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else []
    if not files:
        return False
    from safetensors import safe_open

    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            if any(key.split(".")[0] == "pooler" or ".pooler." in key for key in handle.keys()):
                return True
    return False


class TextEncoder:
    """Embed queries and passages with an HF encoder (`AutoModel`), Contriever-style by default.

    Args:
        model: an HF encoder returning `last_hidden_state` (BertModel for Contriever).
        tokenizer: its tokenizer.
        pooling: `mean` over non-padded tokens (Contriever) or `cls` (the first token).
        normalize: L2-normalise the embeddings (off for Contriever: scores are raw inner products).
        query_prefix / passage_prefix: prepended after lowercasing / normalisation (e5: "query: " / "passage: ").
        batch_size: texts per forward pass.
        query_max_length / passage_max_length: truncation, in tokens (the original: 512 for both by default).
        lowercase / normalize_text: the original's `--lowercase` / `--normalize_text`, for queries and passages.
        use_title: passages as `title + " " + text` (the original's default; `--no_title` turns it off).
        device: where the model runs (`None`: CUDA when present); the model is moved there.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        pooling: Pooling = "mean",
        normalize: bool = False,
        query_prefix: str = "",
        passage_prefix: str = "",
        batch_size: int = 64,
        query_max_length: int = 512,
        passage_max_length: int = 512,
        lowercase: bool = False,
        normalize_text: bool = False,
        use_title: bool = True,
        device: str | None = None,
        name: str = "",
    ) -> None:
        if pooling not in ("mean", "cls"):
            raise ConfigError(f"pooling must be 'mean' or 'cls'; got {pooling!r}")
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1; got {batch_size}")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.pooling: Pooling = pooling
        self.normalize = normalize
        self.query_prefix, self.passage_prefix = query_prefix, passage_prefix
        self.batch_size = batch_size
        self.query_max_length, self.passage_max_length = query_max_length, passage_max_length
        self.lowercase, self.normalize_text, self.use_title = lowercase, normalize_text, use_title
        self.name = name

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str,
        *,
        device: str | None = None,
        dtype: str = "auto",
        pooling: Pooling | None = None,
        normalize: bool | None = None,
        **kwargs: Any,
    ) -> TextEncoder:
        """Load an encoder folder (or hub id when a hub is reachable).

        `pooling` / `normalize` left as `None` take what a sentence-transformers folder declares (all-MiniLM-L6-v2:
        mean, normalised), else Contriever's: mean pooling, no normalisation.
        """
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        from selfrag.pretrained import check_model_path

        check_model_path(model_name_or_path, "cannot load the encoder")
        device = resolve_device(device)
        declared = sentence_transformers_defaults(model_name_or_path) if Path(model_name_or_path).is_dir() else {}
        pooling = pooling or declared.get("pooling", "mean")
        normalize = declared.get("normalize", False) if normalize is None else normalize
        try:
            config = AutoConfig.from_pretrained(model_name_or_path)
            tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
            # Contriever is a BertModel without the pooler (contriever.py:11-15); drop it unless the checkpoint has one
            # (then loading it avoids an "unexpected keys" report; it is never used either way).
            extra = {"add_pooling_layer": False} if config.model_type in ("bert", "roberta", "xlm-roberta") \
                and not _has_pooler_weights(model_name_or_path) else {}
            model = AutoModel.from_pretrained(model_name_or_path, dtype=resolve_dtype(dtype, device), **extra)
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"cannot load the encoder {model_name_or_path!r} with transformers ({err}); pass a local folder "
                "holding config.json, the weights and the tokenizer (e.g. facebook/contriever-msmarco downloaded)"
            ) from err
        logger.info("encoder %s: %s pooling, normalize=%s, dim %d, %s on %s", model_name_or_path, pooling, normalize,
                    model.config.hidden_size, next(model.parameters()).dtype, device)
        return cls(model, tokenizer, pooling=pooling, normalize=normalize, device=device, name=model_name_or_path,
                   **kwargs)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def settings(self) -> dict[str, Any]:
        """What shapes the embeddings (recorded next to embedding files and indexes)."""
        return {"name": self.name, "pooling": self.pooling, "normalize": self.normalize, "dim": self.dim,
                "query_prefix": self.query_prefix, "passage_prefix": self.passage_prefix,
                "lowercase": self.lowercase, "normalize_text": self.normalize_text, "use_title": self.use_title}

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], max_length: int, show_progress: bool = False) -> np.ndarray:
        """Embed texts as given (no preprocessing): float32 array [len(texts), dim], in input order."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # Longest first: batches pad little, and an out-of-memory batch shows up at once. Masked pooling makes
        # each embedding independent of its batch mates (up to float rounding).
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc="encoding", unit="batch", disable=not show_progress):
            rows = order[start : start + self.batch_size]
            batch = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=max_length,
                                   return_tensors="pt")
            batch = {k: v.to(self.device) for k, v in batch.items()}
            hidden = self.model(**batch).last_hidden_state  # [b, t, d]
            if self.pooling == "mean":
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [b, t, 1]
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1)  # contriever.py:46-49
            else:
                pooled = hidden[:, 0]
            pooled = pooled.float()
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[rows] = pooled.cpu().numpy()
        return out

    def query_texts(self, queries: Sequence[str]) -> list[str]:
        return [self.query_prefix + preprocess(q, self.lowercase, self.normalize_text) for q in queries]

    def passage_texts(self, passages: Sequence[Mapping[str, Any]]) -> list[str]:
        return [self.passage_prefix + preprocess(passage_text(p, self.use_title), self.lowercase, self.normalize_text)
                for p in passages]

    def encode_queries(self, queries: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Query embeddings, float32 [n, dim]."""
        return self.embed(self.query_texts(queries), self.query_max_length, show_progress)

    def encode_passages(self, passages: Sequence[Mapping[str, Any]], show_progress: bool = False) -> np.ndarray:
        """Passage embeddings (each passage a dict with `text` and usually `title`), float32 [n, dim]."""
        return self.embed(self.passage_texts(passages), self.passage_max_length, show_progress)

    def __call__(self, queries: Sequence[str]) -> np.ndarray:
        return self.encode_queries(queries)


QueryEncoder = Callable[[Sequence[str]], Any]


def as_query_encoder(encoder: TextEncoder | QueryEncoder) -> Callable[[Sequence[str]], np.ndarray]:
    """A function `list[str] -> float32 array [n, d]` from a `TextEncoder` or any callable (dspy-style embedder)."""
    fn = encoder.encode_queries if hasattr(encoder, "encode_queries") else encoder
    if not callable(fn):
        raise ConfigError(f"the encoder must be a TextEncoder or a callable list[str] -> array; got {type(encoder)}")

    def encode(queries: Sequence[str]) -> np.ndarray:
        vectors = np.asarray(fn(list(queries)), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(queries):
            raise ConfigError(
                f"the encoder returned an array of shape {vectors.shape} for {len(queries)} queries; "
                "expected [n_queries, dim]"
            )
        return vectors

    return encode
