"""Label items for one reflection aspect with a judge model behind an OpenAI-compatible chat API.

This replaces the original `dc/critic/gpt4_reward/chatgpt_*.py` scripts (openai 0.28, docs/original_selfrag.md
§8.1) with one runner for all five aspects:

- any OpenAI-compatible endpoint (`--base_url`; key from `--api_key` value or file, else OPENAI_API_KEY), through
  `OpenAIBackend`'s client, retries with backoff (429 / 5xx / timeouts, honouring Retry-After) and concurrency;
- an on-disk request cache (sqlite) keyed by a SHA-256 of (model, messages, max_tokens, temperature): a reply is
  stored as soon as it arrives, before it is parsed, so no rerun, resume or garbage reply is ever paid twice
  (identical requests in one run are sent once);
- resume through a `JsonlCheckpoint` (`<output>.partial.jsonl`); requests that still fail after all retries are
  written to the rejects file *and* retried by the next run (rerun the same command);
- a refused key (401), no access (403) or an unknown model (404) is not transient: the run stops at the first one
  with one line naming the endpoint, the model and where the key came from (`AccessError`), records nothing for it
  (no cache entry, no checkpoint line, no output) and exits non-zero. Until one request has been answered, requests
  go one at a time, so a bad key or model name costs one request, not `concurrency`;
- `dry_run`: a cost estimate before anything is sent (prompt tokens ~ characters / 4, plus a per-request
  overhead; completion tokens = `est_output_tokens` per request; only requests not in the cache count);
- after a run, the real token usage reported by the server, summed over the requests paid in this run;
- every input ends up in exactly one of `<output>` (labelled) and `<output>.rejects.jsonl` (unparseable reply,
  with the reason, or a request that failed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import sqlite3
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from selfrag.backends.openai_chat import OpenAIBackend, api_key_source, resolve_api_key
from selfrag.cli import flag
from selfrag.data import JsonlCheckpoint, clean, load_items, write_json_atomic
from selfrag.data_creation.critic_prompts import ASPECTS, judge_messages
from selfrag.data_creation.labels import parse_label
from selfrag.errors import AccessError, BackendError, ConfigError

logger = logging.getLogger(__name__)

# Rough chat-format overhead per request (role markers, priming of the reply), in tokens.
REQUEST_OVERHEAD_TOKENS = 7


@dataclass
class CriticLabelConfig:
    input_file: str = flag(
        "json / jsonl items to label (fields per aspect: see selfrag/data_creation/critic_prompts.py)."
    )
    output_file: str = flag("Labelled items (.json list or .jsonl); rejects go to <output_file>.rejects.jsonl.")
    aspect: str = flag(f"Reflection aspect to label: one of {sorted(ASPECTS)}.")
    model: str = flag("Judge model name sent to the API.", default="gpt-4")
    base_url: str | None = flag(
        "OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1 (default: OpenAI).", default=None
    )
    api_key: str | None = flag("API key, or a file holding it (default: OPENAI_API_KEY).", default=None)
    cache_file: str | None = flag("sqlite request cache (default: <output_file>.cache.sqlite).", default=None)
    concurrency: int = flag("Requests in flight at once.", default=8)
    max_retries: int = flag("Retries of one request on 429 / 5xx / timeouts.", default=6)
    retry_base_delay: float = flag("Seconds before the first retry (doubled each retry, with jitter).", default=1.0)
    timeout: float = flag("Seconds before one request is abandoned (and retried).", default=60.0)
    max_tokens: int = flag("max_tokens of each judge reply (the original's 200).", default=200)
    temperature: float = flag("Sampling temperature of the judge.", default=0.0)
    n: int | None = flag("Label a seeded random sample of this many items (default: all).", default=None)
    seed: int = flag("Seed of the --n sample.", default=0)
    dry_run: bool = flag("Only print the cost estimate; send nothing.", default=False)
    est_output_tokens: int = flag("Completion tokens assumed per request by the estimate.", default=60)
    price_input_per_1k: float = flag("Price per 1,000 prompt tokens (default: GPT-4 8k list price, USD).", default=0.03)
    price_output_per_1k: float = flag("Price per 1,000 completion tokens (GPT-4 8k list price, USD).", default=0.06)

    def __post_init__(self) -> None:
        if self.aspect not in ASPECTS:
            raise ConfigError(f"--aspect {self.aspect!r}: choose one of {sorted(ASPECTS)}")
        if self.concurrency < 1 or self.max_retries < 0 or self.max_tokens < 1:
            raise ConfigError("--concurrency and --max_tokens must be at least 1, --max_retries at least 0")
        if self.n is not None and self.n < 1:
            raise ConfigError("--n must be at least 1")


def request_body(model: str, messages: list[dict[str, str]], max_tokens: int, temperature: float) -> dict[str, Any]:
    return {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}


def cache_key(body: Mapping[str, Any]) -> str:
    """SHA-256 of the request body (model, messages, params) in canonical JSON."""
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class JudgeCache:
    """Judge replies on disk (sqlite), by `cache_key`; safe to share between threads and runs."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, body TEXT, reply TEXT)")
        self._db.commit()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, body: Mapping[str, Any], reply: Mapping[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO replies VALUES (?, ?, ?)", (key, json.dumps(body), json.dumps(reply))
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class JudgeClient(OpenAIBackend):
    """`OpenAIBackend`'s client, retries and backoff, sending whole chat bodies and keeping the token usage."""

    def __init__(self, model: str, **kwargs: Any) -> None:
        super().__init__(model, api="chat", **kwargs)

    def _call(self, body: Mapping[str, Any], params: Any) -> dict[str, Any]:  # type: ignore[override]
        response = self.client.chat.completions.create(**body)
        if not response.choices:
            raise BackendError(f"{self.base_url}: the response has no choices")
        usage = response.usage
        return {
            "text": response.choices[0].message.content or "",
            "prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
            "completion_tokens": getattr(usage, "completion_tokens", 0) or 0,
        }

    def complete(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """One reply `{text, prompt_tokens, completion_tokens}`; raises `BackendError` once retries are spent."""
        return self._with_retries(body, None)  # type: ignore[arg-type]


def judge_client(model: str, config: Any, model_flag: str = "--model") -> JudgeClient:
    """A `JudgeClient` for `model` with `config`'s connection settings (base_url, api_key, concurrency, retries,
    timeout): `CriticLabelConfig` and the critic-inference config share them. `model_flag` names the flag that set
    the model, for the message of an unknown model."""
    return JudgeClient(
        model,
        base_url=config.base_url,
        api_key=resolve_api_key(config.api_key, config.base_url),
        concurrency=config.concurrency,
        max_retries=config.max_retries,
        retry_base_delay=config.retry_base_delay,
        timeout=config.timeout,
        key_source=api_key_source(config.api_key, config.base_url),
        model_flag=model_flag,
    )


def estimate_tokens(text: str) -> int:
    """A rough token count (about 4 characters per token for English), for cost estimates only."""
    return math.ceil(len(text) / 4)


def select_items(items: list[dict[str, Any]], n: int | None, seed: int) -> list[dict[str, Any]]:
    """All items, or a seeded sample of `n` of them kept in file order."""
    if n is None or n >= len(items):
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


def _fingerprint(config: CriticLabelConfig) -> dict[str, Any]:
    keys = ("input_file", "aspect", "model", "max_tokens", "temperature", "n", "seed")
    return {k: getattr(config, k) for k in keys}


def cost(prompt_tokens: int, completion_tokens: int, config: CriticLabelConfig) -> float:
    return round(
        prompt_tokens / 1000 * config.price_input_per_1k + completion_tokens / 1000 * config.price_output_per_1k, 6
    )


def estimate_cost(bodies: Sequence[Mapping[str, Any]], cache: JudgeCache, config: CriticLabelConfig) -> dict[str, Any]:
    """What the run would pay: requests not in the cache, their estimated tokens and cost."""
    todo = [b for b in bodies if cache.get(cache_key(b)) is None]
    prompt = sum(sum(estimate_tokens(m["content"]) for m in b["messages"]) + REQUEST_OVERHEAD_TOKENS for b in todo)
    completion = len(todo) * config.est_output_tokens
    return {
        "requests": len(todo),
        "cached": len(bodies) - len(todo),
        "est_prompt_tokens": prompt,
        "est_completion_tokens": completion,
        "est_cost": cost(prompt, completion, config),
    }


def rejects_path(output_file: str) -> str:
    return output_file + ".rejects.jsonl"


def _write_items(path: str, records: list[dict[str, Any]]) -> None:
    if path.endswith(".json"):
        write_json_atomic(path, records)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _label_one(index: int, body: dict[str, Any], aspect: str, client: JudgeClient | None, cache: JudgeCache) -> dict:
    key = cache_key(body)
    reply = cache.get(key)
    cached = reply is not None
    if reply is None:
        assert client is not None
        try:
            reply = client.complete(body)
        except AccessError:
            raise  # not transient: the run stops, nothing is recorded for this item
        except BackendError as err:
            return {"index": index, "status": "failed", "reason": f"request failed: {err}", "cached": False}
        cache.put(key, body, reply)
    parsed = parse_label(aspect, reply["text"])
    record = {
        "index": index,
        "status": "labelled" if parsed.ok else "rejected",
        "raw_output": reply["text"],
        "cached": cached,
        "prompt_tokens": 0 if cached else reply["prompt_tokens"],
        "completion_tokens": 0 if cached else reply["completion_tokens"],
    }
    if parsed.ok:
        record.update(label=parsed.label, explanation=parsed.explanation)
    else:
        record["reason"] = parsed.reason
    return record


class JudgeSender:
    """Sends the judge requests of one run: one at a time until the endpoint has answered one (so a refused key or
    an unknown model costs a single request), then `concurrency` at a time; after an `AccessError` no further
    request is sent and the error reaches the caller."""

    def __init__(self, aspect: str, client: JudgeClient | None, cache: JudgeCache) -> None:
        self.aspect, self.client, self.cache = aspect, client, cache
        self.stopped = threading.Event()
        self.answered = False  # the endpoint took the key and the model once

    def one(self, index: int, body: dict[str, Any]) -> dict[str, Any] | None:
        """The record of one request (None when an `AccessError` stopped the run before it was sent)."""
        if self.stopped.is_set():
            return None
        try:
            record = _label_one(index, body, self.aspect, self.client, self.cache)
        except AccessError:
            self.stopped.set()
            raise
        if record["status"] != "failed" and not record["cached"]:
            self.answered = True
        return record

    def many(self, pool: ThreadPoolExecutor, requests: Sequence[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Records of `(index, body)` requests, in their order."""
        records = []
        position = 0
        while position < len(requests) and not self.answered:
            records.append(self.one(*requests[position]))
            position += 1
        records.extend(pool.map(lambda request: self.one(*request), requests[position:]))
        return records


def label_items(config: CriticLabelConfig, client: JudgeClient | None = None) -> dict[str, Any]:
    """Label `config.input_file` for `config.aspect`; return the dry-run estimate or the run summary.

    `client` is built from the config when None (tests may pass one). Writes `config.output_file` (labelled
    items: the input fields plus `aspect`, `label`, `explanation`, `raw_output`) and its `.rejects.jsonl`
    (the input fields plus `aspect`, `reason`, `raw_output`), both in input order.
    """
    aspect = config.aspect
    items = select_items(load_items(config.input_file), config.n, config.seed)
    # Build every request first: a bad input item fails here, before anything is paid.
    bodies = [
        request_body(config.model, judge_messages(aspect, item), config.max_tokens, config.temperature)
        for item in items
    ]
    cache = JudgeCache(config.cache_file or config.output_file + ".cache.sqlite")
    try:
        checkpoint = JsonlCheckpoint(config.output_file + ".partial.jsonl", _fingerprint(config))
        done = {i: r for i, r in checkpoint.load().items() if r["status"] != "failed"}
        todo = [i for i in range(len(items)) if i not in done]
        estimate = estimate_cost([bodies[i] for i in todo], cache, config)
        logger.info(
            "%s: %d items, %d to do; %d requests to send (%d cached), ~%d prompt + ~%d completion tokens, ~%.4f",
            aspect,
            len(items),
            len(todo),
            estimate["requests"],
            estimate["cached"],
            estimate["est_prompt_tokens"],
            estimate["est_completion_tokens"],
            estimate["est_cost"],
        )
        if config.dry_run:
            return {"dry_run": True, "items": len(items), "todo": len(todo), **estimate}
        if client is None and estimate["requests"]:
            client = judge_client(config.model, config)
        new: list[dict[str, Any]] = []
        batch_size = config.concurrency * 4
        sender = JudgeSender(aspect, client, cache)
        with ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="judge") as pool:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                # Identical requests in one batch: send the first, let the others read it from the cache.
                firsts: dict[str, int] = {}
                for i in batch:
                    firsts.setdefault(cache_key(bodies[i]), i)
                first = set(firsts.values())
                records = sender.many(pool, [(i, bodies[i]) for i in sorted(first)])
                records += [_label_one(i, bodies[i], aspect, client, cache) for i in batch if i not in first]
                records.sort(key=lambda r: r["index"])
                checkpoint.append(records)
                new.extend(records)
        by_index = {**done, **{r["index"]: r for r in new}}
        labelled, rejects = [], []
        for i, item in enumerate(items):
            record = by_index[i]
            out = {**clean(item), "aspect": aspect}
            if record["status"] == "labelled":
                labelled.append(
                    {
                        **out,
                        "label": record["label"],
                        "explanation": record["explanation"],
                        "raw_output": record["raw_output"],
                    }
                )
            else:
                rejects.append({**out, "reason": record["reason"], "raw_output": record.get("raw_output")})
        _write_items(config.output_file, labelled)
        _write_items(rejects_path(config.output_file), rejects)
        failed = sum(r["status"] == "failed" for r in new)
        paid = [r for r in new if r["status"] != "failed" and not r["cached"]]
        prompt_tokens = sum(r["prompt_tokens"] for r in paid)
        completion_tokens = sum(r["completion_tokens"] for r in paid)
        summary = {
            "items": len(items),
            "labelled": len(labelled),
            "rejected": len(rejects) - failed,
            "failed": failed,
            "requests_paid": len(paid),
            "cache_hits": sum(r.get("cached", False) for r in new),
            "resumed": len(done),
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cost": cost(prompt_tokens, completion_tokens, config),
            "labels": dict(sorted(Counter(r["label"] for r in labelled).items())),
            "estimate": estimate,
        }
        if failed:
            logger.warning(
                "%d requests failed after all retries (listed in %s); rerun the same command to retry them",
                failed,
                rejects_path(config.output_file),
            )
        else:
            checkpoint.path.unlink(missing_ok=True)
        return summary
    finally:
        cache.close()


def config_dict(config: CriticLabelConfig) -> dict[str, Any]:
    """The config without the key (for logs and the usage file)."""
    return {k: v for k, v in asdict(config).items() if k != "api_key"}
