"""A real OpenAI-compatible chat server on 127.0.0.1 for tests (stdlib `http.server` in a thread).

`JudgeServer(reply)` answers POST /v1/chat/completions with `reply(last user message)` and POST /v1/completions
with `" " + reply(prompt)`, with a deterministic usage (prompt tokens = words of the messages or prompt, completion
tokens = words of the reply). Faults:
- `failures`: consumed one per request before answering: an HTTP status (429 carries `Retry-After: 0`) or
  `"stall"` (sleep `stall_s`, longer than the client's timeout, then answer);
- `always_fail`: `(substring, status)`: every request whose user message contains `substring` gets `status`.
Access, checked before any fault, with OpenAI's error bodies:
- `api_key`: a request whose `Authorization` is not `Bearer <api_key>` gets 401 `invalid_api_key`, whose message
  quotes the key it got, masked as OpenAI does (`sk-ab***yz`), so tests can check that it is never repeated;
- `forbidden`: models the key may not use: 403 `model_not_allowed`;
- `models`: the models served; any other gets 404 `model_not_found`.
`requests` records every request received (`answered` only those that got a 200 reply, i.e. the paid ones).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JudgeServer:
    def __init__(
        self,
        reply: Callable[[str], str],
        failures=(),
        always_fail: tuple[str, int] | None = None,
        stall_s: float = 1.0,
        delay_s: float = 0.0,
        api_key: str | None = None,
        forbidden: frozenset[str] = frozenset(),
        models: frozenset[str] | None = None,
    ):
        self.reply = reply
        self.api_key, self.forbidden, self.models = api_key, forbidden, models
        self.failures = list(failures)
        self.always_fail = always_fail
        self.stall_s, self.delay_s = stall_s, delay_s
        self.requests: list[dict] = []
        self.answered: list[dict] = []
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                content = body["messages"][-1]["content"] if "messages" in body else body.get("prompt", "")
                with server.lock:
                    server.requests.append(
                        {"path": self.path, "body": body, "authorization": self.headers.get("Authorization")}
                    )
                    failure = server.failures.pop(0) if server.failures else None
                    if server.always_fail and server.always_fail[0] in content:
                        failure = server.always_fail[1]
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if self.path not in ("/v1/chat/completions", "/v1/completions"):
                        return self._send(404, {"error": {"message": f"no route {self.path}"}})
                    refused = self._access(body.get("model"))
                    if refused is not None:
                        return self._send(*refused)
                    if failure == "stall":
                        time.sleep(server.stall_s)
                        return self._send(200, self._completion(body, "stalled"))  # the client gave up already
                    if failure is not None:
                        return self._send(
                            failure,
                            {"error": {"message": f"injected failure {failure}", "type": "test"}},
                            {"Retry-After": "0"} if failure == 429 else {},
                        )
                    time.sleep(server.delay_s)
                    payload = self._completion(body, server.reply(content))
                    with server.lock:
                        server.answered.append({"body": body, "usage": payload["usage"]})
                    self._send(200, payload)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _access(self, model):
                """(status, OpenAI error body) when the key, the access or the model is refused, else None."""
                sent = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                if server.api_key is not None and sent != server.api_key:
                    masked = sent[:5] + "*" * max(len(sent) - 7, 0) + sent[-2:] if len(sent) > 7 else sent
                    message = f"Incorrect API key provided: {masked}. You can find your API key in your account."
                    return 401, _error(message, "invalid_api_key")
                if model in server.forbidden:
                    return 403, _error(f"Your key may not use the model `{model}`.", "model_not_allowed")
                if server.models is not None and model not in server.models:
                    message = f"The model `{model}` does not exist or you do not have access to it."
                    return 404, _error(message, "model_not_found")
                return None

            def _completion(self, body, text):
                if "messages" in body:
                    prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
                    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    obj = "chat.completion"
                else:
                    prompt_tokens = len(body["prompt"].split())
                    choice = {"index": 0, "text": " " + text, "finish_reason": "stop", "logprobs": None}
                    obj = "text_completion"
                completion_tokens = len(text.split())
                return {
                    "id": "cmpl-test",
                    "object": obj,
                    "created": 0,
                    "model": body["model"],
                    "choices": [choice],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                }

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> JudgeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def bodies(self) -> list[dict]:
        return [r["body"] for r in self.requests]


def _error(message: str, code: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
