"""OpenAI-compatible API backend (OpenAI, Azure-style proxies, vllm / TGI / llama.cpp servers) for the baselines.

The original baseline script called `openai.ChatCompletion` / `openai.Completion` of `openai==0.28`, which
`openai>=1.0` removed (docs/original_selfrag.md §12.3). This backend uses the current client:

- `api="chat"`: each prompt becomes one user message of `/v1/chat/completions`;
  `api="completions"`: each prompt is sent as is to `/v1/completions` (instruct / base models).
- any `base_url` (default: the client's, i.e. OPENAI_BASE_URL or api.openai.com);
- retries with exponential backoff (and the server's `Retry-After`) on 408 / 409 / 429 / 5xx, timeouts and
  dropped connections; other errors stop at once: 401 / 403 / 404 (a refused key, no access, an unknown model) as
  an `AccessError` of one line naming the endpoint, the model and where the key came from (never the key), the
  rest (400, ...) with the server's message;
- at most `concurrency` requests in flight.

An API returns text only: `Generation.step_logprobs` is empty, so this backend cannot run Self-RAG's critique
scoring and refuses requests that watch token ids.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from selfrag.backends.base import Generation, GenerationBackend, GenParams
from selfrag.errors import AccessError, BackendError, ConfigError

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'selfrag[openai]' (openai>=1.0)"
RETRYABLE_STATUS = frozenset({408, 409, 429})
# Key placeholder for local OpenAI-compatible servers that check none (vllm's documented convention).
NO_KEY = "EMPTY"


def resolve_api_key(value: str | None, base_url: str | None = None) -> str:
    """The API key from `value` (the key itself or a file holding it), else OPENAI_API_KEY.

    The original's `--api_key` was a path to a key file (its last character dropped); here a file is read and
    stripped, and any other value is taken as the key. Without a key, a custom `base_url` (a local server) gets
    the placeholder `EMPTY`; api.openai.com needs one, so that is a `ConfigError`.
    """
    if value:
        if os.path.isfile(value):
            with open(value, "rb") as handle:
                raw = handle.read()
            try:
                key = raw.decode("utf-8").strip()
            except UnicodeDecodeError as err:  # no byte of it in the message: it is a secret
                raise ConfigError(f"--api_key file {value} is not UTF-8 text; write the key alone in it") from err
            if not key:
                raise ConfigError(f"--api_key file {value} is empty")
            return key
        if os.sep in value or "/" in value or value.endswith((".txt", ".key")):
            raise ConfigError(
                f"--api_key {value}: no such file (pass the key, a file holding it, or set OPENAI_API_KEY)"
            )
        return value
    key = os.environ.get("OPENAI_API_KEY", "").strip()
    if key:
        return key
    if base_url:
        logger.info("no API key given; sending %r to %s", NO_KEY, base_url)
        return NO_KEY
    raise ConfigError("the OpenAI API needs a key: set OPENAI_API_KEY, or pass --api_key KEY or --api_key FILE")


def api_key_source(value: str | None, base_url: str | None = None, flag: str = "--api_key") -> str:
    """Where `resolve_api_key(value, base_url)` takes the key from, in words, for error messages: the flag (and the
    key file's path), the OPENAI_API_KEY variable, or the placeholder. Never the key itself."""
    if value:
        return f"{flag} {value} (a key file)" if os.path.isfile(value) else f"{flag} (given on the command line)"
    if os.environ.get("OPENAI_API_KEY", "").strip():
        return "the OPENAI_API_KEY variable"
    if base_url:
        return f"no key was given, so the placeholder {NO_KEY!r} was sent: set OPENAI_API_KEY or pass {flag}"
    return "OPENAI_API_KEY (not set)"


# What 401 / 403 / 404 mean for a request to an OpenAI-compatible API.
ACCESS_PROBLEMS = {
    401: "the API key was rejected",
    403: "the key has no access to this model or endpoint",
    404: "no such model at this endpoint (or a wrong base URL)",
}
_KEY_LIKE = re.compile(r"\b(?:sk-|Bearer\s+)[A-Za-z0-9*._-]{3,}")  # OpenAI-style keys, quoted or masked


def _openai() -> Any:
    try:
        import openai
    except ImportError as err:
        raise BackendError(f"the openai backend needs the openai client: {INSTALL_HINT}") from err
    return openai


class OpenAIBackend(GenerationBackend):
    """Text generation through an OpenAI-compatible HTTP API.

    Args:
        model: the model name sent with each request.
        api: `chat` (one user message per prompt) or `completions` (the raw prompt).
        base_url: API root, e.g. `http://127.0.0.1:8000/v1`; None uses the client's default.
        api_key: the key (see `resolve_api_key` to read it from a flag, file or the environment).
        concurrency: requests in flight at once.
        max_retries: retries of one request after a retryable failure (so `max_retries + 1` attempts).
        retry_base_delay: seconds before the first retry; doubled at each further retry (with jitter),
            capped at `max_retry_delay`. A `Retry-After` header from the server takes precedence.
        timeout: seconds before one request is abandoned (and retried).
        client: a ready `openai.OpenAI` client (tests); built from the other arguments when None.
        key_source: where the key came from, in words (`api_key_source`), for the message of a refused key.
        model_flag: the flag that names the model (`--model_name`, `--model`), for the message of an unknown model.
    """

    tokenizer = None

    def __init__(
        self,
        model: str,
        api: Literal["chat", "completions"] = "chat",
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = 8,
        max_retries: int = 6,
        retry_base_delay: float = 1.0,
        max_retry_delay: float = 60.0,
        timeout: float = 60.0,
        client: Any | None = None,
        key_source: str | None = None,
        model_flag: str = "--model_name",
    ) -> None:
        if api not in ("chat", "completions"):
            raise ConfigError(f"unknown OpenAI API {api!r}; choose 'chat' or 'completions'")
        if concurrency < 1 or max_retries < 0:
            raise ConfigError("concurrency must be at least 1 and max_retries at least 0")
        self.openai = _openai()
        self.model, self.api = model, api
        self.concurrency, self.max_retries = concurrency, max_retries
        self.retry_base_delay, self.max_retry_delay = retry_base_delay, max_retry_delay
        # Retries are ours (the client's own would double them and hide them from the log).
        self.client = client or self.openai.OpenAI(
            api_key=api_key or resolve_api_key(None, base_url), base_url=base_url, timeout=timeout, max_retries=0
        )
        self.base_url = str(self.client.base_url)
        self.key_source = key_source or ("the api_key argument" if api_key else api_key_source(None, base_url))
        self.model_flag = model_flag
        self._answered = False  # whether the endpoint has answered a request of `generate` (key and model work)
        self._jitter = random.Random(0)

    def generate(self, prompts: Sequence[str], params: GenParams) -> list[Generation]:
        if params.watch_token_ids:
            raise BackendError(
                "an OpenAI-compatible API returns no log-probabilities of chosen token ids; it can run the "
                "baselines, not Self-RAG's critique scoring (use --backend hf or vllm)"
            )
        if not prompts:
            return []
        texts = []
        if not self._answered:  # the first request goes alone: a refused key or unknown model costs one request
            texts.append(self._with_retries(prompts[0], params))
            self._answered = True
        rest = prompts[len(texts) :]
        if rest:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(rest)), thread_name_prefix="openai") as pool:
                texts.extend(pool.map(lambda prompt: self._with_retries(prompt, params), rest))
        return [Generation(text=text, token_ids=[], cumulative_logprob=0.0) for text in texts]

    def request_kwargs(self, prompt: str, params: GenParams) -> dict[str, Any]:
        """The body of one request (without `stream`, `n` and other defaults the API fills in)."""
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
        }
        if params.top_p < 1.0:
            kwargs["top_p"] = params.top_p
        if self.api == "chat":
            kwargs["messages"] = [{"role": "user", "content": prompt}]
        else:
            kwargs["prompt"] = prompt
        return kwargs

    def _call(self, prompt: str, params: GenParams) -> str:
        kwargs = self.request_kwargs(prompt, params)
        if self.api == "chat":
            response = self.client.chat.completions.create(**kwargs)
            if not response.choices:
                raise BackendError(f"{self.base_url}: the response has no choices")
            content = response.choices[0].message.content
            if content is None:
                logger.warning(
                    "%s returned no message content (finish_reason=%s); using ''",
                    self.model,
                    response.choices[0].finish_reason,
                )
            return content or ""
        response = self.client.completions.create(**kwargs)
        if not response.choices:
            raise BackendError(f"{self.base_url}: the response has no choices")
        return response.choices[0].text or ""

    def access_error(self, status: int, err: Exception) -> AccessError:
        """The one-line error for a 401 / 403 / 404: endpoint, model, what it means, where the key came from and
        what to do. The server's own message is left out for 401 (OpenAI's quotes part of the key); for 403 / 404
        it follows with anything key-like masked."""
        url = self.base_url.rstrip("/")
        message = f"{url} refused the request for {self.model!r}: {type(err).__name__} {status}: "
        message += ACCESS_PROBLEMS[status] + "; "
        if status == 401:
            message += f"the key comes from {self.key_source}; fix the key and rerun the same command"
        elif status == 403:
            message += f"the key comes from {self.key_source}; use a key with access, or another {self.model_flag}"
        else:
            message += f"check {self.model_flag} and the base URL (GET {url}/models lists the models)"
        server = _server_message(err)
        if server and status != 401:
            key = str(getattr(self.client, "api_key", "") or "")
            if len(key) >= 4:
                server = server.replace(key, "<key>")
            message += f"; the server said: {_KEY_LIKE.sub('<key>', server)}"
        return AccessError(message)

    def _retryable(self, err: Exception) -> bool:
        if isinstance(err, self.openai.APIConnectionError):  # includes APITimeoutError
            return True
        if isinstance(err, self.openai.APIStatusError):
            return err.status_code in RETRYABLE_STATUS or err.status_code >= 500
        return False

    def _delay(self, err: Exception, attempt: int) -> float:
        response = getattr(err, "response", None)
        headers = getattr(response, "headers", None) or {}
        for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
            value = headers.get(name)
            if value is not None:
                try:
                    return min(self.max_retry_delay, max(0.0, float(value) * scale))
                except ValueError:  # an HTTP date: fall back to our own backoff
                    break
        delay = min(self.max_retry_delay, self.retry_base_delay * 2**attempt)
        return delay * self._jitter.uniform(0.5, 1.0)

    def _with_retries(self, prompt: str, params: GenParams) -> str:
        for attempt in range(self.max_retries + 1):
            try:
                return self._call(prompt, params)
            except self.openai.OpenAIError as err:
                status = getattr(err, "status_code", None)
                what = f"{type(err).__name__}" + (f" {status}" if status else "")
                if status in ACCESS_PROBLEMS:
                    raise self.access_error(status, err) from None  # the chained error would repeat the key's text
                if not self._retryable(err):
                    raise BackendError(
                        f"{self.base_url} refused the request for {self.model!r}: {what}: {err}"
                    ) from err
                if attempt == self.max_retries:
                    raise BackendError(
                        f"{self.base_url}: {what} after {attempt + 1} attempts; rerun the same command later to "
                        f"resume (or raise --max_retries): {err}"
                    ) from err
                delay = self._delay(err, attempt)
                logger.warning(
                    "%s (%s); retry %d/%d in %.2fs", what, self.base_url, attempt + 1, self.max_retries, delay
                )
                time.sleep(delay)
        raise AssertionError("unreachable")


def _server_message(err: Exception) -> str:
    """The `error.message` of an OpenAI-style error body, on one line and at most 200 characters."""
    body = getattr(err, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
    if not isinstance(message, str):
        return ""
    message = " ".join(message.split())
    return message if len(message) <= 200 else message[:197] + "..."
