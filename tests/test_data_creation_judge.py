"""Judge labelling (selfrag/data_creation/judge.py, data_creation/critic_label.py) against a real HTTP server.

`tests/openai_server.JudgeServer` is a deterministic OpenAI-compatible judge on 127.0.0.1; its fault modes
return 429 / 500 / a stall past the client's timeout / garbage labels. Checked: nothing lost (every input is
labelled or in the rejects file), nothing paid twice on rerun (the server's request counter does not move),
exact labels, the dry-run estimate and the usage totals.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
from openai_server import JudgeServer

from selfrag.data_creation.critic_prompts import judge_prompt
from selfrag.data_creation.judge import CriticLabelConfig, JudgeCache, cache_key, label_items, request_body

pytest.importorskip("openai")

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("critic_label", ROOT / "data_creation" / "critic_label.py")
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)

ITEMS = [
    {
        "instruction": "What is the capital of France?",
        "evidence": {"title": "Paris", "text": "Paris is the capital of France."},
    },
    {"instruction": "Who wrote Hamlet?", "evidence": "Kyoto\nKyoto is a city in Japan."},
    {"instruction": "Name a prime number.", "input": "Between 10 and 14.", "evidence": "Primes\n13 is a prime."},
    {"instruction": "Summarise the GARBAGE report.", "evidence": "Report\nSales rose."},
]
REPLIES = {  # keyword of the instruction -> the judge's reply
    "France": "[Relevant]\nExplanation: it names the capital.",
    "Hamlet": "Irrelevant\n\nExplanation: off topic.",
    "prime": "Rating: [Relevant]",
    "GARBAGE": "I am not sure about this one.",
}
LABELS = ["[Relevant]", "[Irrelevant]", "[Relevant]"]
GARBAGE_REASON = (
    "no relevance label ['[Relevant]', '[Irrelevant]'] at the start of the first line: 'I am not sure about this one.'"
)


def reply(content: str) -> str:
    task = content.split("Task instruction: ", 1)[1]
    return next(text for key, text in REPLIES.items() if key in task)


def write_items(path: Path, items) -> str:
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return str(path)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def make_config(tmp_path, server=None, **overrides) -> CriticLabelConfig:
    values = dict(
        input_file=write_items(tmp_path / "in.jsonl", ITEMS),
        output_file=str(tmp_path / "out" / "relevance.jsonl"),
        aspect="relevance",
        base_url=server.base_url if server else "http://127.0.0.1:9/v1",
        api_key="test-key",
        concurrency=2,
        max_retries=3,
        retry_base_delay=0.01,
        timeout=5.0,
    )
    values.update(overrides)
    return CriticLabelConfig(**values)


def check_nothing_lost(config, n_labelled, n_rejects):
    labelled = read_jsonl(config.output_file)
    rejects = read_jsonl(config.output_file + ".rejects.jsonl")
    assert (len(labelled), len(rejects)) == (n_labelled, n_rejects)
    seen = sorted(r["instruction"] for r in labelled + rejects)
    assert seen == sorted(item["instruction"] for item in ITEMS)
    return labelled, rejects


def test_labels_usage_and_rerun_pays_nothing(tmp_path):
    with JudgeServer(reply) as server:
        config = make_config(tmp_path, server)
        summary = label_items(config)
        labelled, rejects = check_nothing_lost(config, 3, 1)
        assert [r["label"] for r in labelled] == LABELS
        assert [r["instruction"] for r in labelled] == [ITEMS[i]["instruction"] for i in (0, 1, 2)]
        assert labelled[0] == {
            **ITEMS[0],
            "aspect": "relevance",
            "label": "[Relevant]",
            "explanation": "it names the capital.",
            "raw_output": REPLIES["France"],
        }
        assert rejects == [
            {**ITEMS[3], "aspect": "relevance", "reason": GARBAGE_REASON, "raw_output": REPLIES["GARBAGE"]}
        ]
        # The requests: model gpt-4 by default, the judge prompt, the key, in any order (concurrency 2).
        assert len(server.requests) == 4
        assert {r["authorization"] for r in server.requests} == {"Bearer test-key"}
        bodies = sorted((r["body"] for r in server.requests), key=lambda b: b["messages"][0]["content"])
        expected = sorted(
            (
                request_body("gpt-4", [{"role": "user", "content": judge_prompt("relevance", it)}], 200, 0.0)
                for it in ITEMS
            ),
            key=lambda b: b["messages"][0]["content"],
        )
        assert bodies == expected
        # Usage: the server's own counts, summed.
        prompt = sum(a["usage"]["prompt_tokens"] for a in server.answered)
        completion = sum(a["usage"]["completion_tokens"] for a in server.answered)
        assert (summary["prompt_tokens"], summary["completion_tokens"]) == (prompt, completion)
        assert completion == 6 + 4 + 2 + 7  # words of the four replies
        assert summary["cost"] == round(prompt / 1000 * 0.03 + completion / 1000 * 0.06, 6)
        assert {k: summary[k] for k in ("items", "labelled", "rejected", "failed", "requests_paid", "cache_hits")} == {
            "items": 4,
            "labelled": 3,
            "rejected": 1,
            "failed": 0,
            "requests_paid": 4,
            "cache_hits": 0,
        }
        assert summary["labels"] == {"[Irrelevant]": 1, "[Relevant]": 2}
        assert not Path(config.output_file + ".partial.jsonl").exists()
        first = Path(config.output_file).read_text()

        # Rerun: every reply (the garbage one too) comes from the cache; the server sees nothing.
        again = label_items(config)
        assert len(server.requests) == 4
        assert (again["requests_paid"], again["cache_hits"], again["prompt_tokens"], again["cost"]) == (0, 4, 0, 0.0)
        assert Path(config.output_file).read_text() == first
        check_nothing_lost(config, 3, 1)


def test_faults_retried_and_failures_retried_by_rerun(tmp_path):
    # One 429, one 500 and one stall past the timeout, then a persistent 500 for the Hamlet item.
    with JudgeServer(reply, failures=[429, 500, "stall"], always_fail=("Hamlet", 500), stall_s=0.8) as server:
        config = make_config(tmp_path, server, concurrency=1, max_retries=3, timeout=0.4)
        summary = label_items(config)
        assert (summary["labelled"], summary["rejected"], summary["failed"]) == (2, 1, 1)
        labelled, rejects = check_nothing_lost(config, 2, 2)
        assert [r["label"] for r in labelled] == ["[Relevant]", "[Relevant]"]
        failed = [r for r in rejects if r["reason"].startswith("request failed")]
        assert [r["instruction"] for r in failed] == ["Who wrote Hamlet?"] and failed[0]["raw_output"] is None
        assert "InternalServerError 500 after 4 attempts" in failed[0]["reason"]
        # 3 paid answers; 3 injected faults + 4 attempts of the failing item were not answered.
        assert len(server.answered) == 3 and summary["requests_paid"] == 3
        assert len(server.requests) == 3 + 3 + 4
        assert Path(config.output_file + ".partial.jsonl").exists()  # kept: a rerun retries the failure

        # The server recovers; the rerun sends exactly the one failed request.
        server.always_fail = None
        again = label_items(config)
        assert len(server.requests) == 3 + 3 + 4 + 1 and len(server.answered) == 4
        assert (again["resumed"], again["requests_paid"], again["failed"], again["labelled"]) == (3, 1, 0, 3)
        labelled, rejects = check_nothing_lost(config, 3, 1)
        assert [r["label"] for r in labelled] == LABELS
        assert rejects[0]["reason"] == GARBAGE_REASON
        assert not Path(config.output_file + ".partial.jsonl").exists()


def test_concurrency_limit(tmp_path):
    items = [{"instruction": f"What is the capital of France? ({k})", "evidence": "Paris\nParis."} for k in range(8)]
    with JudgeServer(lambda content: "[Relevant]", delay_s=0.05) as server:
        config = make_config(tmp_path, server, concurrency=3)
        config.input_file = write_items(tmp_path / "many.jsonl", items)
        summary = label_items(config)
        assert summary["labelled"] == 8 and len(server.requests) == 8
        assert 2 <= server.max_in_flight <= 3


def test_resume_after_a_crash(tmp_path, monkeypatch):
    import selfrag.data_creation.judge as judge

    with JudgeServer(reply) as server:
        config = make_config(tmp_path, server, concurrency=1)  # batches of 4 items
        config.input_file = write_items(tmp_path / "in.jsonl", ITEMS + ITEMS[:2])
        real, calls = judge._label_one, []

        def crash_in_second_batch(index, *args):
            if index >= 4:
                raise KeyboardInterrupt
            calls.append(index)
            return real(index, *args)

        monkeypatch.setattr(judge, "_label_one", crash_in_second_batch)
        with pytest.raises(KeyboardInterrupt):
            label_items(config)
        assert calls == [0, 1, 2, 3] and len(server.requests) == 4
        monkeypatch.setattr(judge, "_label_one", real)
        summary = label_items(config)
        # Items 4 and 5 repeat items 0 and 1: same request, served by the cache.
        assert (summary["resumed"], summary["cache_hits"], summary["requests_paid"]) == (4, 2, 0)
        assert len(server.requests) == 4
        assert [r["label"] for r in read_jsonl(config.output_file)] == LABELS + LABELS[:2]


def test_dry_run_estimate_then_script_run(tmp_path, monkeypatch, capsys):
    input_file = write_items(tmp_path / "in.jsonl", ITEMS)
    out = str(tmp_path / "labels.json")
    argv = [
        "--aspect",
        "relevance",
        "--input_file",
        input_file,
        "--output_file",
        out,
        "--concurrency",
        "2",
        "--retry_base_delay",
        "0.01",
        "--price_input_per_1k",
        "0.01",
        "--price_output_per_1k",
        "0.02",
    ]
    prompt_tokens = sum(math.ceil(len(judge_prompt("relevance", it)) / 4) + 7 for it in ITEMS)
    # Dry run: nothing is sent (the base URL is a closed port), the estimate is printed.
    assert script.main([*argv, "--dry_run", "--base_url", "http://127.0.0.1:9/v1"]) == 0
    estimate = json.loads(capsys.readouterr().out)
    assert estimate == {
        "dry_run": True,
        "items": 4,
        "todo": 4,
        "requests": 4,
        "cached": 0,
        "est_prompt_tokens": prompt_tokens,
        "est_completion_tokens": 4 * 60,
        "est_cost": round(prompt_tokens / 1000 * 0.01 + 240 / 1000 * 0.02, 6),
    }
    assert not Path(out).exists()

    key_file = tmp_path / "key.txt"
    key_file.write_text("sk-from-file\n")
    with JudgeServer(reply) as server:
        assert script.main([*argv, "--base_url", server.base_url, "--api_key", str(key_file)]) == 0
        assert {r["authorization"] for r in server.requests} == {"Bearer sk-from-file"}
        summary = json.loads(capsys.readouterr().out)
        usage = json.loads(Path(out + ".usage.json").read_text())
        assert (
            usage["prompt_tokens"]
            == summary["prompt_tokens"]
            == sum(a["usage"]["prompt_tokens"] for a in server.answered)
        )
        assert "api_key" not in usage["config"]
        assert [r["label"] for r in json.loads(Path(out).read_text())] == LABELS
        # A dry run after the run: everything is cached, nothing to pay.
        assert script.main([*argv, "--dry_run"]) == 0
        after = json.loads(capsys.readouterr().out)
        assert (after["requests"], after["cached"], after["est_cost"]) == (0, 4, 0.0)
        # The key from the environment, for a run that needs no request: still fine.
        monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
        assert script.main([*argv, "--base_url", server.base_url]) == 0
        assert len(server.requests) == 4


def test_cache_key_and_store(tmp_path):
    body = request_body("gpt-4", [{"role": "user", "content": "x"}], 200, 0.0)
    assert cache_key(body) == cache_key(dict(reversed(list(body.items()))))
    assert cache_key(body) != cache_key({**body, "model": "gpt-4o"})
    assert cache_key(body) != cache_key({**body, "temperature": 0.5})
    cache = JudgeCache(tmp_path / "c.sqlite")
    cache.put(cache_key(body), body, {"text": "[Relevant]", "prompt_tokens": 1, "completion_tokens": 1})
    cache.close()
    reopened = JudgeCache(tmp_path / "c.sqlite")
    assert reopened.get(cache_key(body))["text"] == "[Relevant]" and len(reopened) == 1
    reopened.close()


def test_bad_input_fails_before_any_request(tmp_path):
    from selfrag.errors import DataFormatError

    with JudgeServer(reply) as server:
        config = make_config(tmp_path, server)
        config.input_file = write_items(tmp_path / "bad.jsonl", [ITEMS[0], {"instruction": "no evidence"}])
        with pytest.raises(DataFormatError, match=r"bad.jsonl:2: field 'evidence'"):
            label_items(config)
        assert server.requests == []


def test_config_errors(tmp_path):
    from selfrag.errors import ConfigError

    with pytest.raises(ConfigError, match="--aspect 'groudness': choose one of"):
        make_config(tmp_path, aspect="groudness")
    with pytest.raises(ConfigError, match="--concurrency"):
        make_config(tmp_path, concurrency=0)


def test_script_as_a_process(tmp_path):
    """The real command line, in a fresh interpreter (no installed package needed)."""
    import os
    import sys

    from procs import run

    input_file = write_items(tmp_path / "in.jsonl", ITEMS)
    out = tmp_path / "rel.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    with JudgeServer(reply) as server:
        cmd = [
            sys.executable,
            str(ROOT / "data_creation" / "critic_label.py"),
            "--aspect",
            "relevance",
            "--input_file",
            input_file,
            "--output_file",
            str(out),
            "--base_url",
            server.base_url,
        ]
        done = run(cmd, env=env, timeout=60, cwd=tmp_path, check=False)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["labelled"] == 3
        assert {r["authorization"] for r in server.requests} == {"Bearer EMPTY"}  # local server, no key
    assert [r["label"] for r in read_jsonl(out)] == LABELS
    bad = run([*cmd[:3], "groudness", *cmd[4:]], env=env, timeout=60, check=False)
    assert bad.returncode == 2 and "ConfigError: --aspect 'groudness'" in bad.stderr


def test_duplicate_requests_in_one_batch_are_paid_once(tmp_path):
    with JudgeServer(reply, delay_s=0.05) as server:
        config = make_config(tmp_path, server, concurrency=8)
        config.input_file = write_items(tmp_path / "dups.jsonl", ITEMS + ITEMS + ITEMS)
        summary = label_items(config)
        assert len(server.requests) == 4
        assert (summary["requests_paid"], summary["cache_hits"], summary["labelled"], summary["rejected"]) == (
            4,
            8,
            9,
            3,
        )
        assert [r["label"] for r in read_jsonl(config.output_file)] == LABELS * 3


# ------------------------------------------------------------------------------ refused key / access / model

RIGHT_KEY, WRONG_KEY = "sk-right-0123456789", "sk-wrong-9876543210"
ACCESS_CASES = {  # status -> (server settings, what the one line says after the endpoint)
    401: (
        {"api_key": RIGHT_KEY},
        "refused the request for 'gpt-4': AuthenticationError 401: the API key was rejected; the key comes from "
        "--api_key (given on the command line); fix the key and rerun the same command",
    ),
    403: (
        {"forbidden": frozenset({"gpt-4"})},
        "refused the request for 'gpt-4': PermissionDeniedError 403: the key has no access to this model or "
        "endpoint; the key comes from --api_key (given on the command line); use a key with access, or another "
        "--model; the server said: Your key may not use the model `gpt-4`.",
    ),
    404: (
        {"models": frozenset({"gpt-4o"})},
        "refused the request for 'gpt-4': NotFoundError 404: no such model at this endpoint (or a wrong base URL); "
        "check --model and the base URL (GET {url}/models lists the models); the server said: The model `gpt-4` "
        "does not exist or you do not have access to it.",
    ),
}


@pytest.mark.parametrize("status", sorted(ACCESS_CASES))
def test_a_refused_key_access_or_model_stops_at_the_first_request(tmp_path, status):
    from selfrag.errors import AccessError

    settings, says = ACCESS_CASES[status]
    with JudgeServer(reply, **settings) as server:
        config = make_config(tmp_path, server, api_key=WRONG_KEY, concurrency=4)
        url = server.base_url
        with pytest.raises(AccessError) as info:
            label_items(config)
        assert str(info.value) == f"{url} {says}".replace("{url}", url)
        assert "\n" not in str(info.value) and "sk-wr" not in str(info.value) and WRONG_KEY not in str(info.value)
        # one request, not one per item or per worker; nothing recorded as done, failed or paid
        assert len(server.requests) == 1 and server.answered == []
        for suffix in ("", ".rejects.jsonl", ".partial.jsonl", ".usage.json"):
            assert not Path(config.output_file + suffix).exists(), suffix
        cache = JudgeCache(config.output_file + ".cache.sqlite")
        assert len(cache) == 0
        cache.close()

        # Fixed (the right key, access granted, the model served): the rerun labels everything, nothing skipped.
        server.api_key, server.forbidden, server.models = None, frozenset(), None
        summary = label_items(config)
        assert (summary["labelled"], summary["rejected"], summary["failed"], summary["resumed"]) == (3, 1, 0, 0)
        assert len(server.requests) == 1 + 4
        check_nothing_lost(config, 3, 1)


def test_transient_errors_before_the_first_answer_are_still_retried(tmp_path):
    """The first request goes alone, but a 429 or 503 on it is retried as before, not taken for a refused key."""
    with JudgeServer(reply, failures=[429, 503]) as server:
        config = make_config(tmp_path, server, concurrency=4)
        summary = label_items(config)
        assert (summary["labelled"], summary["failed"], summary["requests_paid"]) == (3, 0, 4)
        assert len(server.requests) == 2 + 4


def test_refused_key_from_the_environment_as_a_process(tmp_path):
    """critic_label.py with a rejected OPENAI_API_KEY: exit status 2, one line on stderr naming the endpoint, the
    model and the variable (not the key), no traceback, no output files."""
    import os
    import sys

    from procs import run

    input_file = write_items(tmp_path / "in.jsonl", ITEMS)
    out = tmp_path / "rel.jsonl"
    env = {**os.environ, "OPENAI_API_KEY": WRONG_KEY}
    with JudgeServer(reply, api_key=RIGHT_KEY) as server:
        cmd = [sys.executable, ROOT / "data_creation" / "critic_label.py", "--aspect", "relevance"]
        cmd += ["--input_file", input_file, "--output_file", out, "--base_url", server.base_url]
        done = run(cmd, env=env, timeout=120, cwd=tmp_path, check=False)
        assert done.returncode == 2
        assert len(server.requests) == 1
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert [e.split(" ERROR selfrag: ", 1)[1] for e in errors] == [
        f"AccessError: {server.base_url} refused the request for 'gpt-4': AuthenticationError 401: the API key was "
        "rejected; the key comes from the OPENAI_API_KEY variable; fix the key and rerun the same command"
    ]
    assert "Traceback" not in done.stderr and "sk-wr" not in done.stderr + done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "rel.jsonl.cache.sqlite", "rel.jsonl.config.yaml"]
