"""OpenAI's wire format for the server: request bodies parsed into `RequestOptions` (a bad one raises
`RequestError`, a 400 naming the field), checked against the model's context (`check_context`), and the response,
error and server-sent-event chunk bodies."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from selfrag.decoding.config import MODES, DecodingConfig
from selfrag.errors import ConfigError
from selfrag.prompts import format_evidence
from selfrag.server.engine import Answer, RequestOptions, SelfRagEngine


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


# The options a request may set in its `selfrag` object: DecodingConfig's knobs (both IsSup spellings; max_tokens
# is the request's own field, and compat a run-level switch), and the request's long_form, ctxs and trace.
DECODING_OPTIONS = {f.name: f for f in fields(DecodingConfig) if f.name not in ("max_new_tokens", "compat")}
ALIASES = {"use_grounding": "use_groundness"}
OPTIONS = {*DECODING_OPTIONS, *ALIASES, "long_form", "ctxs", "trace"}
MINIMUM = {"ndocs": 1, "beam_width": 1, "max_depth": 2}


def _decoding_value(extra: Mapping[str, Any], key: str) -> Any:
    """The value of the decoding option `key` of a request's `selfrag` object, checked as its flag would be."""
    name, value, where = ALIASES.get(key, key), extra[key], f"selfrag.{key}"
    if name == "mode":
        if value not in MODES:
            raise RequestError(f"'{where}' must be one of {list(MODES)}", where)
        return value
    if name in MINIMUM:
        return _int(extra, key, MINIMUM[name], "selfrag.")
    if name == "threshold":
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1
        ):
            raise RequestError(f"'{where}' must be a probability in [0, 1] or null", where)
        return None if value is None else float(value)
    if isinstance(DECODING_OPTIONS[name].default, bool):  # the switches (annotations may be strings or types)
        if not isinstance(value, bool):
            raise RequestError(f"'{where}' must be true or false", where, "invalid_type")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"'{where}' must be a number", where, "invalid_type")
    return float(value)


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
    extra = body.get("selfrag") or {}
    if not isinstance(extra, dict):
        raise RequestError("'selfrag' must be an object", "selfrag", "invalid_type")
    unknown = sorted(set(extra) - OPTIONS)
    if unknown:
        raise RequestError(f"unknown 'selfrag' options {unknown}", f"selfrag.{unknown[0]}")
    changes = {
        ALIASES.get(key, key): _decoding_value(extra, key) for key in extra if key in DECODING_OPTIONS or key in ALIASES
    }
    if max_tokens:
        changes["max_new_tokens"] = max_tokens
    try:
        decoding = replace(engine.defaults.decoding, **changes)
    except ConfigError as err:
        raise RequestError(str(err).replace("--", "selfrag."), "selfrag") from err
    opts = replace(engine.defaults, instruction=instruction, decoding=decoding)
    for key in ("long_form", "trace"):
        if key in extra:
            if not isinstance(extra[key], bool):
                raise RequestError(f"'selfrag.{key}' must be true or false", f"selfrag.{key}", "invalid_type")
            opts = replace(opts, **{key: extra[key]})
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


def check_context(body: Mapping[str, Any], chat: bool, opts: RequestOptions, engine: SelfRagEngine) -> None:
    """Refuse (`RequestError`, a 400 as OpenAI and vLLM answer) a request that cannot fit the model's context: a
    prompt (with the longest passage the request brings) of `context_length` tokens or more, or `max_tokens` beyond
    what the context leaves after the prompt. Passages the server retrieves later are not counted. Tokenizing a
    long prompt takes time: the server calls this in a thread, before the request is queued."""
    context = engine.context_length
    if context is None:
        return
    text = engine.prompt_of(opts)
    if opts.ctxs:
        text += max((format_evidence(dict(c)) for c in opts.ctxs[: opts.ndocs]), key=len)
    tokens, exact = engine.count_tokens(text, limit=context)
    where = "messages" if chat else "prompt"
    what = "the prompt" + (" with its longest passage" if opts.ctxs else "")
    size = f"{tokens}" if exact else f"more than {tokens - 1}"
    if tokens >= context:
        raise RequestError(
            f"{what} is {size} tokens; this model's context is {context} tokens (prompt and completion together): "
            "shorten it",
            where,
            "context_length_exceeded",
        )
    left = context - tokens
    key = next((k for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None), None)
    if opts.max_tokens <= left:
        return
    if key is None:
        raise RequestError(
            f"{what} is {size} tokens; with the server's default max_tokens of {opts.max_tokens} it exceeds this "
            f"model's context of {context} tokens: shorten it, or ask for at most {left} tokens",
            where,
            "context_length_exceeded",
        )
    raise RequestError(
        f"'{key}' is {opts.max_tokens}, but this model's context is {context} tokens and {what} takes {size}: at "
        f"most {left} are left for the completion",
        key,
        "context_length_exceeded",
    )


# ------------------------------------------------------------------------------------------------------ responses


def error_body(
    message: str, param: str | None = None, code: str | None = None, kind: str = "invalid_request_error"
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def usage(ans: Answer) -> dict[str, int]:
    return {
        "prompt_tokens": ans.prompt_tokens,
        "completion_tokens": ans.completion_tokens,
        "total_tokens": ans.prompt_tokens + ans.completion_tokens,
    }


def pieces(text: str) -> list[str]:
    """Stream chunks: words with their leading whitespace; they concatenate to `text` exactly."""
    found = re.findall(r"\s*\S+", text)
    tail = text[len("".join(found)) :]
    return found + [tail] if tail else found


def sse(payload: Mapping[str, Any]) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(payload)}\n\n"


@dataclass(frozen=True)
class Reply:
    """What every body answering one request shares: the API (chat or completions), its id, time and model."""

    chat: bool
    model: str
    id: str
    created: int

    @classmethod
    def new(cls, chat: bool, model: str) -> Reply:
        """A fresh id (`chatcmpl-...` / `cmpl-...`) stamped now."""
        return cls(chat, model, ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex, int(time.time()))

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def completion(self, ans: Answer) -> dict[str, Any]:
        """The whole (non-streamed) response, with the `selfrag` metadata."""
        choice = (
            {"index": 0, "message": {"role": "assistant", "content": ans.text}, "logprobs": None}
            if self.chat
            else {"index": 0, "text": ans.text, "logprobs": None}
        )
        choice["finish_reason"] = ans.finish_reason
        head = self._head("chat.completion" if self.chat else "text_completion")
        return {**head, "choices": [choice], "usage": usage(ans), "selfrag": ans.selfrag}

    def chunks(self, ans: Answer, include_usage: bool) -> list[dict[str, Any]]:
        """The streamed response's chunks: the `selfrag` metadata first, then the answer word by word, then
        `finish_reason` (and the usage when asked for)."""
        first = {"role": "assistant", "content": ""} if self.chat else {}
        out = [{**self._chunk(first), "selfrag": ans.selfrag}]
        out += [self._chunk({"content": piece}) for piece in pieces(ans.text)]
        out.append(self._chunk({}, ans.finish_reason))
        if include_usage:
            out.append({**self._head(self._chunk_object), "choices": [], "usage": usage(ans)})
        return out

    @property
    def _chunk_object(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"

    def _chunk(self, delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta.get("content", ""), "logprobs": None, "finish_reason": finish}
        return {**self._head(self._chunk_object), "choices": [choice]}
