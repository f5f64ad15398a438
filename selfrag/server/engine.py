"""The Self-RAG engine behind the server: a request queue and one worker thread that owns the backend.

Requests wait in a queue; the worker takes up to `batch_size` of them (waiting at most `batch_wait_ms` for more)
and answers those with the same options with one batched Self-RAG call (`selfrag.decoding.short_form.run_batch`,
or `beam_search` for long form), i.e. one backend call per pass for all. Each answer carries the `selfrag`
metadata the API returns: the retrieval decision, the passages, every candidate's or segment's critique scores
and the citations.
"""

from __future__ import annotations

import concurrent.futures
import copy
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple, dataclass, field, replace
from typing import Any

from selfrag.backends import GenerationBackend
from selfrag.backends.base import Generation
from selfrag.decoding.config import DecodingConfig
from selfrag.decoding.long_form import BeamResult, LongFormSettings, beam_search, clean_segment
from selfrag.decoding.short_form import ItemResult, ShortFormSettings, run_batch
from selfrag.errors import ConfigError
from selfrag.grounding import grounded as is_grounded
from selfrag.grounding import judgement, weakest
from selfrag.prompts import chat_template_prompt, format_prompt
from selfrag.scoring import Weights
from selfrag.tokens import ReflectionVocab
from selfrag.views.trace import long_trace, short_trace

logger = logging.getLogger(__name__)


Search = Callable[[list[str], int], list[list[dict[str, Any]]]]


@dataclass(frozen=True)
class RequestOptions:
    """One question and how to answer it: the server's `DecodingConfig` with the request's own values (the same
    knobs as every command's, `selfrag/decoding/config.py`), whether to answer in long form, the request's own
    passages and whether to add the answer trace. Requests whose options differ only in `instruction` / `ctxs` /
    `trace` share a backend call."""

    instruction: str
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    long_form: bool = False
    ctxs: tuple[Mapping[str, Any], ...] | None = None
    trace: bool = False  # add the answer trace (selfrag/views/trace.py) to the response's `selfrag` field

    @property
    def max_tokens(self) -> int:
        return self.decoding.max_new_tokens

    @property
    def mode(self) -> str:
        return self.decoding.resolved_mode

    @property
    def ndocs(self) -> int:
        return self.decoding.ndocs

    @property
    def threshold(self) -> float | None:
        return self.decoding.threshold

    @property
    def weights(self) -> Weights:
        return self.decoding.weights()

    def group(self) -> tuple:
        """Requests with the same key are decoded by one call."""
        return (self.long_form, *astuple(self.decoding))

    def short_settings(self) -> ShortFormSettings:
        return self.decoding.short_settings()

    def long_settings(self) -> LongFormSettings:
        return self.decoding.long_settings()


@dataclass
class Answer:
    """What the worker hands back for one request."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    selfrag: dict[str, Any]


@dataclass
class _Job:
    options: RequestOptions
    future: concurrent.futures.Future


class SelfRagEngine:
    """Owns the backend in one worker thread and answers queued requests in batches.

    Args:
        backend: the generator (only the worker thread calls it).
        model_id: the name served in `/v1/models` and checked against each request's `model`.
        search: `Retriever.search`-like `(queries, k) -> passages`; None: requests must bring `ctxs` or not retrieve.
        defaults: options of a request that sets none.
        batch_size: requests per batched call; batch_wait_ms: how long to wait for more before running.
        use_chat_template: build prompts with the tokenizer's chat template (a model trained with
            `--use_chat_template`) instead of `### Instruction:`.
        context_length: the most tokens (prompt plus completion) the model takes; default the backend's
            (`GenerationBackend.context_length`); None: requests are not checked against it.
    """

    def __init__(
        self,
        backend: GenerationBackend,
        model_id: str,
        search: Search | None = None,
        defaults: RequestOptions | None = None,
        batch_size: int = 16,
        batch_wait_ms: float = 5.0,
        vocab: ReflectionVocab | None = None,
        use_chat_template: bool = False,
        context_length: int | None = None,
    ) -> None:
        self.backend = backend
        self.context_length = context_length or backend.context_length
        # Requests are measured in the server's event-loop threads while the worker decodes: a copy of the
        # tokenizer of their own (a fast tokenizer is not safe to share between threads), used under a lock.
        self._counting_tokenizer: Any = None
        self._counting_lock = threading.Lock()
        # Prompts from the tokenizer's chat template (`--use_chat_template`) hold their own BOS.
        self.chat_tokenizer = backend.tokenizer if use_chat_template else None
        if use_chat_template:
            chat_template_prompt(backend.tokenizer, "")  # a tokenizer without a template fails now, not per request
        self.vocab = vocab or ReflectionVocab.from_tokenizer(backend.tokenizer, source=model_id)
        self.model_id, self.search = model_id, search
        self.defaults = defaults or RequestOptions(instruction="", decoding=DecodingConfig(max_new_tokens=100))
        self.batch_size, self.batch_wait_s = batch_size, batch_wait_ms / 1000.0
        self.batches: list[int] = []  # requests per batched Self-RAG call, in order (for /health and benchmarks)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="selfrag-worker", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def submit(self, options: RequestOptions) -> concurrent.futures.Future:
        """Queue one request; the future resolves to its `Answer` (a cancelled future is skipped by the worker)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put(_Job(options, future))
        return future

    @property
    def pending(self) -> int:
        """Requests waiting for the worker."""
        return self._queue.qsize()

    def answer(self, options: RequestOptions) -> Answer:
        """Answer one request synchronously (through the queue, so it may share a batch)."""
        return self.submit(options).result()

    # ---- request size ----

    def prompt_of(self, options: RequestOptions) -> str:
        """The prompt the worker builds for a request (before any passage is added)."""
        return format_prompt(options.instruction, tokenizer=self.chat_tokenizer)

    def count_tokens(self, text: str, limit: int | None = None) -> tuple[int, bool]:
        """`(tokens, exact)` of `text` as the backend tokenizes a prompt. With `limit`, a long text is measured by a
        prefix first: when that alone holds more than `limit + 1` tokens, its count is returned with `exact` False
        (the whole text has at least that many, give or take the one token split at the cut)."""
        with self._counting_lock:
            if self._counting_tokenizer is None:
                self._counting_tokenizer = copy.deepcopy(self.backend.tokenizer)
            tokenizer = self._counting_tokenizer
            special = self.chat_tokenizer is None
            if limit is not None and len(text) > 64 * (limit + 2):
                head = len(tokenizer(text[: 64 * (limit + 2)], add_special_tokens=special)["input_ids"])
                if head > limit + 1:
                    return head, False
            return len(tokenizer(text, add_special_tokens=special)["input_ids"]), True

    # ---- worker ----

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            batch = [job]
            deadline = time.monotonic() + self.batch_wait_s
            stop = False
            while len(batch) < self.batch_size:
                remaining = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            # A client that went away before its batch started is skipped (its future was cancelled).
            live = [j for j in batch if j.future.set_running_or_notify_cancel()]
            groups: dict[tuple, list[_Job]] = {}
            for j in live:
                groups.setdefault(j.options.group(), []).append(j)
            for jobs in groups.values():
                self._run_group(jobs)
            if stop:
                return

    def _run_group(self, jobs: list[_Job]) -> None:
        try:
            answers = self.run([j.options for j in jobs])
        except Exception as err:  # noqa: BLE001 - the error goes to every waiting request; the worker lives on
            logger.exception("batch of %d requests failed", len(jobs))
            for j in jobs:
                j.future.set_exception(err)
            return
        for j, ans in zip(jobs, answers):
            j.future.set_result(ans)

    def run(self, batch: Sequence[RequestOptions]) -> list[Answer]:
        """Answer requests that share `group()` with one Self-RAG call (called by the worker thread)."""
        first = batch[0]
        self.batches.append(len(batch))
        passages = self._passages(batch)
        prompts = [format_prompt(o.instruction, tokenizer=self.chat_tokenizer) for o in batch]
        special = self.chat_tokenizer is None
        if first.long_form:
            settings = replace(first.long_settings(), add_special_tokens=special)
            results = beam_search(self.backend, self.vocab, prompts, passages, settings)
            return [self._long_answer(*args) for args in zip(prompts, passages, results, batch)]
        short = replace(first.short_settings(), add_special_tokens=special)
        items = run_batch(self.backend, self.vocab, prompts, passages, short)
        return [self._short_answer(*args) for args in zip(prompts, passages, items, batch)]

    def _passages(self, batch: Sequence[RequestOptions]) -> list[list[dict[str, Any]]]:
        out: list[list[dict[str, Any]]] = [[dict(c) for c in o.ctxs[: o.ndocs]] if o.ctxs else [] for o in batch]
        need = [i for i, o in enumerate(batch) if o.ctxs is None and o.mode != "no_retrieval"]
        if need:
            if self.search is None:
                raise ConfigError("no passage source: start the server with --passages or send selfrag.ctxs")
            for i, docs in zip(need, self.search([batch[i].instruction for i in need], batch[0].ndocs)):
                out[i] = docs
        return out

    def _usage(self, prompt: str, gens: Sequence[Generation], max_tokens: int) -> tuple[str, int, int]:
        eos = getattr(self.backend.tokenizer, "eos_token_id", None)
        last = gens[-1].token_ids if gens else []
        length = len(last) >= max_tokens and (not last or last[-1] != eos)
        special = self.chat_tokenizer is None
        prompt_tokens = len(self.backend.tokenizer(prompt, add_special_tokens=special)["input_ids"])
        return ("length" if length else "stop"), prompt_tokens, sum(len(g.token_ids) for g in gens)

    def _short_answer(self, prompt: str, docs: list, item: ItemResult, opts: RequestOptions) -> Answer:
        candidates, citations = [], []
        grounded: bool | None = None  # no passage used: nothing to be grounded in
        if item.retrieve:
            for i, c in enumerate(item.candidates):
                candidates.append(
                    {
                        "passage": i,
                        "text": c.text,
                        "critique": _critique(c.scores.to_dict()),
                        "chosen": i == item.chosen,
                        **judgement(c.text, c.scores.relevance),
                    }
                )
            best = item.chosen
            judged = {key: candidates[best][key] for key in ("relevant", "support")}
            citations.append({"passage": best, "id": docs[best].get("id"), **judged})
            grounded = is_grounded(judged)
        chosen = item.chosen_generation
        finish, n_prompt, n_completion = self._usage(prompt, [chosen], opts.max_tokens)
        meta = _meta(opts, item.retrieve, item.retrieval_prob, docs if item.retrieve else [])
        meta.update(
            raw=chosen.text, candidates=candidates, citations=citations, no_retrieval=item.results.get("no_retrieval")
        )
        meta["grounded"] = grounded
        if opts.trace:
            meta["trace"] = short_trace(opts.instruction, item, opts.mode, opts.threshold)
        return Answer(item.pred, finish, n_prompt, n_completion, meta)

    def _long_answer(self, prompt: str, docs: list, result: BeamResult, opts: RequestOptions) -> Answer:
        index = {id(d): i for i, d in enumerate(docs)}
        segments, gens = [], []
        for node in result.path:
            gens.append(node.generation)
            segments.append(
                {
                    "text": clean_segment(node.segment),
                    "raw": node.pred,
                    "passage": index[id(node.ctx)],
                    "critique": _critique(node.critique),
                    "score": node.score,
                    **judgement(node.pred, node.critique["relevance"]),
                }
            )
        if not result.retrieve:
            gens.append(result.no_retrieval)
        citations = []
        for k, doc in enumerate(result.citations, start=1):
            i = next(i for i, d in enumerate(docs) if d == doc)
            judged = weakest(s for s in segments if s["passage"] == i)
            citations.append({"marker": f"[{k}]", "passage": i, "id": docs[i].get("id"), **judged})
        finish, n_prompt, n_completion = self._usage(prompt, gens, opts.max_tokens)
        if result.path and result.path[-1].wants_retrieval:
            finish = "length"  # the depth limit stopped a path that asked for more
        meta = _meta(opts, result.retrieve, result.retrieval_prob, docs if result.retrieve else [])
        meta.update(
            raw="".join(n.pred for n in result.path) or result.no_retrieval_text, segments=segments, citations=citations
        )
        # every cited passage judged relevant and fully supporting its segments; None: no passage used
        meta["grounded"] = bool(citations) and all(map(is_grounded, citations)) if result.retrieve else None
        if opts.trace:
            meta["trace"] = long_trace(opts.instruction, result)
        return Answer(result.answer, finish, n_prompt, n_completion, meta)


def _critique(scores: Mapping[str, float]) -> dict[str, float]:
    return {
        "isRel": scores["relevance"],
        "isSup": scores["support"],
        "isUse": scores["utility"],
        "seq": scores["seq"],
        "total": scores["total"],
    }


def _meta(opts: RequestOptions, retrieve: bool, prob: float | None, docs: Sequence[Mapping[str, Any]]) -> dict:
    passages = [
        {
            "id": d.get("id"),
            "title": d.get("title", ""),
            "text": d["text"],
            "score": float(d["score"]) if d.get("score") is not None else None,
        }
        for d in docs
    ]
    return {
        "mode": opts.mode,
        "long_form": opts.long_form,
        "retrieve": retrieve,
        "retrieval_prob": prob,
        "threshold": opts.threshold,
        "passages": passages,
    }
