"""OpenAI-compatible HTTP server over Self-RAG: `/v1/completions` and `/v1/chat/completions`, streaming included.

    python -m selfrag.server --model_name selfrag/selfrag_llama2_7b --passages psgs.tsv --ndocs 5 --threshold 0.2 \
        --use_groundness --use_utility --use_seqscore --port 8000

The prompt (completions) or the last user message (chat) is the instruction. The answer is the normal OpenAI
response plus a top-level `selfrag` object: the retrieval decision and p(Retrieval), the passages used, every
candidate's (short form) or segment's (long form) critique scores, and the citations. Per-request options go in
the body's `selfrag` field (`extra_body={"selfrag": {"mode": "always_retrieve", "ndocs": 3}}` with the openai
client): `mode`, `ndocs`, `threshold`, `long_form`, and `ctxs` (the request's own passages, instead of the
server's retriever). Decoding is greedy as in Self-RAG: `temperature`, `top_p` and `stop` are accepted and ignored.

Concurrency: one worker thread owns the backend. Requests wait in a queue; the worker takes up to `--batch_size`
of them (waiting at most `--batch_wait_ms` for more) and answers them with one batched Self-RAG call
(`selfrag.decoding.short_form.run_batch`, or `beam_search` for long form), i.e. one backend call per pass for all.

Streaming: Self-RAG picks its answer only after every candidate has been generated and critiqued, so a streamed
response arrives after the decision: the first chunk carries the `selfrag` metadata, then the chosen answer
follows word by word, then a chunk with `finish_reason`, then `data: [DONE]`.

Modules: `engine` (the queue, the batching worker, `SelfRagEngine`), `protocol` (OpenAI request parsing and
response / chunk bodies), `app` (the FastAPI app and `main`), `config` (`ServerConfig`, `build_engine`).
"""

from selfrag.decoding.config import MODES
from selfrag.server.app import create_app, main
from selfrag.server.config import ServerConfig, build_engine, build_search, default_encoder
from selfrag.server.engine import Answer, RequestOptions, Search, SelfRagEngine
from selfrag.server.protocol import Reply, RequestError, instruction_of, parse_request

__all__ = [
    "MODES",
    "Answer",
    "Reply",
    "RequestError",
    "RequestOptions",
    "Search",
    "SelfRagEngine",
    "ServerConfig",
    "build_engine",
    "build_search",
    "create_app",
    "default_encoder",
    "instruction_of",
    "main",
    "parse_request",
]
