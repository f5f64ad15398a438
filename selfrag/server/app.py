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
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException
except ImportError as err:  # an optional extra
    raise ImportError("selfrag.server needs fastapi and uvicorn: pip install 'selfrag[server]'") from err

from selfrag.server.config import ServerConfig, build_engine
from selfrag.server.engine import Answer, SelfRagEngine
from selfrag.server.protocol import Reply, RequestError, error_body, parse_request, sse

logger = logging.getLogger(__name__)


def _error(
    status: int, message: str, param: str | None = None, code: str | None = None, kind: str = "invalid_request_error"
) -> JSONResponse:
    return JSONResponse(error_body(message, param, code, kind), status)


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

    from selfrag import server
    from selfrag.cli import parse_config, setup_logging

    setup_logging()
    config = parse_config(ServerConfig, argv, description=server.__doc__.splitlines()[0])
    logger.info("config: %s", config)
    engine = build_engine(config)
    try:
        uvicorn.run(create_app(engine), host=config.host, port=config.port, log_level="info")
    finally:
        engine.backend.close()
    return 0
