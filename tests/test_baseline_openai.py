"""The OpenAI path of run_baseline_lm.py against a real OpenAI-compatible HTTP server on 127.0.0.1.

`JudgeServer` (tests/openai_server.py: stdlib `http.server`, in a thread) serves /v1/chat/completions and /v1/completions with
answers derived from the prompt, records every request, and can fail on purpose (429 / 5xx / 401 / a stall).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from pathlib import Path

import pytest
from openai_server import JudgeServer

from selfrag.backends.base import GenParams
from selfrag.backends.openai_chat import OpenAIBackend, resolve_api_key
from selfrag.errors import BackendError, ConfigError

pytest.importorskip("openai")

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("run_baseline_lm", ROOT / "retrieval_lm" / "run_baseline_lm.py")
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)

ITEMS = [
    {
        "question": "Who wrote Hamlet?",
        "answers": ["Shakespeare"],
        "ctxs": [{"title": "Hamlet", "text": "Hamlet is a tragedy by William Shakespeare."}],
    },
    {
        "question": "What is the capital of France?",
        "answers": ["Paris"],
        "ctxs": [{"title": "Paris", "text": "Paris is the capital of France."}],
    },
    {
        "question": "In what country is Kyoto?",
        "answers": ["Japan"],
        "ctxs": [{"title": "Kyoto", "text": "Kyoto is a city in Japan."}],
    },
]
# The stub answers from these keywords; other prompts get "no idea <hash>".
KNOWN = {"Hamlet": "William Shakespeare", "France": "Paris, of course.", "Kyoto": "It is in China."}


def answer_for(prompt: str) -> str:
    for key, answer in KNOWN.items():
        if key in prompt:
            return answer
    return "no idea " + hashlib.sha1(prompt.encode()).hexdigest()[:8]


@pytest.fixture(autouse=True)
def no_ambient_openai_settings(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def write_jsonl(path: Path, items) -> str:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return str(path)


def api_args(server, tmp_path, *extra, model="gpt-3.5-turbo", items=ITEMS):
    return [
        "--model_name",
        model,
        "--base_url",
        server.base_url,
        "--api_key",
        "sk-test",
        "--input_file",
        write_jsonl(tmp_path / "in.jsonl", items),
        "--result_fp",
        str(tmp_path / "out.json"),
        "--max_new_tokens",
        "20",
        "--retry_base_delay",
        "0.01",
        *extra,
    ]


def test_chat_baseline_end_to_end(tmp_path):
    with JudgeServer(answer_for) as server:
        assert script.main(api_args(server, tmp_path, "--metric", "match")) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    # The user message is the bare question; greedy; max_tokens from --max_new_tokens.
    expected = [
        {
            "model": "gpt-3.5-turbo",
            "messages": [{"role": "user", "content": item["question"]}],
            "max_tokens": 20,
            "temperature": 0.0,
        }
        for item in ITEMS
    ]
    assert sorted(server.bodies(), key=json.dumps) == sorted(expected, key=json.dumps)
    assert {r["path"] for r in server.requests} == {"/v1/chat/completions"}
    assert {r["authorization"] for r in server.requests} == {"Bearer sk-test"}
    assert out["prompts"] == [item["question"] for item in ITEMS]
    assert out["preds"] == ["William Shakespeare", "Paris, of course.", "It is in China."]
    assert out["metric_results"] == [1.0, 1.0, 0.0]
    assert out["metrics"]["match"] == pytest.approx(2 / 3) and out["metrics"]["exact_match"] == 0.0
    assert out["config"]["backend"] == "openai" and out["config"]["prompt_name"] == "chat_user"
    for path in tmp_path.iterdir():  # a key given on the command line is never written out
        assert "sk-test" not in path.read_text(), path
    assert out["config"]["api_key"] == "<redacted>"


def test_chat_retrieval_puts_passages_before_the_question(tmp_path):
    with JudgeServer(answer_for) as server:
        assert script.main(api_args(server, tmp_path, "--mode", "retrieval", "--limit", "1")) == 0
    assert server.bodies() == [
        {
            "model": "gpt-3.5-turbo",
            "max_tokens": 20,
            "temperature": 0.0,
            "messages": [
                {
                    "role": "user",
                    "content": "[1] Hamlet\nHamlet is a tragedy by William Shakespeare.\nWho wrote Hamlet?",
                }
            ],
        }
    ]


def test_compat_original_sends_the_template_at_the_apis_default_temperature(tmp_path):
    with JudgeServer(answer_for) as server:
        assert script.main(api_args(server, tmp_path, "--compat", "original", "--limit", "1")) == 0
    assert server.bodies() == [
        {
            "model": "gpt-3.5-turbo",
            "max_tokens": 20,
            "temperature": 1.0,
            "messages": [{"role": "user", "content": "### Instruction:\nWho wrote Hamlet?\n\n### Response:\n"}],
        }
    ]


def test_completions_api_for_davinci_models(tmp_path):
    with JudgeServer(answer_for) as server:
        assert script.main(api_args(server, tmp_path, "--task", "fever", "--limit", "1", model="text-davinci-003")) == 0
    claim = ITEMS[0]["question"]
    assert server.bodies() == [
        {
            "model": "text-davinci-003",
            "max_tokens": 20,
            "temperature": 0.0,
            "prompt": "### Instruction:\nIs the following statement correct or not? Say true if it's correct; otherwise "
            f"say false.\n\n### Input:\n{claim}\n\n### Response:\n",
        }
    ]
    assert server.requests[0]["path"] == "/v1/completions"
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["raw_preds"] == [" William Shakespeare"] and out["preds"] == ["William Shakespeare"]


def test_retries_429_and_5xx_with_backoff_then_succeeds(tmp_path, caplog):
    with JudgeServer(answer_for, failures=[429, 500, 503]) as server, caplog.at_level(logging.WARNING):
        assert script.main(api_args(server, tmp_path, "--limit", "1")) == 0
    assert len(server.requests) == 4  # three failures, then the answer
    assert all(body == server.bodies()[0] for body in server.bodies())
    assert json.loads((tmp_path / "out.json").read_text())["preds"] == ["William Shakespeare"]
    retries = [m for m in caplog.messages if "retry" in m]
    assert [m.split(" (")[0] for m in retries] == [
        "RateLimitError 429",
        "InternalServerError 500",
        "InternalServerError 503",
    ]
    assert retries[0].endswith("retry 1/6 in 0.00s")  # Retry-After: 0 from the server wins over the backoff
    assert float(retries[2].rsplit(" ", 1)[1][:-1]) <= 0.04  # 0.01 * 2**2, times jitter in [0.5, 1]


def test_a_stalled_request_times_out_and_is_retried(tmp_path):
    with JudgeServer(answer_for, failures=["stall"], stall_s=1.0) as server:
        assert script.main(api_args(server, tmp_path, "--limit", "1", "--request_timeout", "0.3")) == 0
    assert len(server.requests) == 2
    assert json.loads((tmp_path / "out.json").read_text())["preds"] == ["William Shakespeare"]


def test_exhausted_retries_stop_the_run_and_a_rerun_resumes(tmp_path, caplog):
    args = ["--batch_size", "1", "--max_retries", "2"]
    # Item 0 succeeds, item 1 fails three times: the run stops with item 0 saved.
    with JudgeServer(answer_for, failures=[None, 500, 500, 500]) as server, caplog.at_level(logging.ERROR):
        assert script.run_main(script.main, api_args(server, tmp_path, *args)) == 2
    assert "InternalServerError 500 after 3 attempts" in caplog.text
    partial = (tmp_path / "out.json.partial.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in partial[1:]] == [0]
    with JudgeServer(answer_for) as server:
        assert script.main(api_args(server, tmp_path, *args)) == 0
    asked = sorted(b["messages"][0]["content"] for b in server.bodies())
    assert asked == sorted([ITEMS[1]["question"], ITEMS[2]["question"]])  # only the items not done before
    assert json.loads((tmp_path / "out.json").read_text())["preds"][0] == "William Shakespeare"


def test_client_errors_are_not_retried(tmp_path, caplog):
    with JudgeServer(answer_for, failures=[401]) as server, caplog.at_level(logging.ERROR):
        assert script.run_main(script.main, api_args(server, tmp_path, "--limit", "1")) == 2
    assert len(server.requests) == 1
    assert "refused the request for 'gpt-3.5-turbo': AuthenticationError 401" in caplog.text


def test_a_rejected_key_stops_after_one_request_with_one_line(tmp_path, caplog):
    """Three items and 8 requests allowed in flight: the first request goes alone, its 401 stops the run with one
    line naming the endpoint, the model and where the key came from, never the key (OpenAI's 401 quotes it)."""
    with JudgeServer(answer_for, api_key="sk-the-right-one") as server, caplog.at_level(logging.INFO):
        assert script.run_main(script.main, api_args(server, tmp_path, "--concurrency", "8")) == 2
    assert len(server.requests) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        f"AccessError: {server.base_url} refused the request for 'gpt-3.5-turbo': AuthenticationError 401: the API "
        "key was rejected; the key comes from --api_key (given on the command line); fix the key and rerun the "
        "same command"
    ]
    assert "sk-te" not in caplog.text
    assert not (tmp_path / "out.json").exists() and not (tmp_path / "out.json.partial.jsonl").exists()


def test_concurrency_limit_holds(tmp_path):
    items = [{"question": f"Question {i}?", "answers": ["x"]} for i in range(6)]
    with JudgeServer(answer_for, delay_s=0.1) as server:
        args = api_args(server, tmp_path, "--batch_size", "6", "--concurrency", "2", items=items)
        assert script.main(args) == 0
    assert len(server.requests) == 6
    assert server.max_in_flight == 2


def test_api_key_from_file_environment_or_placeholder(tmp_path, monkeypatch):
    key_file = tmp_path / "openai.key"
    key_file.write_text("sk-from-file\n")
    assert resolve_api_key(str(key_file)) == "sk-from-file"
    assert resolve_api_key("sk-literal") == "sk-literal"
    with pytest.raises(ConfigError, match="no such file"):
        resolve_api_key(str(tmp_path / "missing.key"))
    with pytest.raises(ConfigError, match="set OPENAI_API_KEY"):
        resolve_api_key(None)
    assert resolve_api_key(None, "http://127.0.0.1:1/v1") == "EMPTY"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    assert resolve_api_key(None) == "sk-from-env"

    with JudgeServer(answer_for) as server:
        args = api_args(server, tmp_path, "--limit", "1")
        args[args.index("sk-test")] = str(key_file)
        assert script.main(args) == 0
        assert server.requests[0]["authorization"] == "Bearer sk-from-file"


def test_missing_key_for_the_openai_api_stops_before_any_request(tmp_path, caplog):
    args = [
        "--model_name",
        "gpt-3.5-turbo",
        "--input_file",
        write_jsonl(tmp_path / "in.jsonl", ITEMS),
        "--result_fp",
        str(tmp_path / "out.json"),
    ]
    with caplog.at_level(logging.ERROR):
        assert script.run_main(script.main, args) == 2
    assert "needs a key: set OPENAI_API_KEY" in caplog.text


def test_backend_refuses_watched_token_ids():
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", api_key="k")
    with pytest.raises(BackendError, match="no log-probabilities"):
        backend.generate(["x"], GenParams(watch_token_ids=(1, 2)))
    assert backend.generate([], GenParams()) == []
