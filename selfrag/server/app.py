"""The FastAPI app over a `SelfRagEngine`: `/v1/completions`, `/v1/chat/completions` (streamed or not),
`/v1/models`, `/health`, and `main`, the `selfrag serve` / `python -m selfrag.server` entry point.

Streaming: Self-RAG picks its answer only after every candidate has been generated and critiqued, so a streamed
response arrives after the decision (`Reply.chunks`); a client that disconnects cancels only its own stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException
except ImportError as err:  # an optional extra
    raise ImportError("selfrag.server needs fastapi and uvicorn: pip install 'selfrag[server]'") from err

from selfrag.server.config import ServerConfig, build_engine
from selfrag.server.engine import Answer, SelfRagEngine
from selfrag.server.protocol import Reply, RequestError, check_context, error_body, parse_request, sse
from selfrag.views.trace import render_page

logger = logging.getLogger(__name__)


def _error(
    status: int, message: str, param: str | None = None, code: str | None = None, kind: str = "invalid_request_error"
) -> JSONResponse:
    return JSONResponse(error_body(message, param, code, kind), status)


DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024  # ServerConfig.max_request_bytes


class BodyTooLargeError(Exception):
    """The request body passed the server's limit (`--max_request_bytes`): a 413."""

    def __init__(self, size: int, exact: bool) -> None:
        super().__init__(size)
        self.size, self.exact = size, exact


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, read as it arrives; `BodyTooLargeError` as soon as it (or its declared Content-Length)
    passes `limit` bytes. The rest of an oversized body is read and dropped, up to 16 times the limit, so the
    client gets the 413 rather than a reset connection."""
    declared = request.headers.get("content-length", "")
    declared_size = int(declared) if declared.isdigit() else None
    size, chunks = 0, []
    too_large = declared_size is not None and declared_size > limit
    async for chunk in request.stream():
        size += len(chunk)
        if not too_large and size <= limit:
            chunks.append(chunk)
            continue
        too_large, chunks = True, []
        if size > 16 * limit:
            break  # a body this large is not drained: the connection closes after the 413
    if too_large:
        exact = declared_size is not None or size <= 16 * limit
        raise BodyTooLargeError(declared_size if declared_size is not None else size, exact)
    return b"".join(chunks)


def create_app(engine: SelfRagEngine, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
    """The FastAPI app; it starts the engine's worker on startup and stops it on shutdown. A request body over
    `max_request_bytes` gets a 413; one that cannot fit the model's context a 400; neither is queued."""

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

    @app.get("/", response_class=HTMLResponse)
    async def playground():
        """A page to ask questions and see why each was answered so (the answer trace of selfrag/views)."""
        return HTMLResponse(render_page(None, f"Self-RAG playground: {engine.model_id}", playground=True))

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
            raw = await read_body(request, max_request_bytes)
        except BodyTooLargeError as err:
            size = f"{err.size} bytes" if err.exact else f"more than {err.size} bytes"
            return _error(
                413,
                f"the request body is {size}; this server takes at most {max_request_bytes} bytes "
                "(selfrag serve --max_request_bytes)",
                code="request_too_large",
            )
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return _error(400, f"the request body is not valid JSON: {err}", code="invalid_json")
        try:
            opts, stream = parse_request(body, chat, engine)
            await asyncio.to_thread(check_context, body, chat, opts, engine)  # a long prompt takes a while to count
        except RequestError as err:
            return _error(400, err.message, err.param, err.code)
        reply = Reply.new(chat, engine.model_id)
        future = asyncio.wrap_future(engine.submit(opts))
        if stream:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = _stream(future, reply, include_usage)
            return StreamingResponse(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            ans: Answer = await future
        except Exception as err:  # noqa: BLE001 - reported to the client as a 500
            return _error(500, f"{type(err).__name__}: {err}", kind="server_error")
        return reply.completion(ans)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await handle(request, chat=True)

    return app


async def _stream(future, reply: Reply, include_usage: bool):
    """SSE chunks in OpenAI's format; a disconnect cancels this generator, never the worker."""
    try:
        ans: Answer = await future
    except Exception as err:  # noqa: BLE001 - the stream has begun (status 200): report in-band as OpenAI does
        yield sse({"error": {"message": f"{type(err).__name__}: {err}", "type": "server_error"}})
        return
    for chunk in reply.chunks(ans, include_usage):
        yield sse(chunk)
        await asyncio.sleep(0)
    yield "data: [DONE]\n\n"


def main(argv: Sequence[str] | None = None) -> int:
    """`selfrag serve` / `python -m selfrag.server`: parse flags, load, serve until interrupted."""
    import uvicorn

    from selfrag.cli import parse_config, setup_logging

    setup_logging()
    description = "OpenAI-compatible server over Self-RAG (/v1/completions, /v1/chat/completions; a playground at /)."
    config = parse_config(ServerConfig, argv, description=description)
    logger.info("config: %s", config)
    engine = build_engine(config)
    try:
        app = create_app(engine, max_request_bytes=config.max_request_bytes)
        uvicorn.run(app, host=config.host, port=config.port, log_level="info")
    finally:
        engine.backend.close()
    return 0
