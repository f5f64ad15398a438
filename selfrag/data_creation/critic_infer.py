"""Critic inference: label items for one reflection aspect with a trained critic or a judge (docs §8.4 steps 1, 5, 8).

A `Critic` has one batched method, `predict(aspect, items) -> list[label | None]`: one entry per item, in order,
each one of the aspect's labels (`critic_prompts.ASPECTS[aspect].labels`) or None when the critic's answer could
not be parsed (a reject). Aspect names and item fields are those of `critic_prompts` (`retrieval`,
`multi_retrieval`, `relevance`, `groundness`, `utility`). Implementations:

- `ModelCritic(backend)`: a critic trained by `data_creation/train_special_tokens.py`, on any `GenerationBackend`
  (HF or vllm, batched). Its prompt is the one the critic was trained on (`training.critic.CRITIC_PROMPTS`:
  `### Instruction:\\n{aspect instruction}\\n\\n### Input:\\n{critic_input}\\n\\n### Response:`), decoding is greedy
  with `max_new_tokens` (the original run_reward_vllm.py's 15), the text is cut at the first blank line and
  stripped of `</s>`, `<unk>`, `[PAD]`, `<pad>` (run_reward_vllm.py), then parsed by `labels.parse_label`.
- `JudgeCritic(client, cache)`: GPT-4 or any OpenAI-compatible server through `judge.py` (prompts, sqlite reply
  cache, retries); a request that fails after all retries is a reject too.

Both count what they did in `stats` (`{aspect: {"labelled": n, "rejected": m}}`) and keep the rejected answers
(`rejects`: aspect, raw text, reason) for the log and the rejects files.

Deliberate difference from the original: run_reward_vllm.py prompted the critic with the Alpaca preamble
(`prompt_input`) although train_special_tokens.py trained it without one; here inference uses the training prompt.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from selfrag.backends import ModelConfig, open_backend
from selfrag.backends.base import GenerationBackend, GenParams
from selfrag.cli import flag
from selfrag.data import ResumableRun, clean, load_items, where, write_json_atomic
from selfrag.data_creation.critic_prompts import ASPECTS, critic_input, get_aspect, judge_messages
from selfrag.data_creation.labels import parse_label
from selfrag.errors import ConfigError, DataFormatError
from selfrag.training.critic import CRITIC_PROMPTS

logger = logging.getLogger(__name__)

# The prompt train_special_tokens.py trains on (original train_special_tokens.py:34-41); every critic input is
# non-empty, so it is always the `prompt_input` form.
CRITIC_PROMPT = CRITIC_PROMPTS["prompt_input"]
# Strings run_reward_vllm.py removes from the critic's text (besides cutting at the first blank line).
STRIP_STRINGS = ("</s>", "<unk>", "[PAD]", "<pad>")


@runtime_checkable
class Critic(Protocol):
    """Labels items for one reflection aspect; the only interface the generator-data pipeline uses.

    `predict(aspect, items)` returns one entry per item, in order: a label of `aspect`
    (`selfrag.data_creation.critic_prompts.ASPECTS[aspect].labels`) or None for an unparseable answer.
    """

    def predict(self, aspect: str, items: list[dict]) -> list[str | None]: ...


@dataclass(frozen=True)
class CriticPrediction:
    """One answer of a critic: the raw text, the parsed label (None for a reject) and the reject's reason."""

    raw: str
    label: str | None
    reason: str | None = None


class _Counting:
    """Shared bookkeeping: per-aspect counts and the list of rejected answers."""

    def __init__(self) -> None:
        self.stats: dict[str, Counter] = {}
        self.rejects: list[dict[str, Any]] = []

    def _count(self, aspect: str, predictions: Sequence[CriticPrediction]) -> None:
        counts = self.stats.setdefault(aspect, Counter())
        for pred in predictions:
            counts["labelled" if pred.label is not None else "rejected"] += 1
            if pred.label is None:
                self.rejects.append({"aspect": aspect, "raw_output": pred.raw, "reason": pred.reason})
        rejected = sum(p.label is None for p in predictions)
        if rejected:
            logger.warning("%s: %d of %d critic answers rejected (unparseable)", aspect, rejected, len(predictions))

    def predict(self, aspect: str, items: list[dict]) -> list[str | None]:
        return [p.label for p in self.predict_raw(aspect, items)]

    def predict_raw(self, aspect: str, items: list[dict]) -> list[CriticPrediction]:  # pragma: no cover - abstract
        raise NotImplementedError


def critic_prompt(aspect: str, item: Mapping[str, Any]) -> str:
    """The prompt the critic was trained on for this aspect and item (`CRITIC_PROMPT`)."""
    return CRITIC_PROMPT.format(instruction=get_aspect(aspect).instruction, input=critic_input(aspect, item))


def clean_critic_text(text: str) -> str:
    """The critic's answer as run_reward_vllm.py read it: cut at the first blank line, pad/eos/unk strings removed."""
    text = text.split("\n\n", 1)[0]
    for s in STRIP_STRINGS:
        text = text.replace(s, "")
    return text.strip()


class ModelCritic(_Counting):
    """A trained critic model on a `GenerationBackend`.

    Args:
        backend: HF, vllm or scripted backend holding the critic (train_special_tokens.py output).
        max_new_tokens: tokens generated per answer (original run_reward_vllm.py default 15).
        batch_size: prompts per `backend.generate` call (the backend may split further, e.g. HF `max_batch_size`).
    """

    def __init__(self, backend: GenerationBackend, max_new_tokens: int = 15, batch_size: int = 64) -> None:
        super().__init__()
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be at least 1")
        self.backend = backend
        self.params = GenParams(max_tokens=max_new_tokens, temperature=0.0)
        self.batch_size = batch_size

    def predict_raw(self, aspect: str, items: list[dict]) -> list[CriticPrediction]:
        get_aspect(aspect)
        # Build every prompt first: a bad item fails before the model runs.
        return self.predict_prompts(aspect, [critic_prompt(aspect, item) for item in items])

    def predict_prompts(self, aspect: str, prompts: Sequence[str]) -> list[CriticPrediction]:
        """Answers to ready-made critic prompts (e.g. critic training records), parsed as `aspect` labels."""
        out: list[CriticPrediction] = []
        for start in range(0, len(prompts), self.batch_size):
            for gen in self.backend.generate(prompts[start : start + self.batch_size], self.params):
                text = clean_critic_text(gen.text)
                parsed = parse_label(aspect, text)
                out.append(CriticPrediction(gen.text, parsed.label, parsed.reason))
        self._count(aspect, out)
        return out


class JudgeCritic(_Counting):
    """A judge model behind an OpenAI-compatible chat API (GPT-4, a local vllm server), through `judge.py`.

    Args:
        client: a `judge.JudgeClient` (retries, backoff), or None when every request is in the cache.
        cache: a `judge.JudgeCache`; replies are stored before parsing, so nothing is paid twice.
        model, max_tokens, temperature: the request body (as `critic_label.py`'s flags).
        concurrency: requests in flight at once.
    """

    def __init__(
        self,
        client: Any,
        cache: Any,
        model: str = "gpt-4",
        max_tokens: int = 200,
        temperature: float = 0.0,
        concurrency: int = 8,
    ) -> None:
        super().__init__()
        self.client, self.cache = client, cache
        self.model, self.max_tokens, self.temperature = model, max_tokens, temperature
        self.concurrency = concurrency
        self.usage = Counter()
        self.sender: Any = None  # a judge.JudgeSender per aspect: one request at a time until one is answered

    def predict_raw(self, aspect: str, items: list[dict]) -> list[CriticPrediction]:
        from selfrag.data_creation.judge import JudgeSender, _label_one, cache_key, request_body

        get_aspect(aspect)
        bodies = [
            request_body(self.model, judge_messages(aspect, item), self.max_tokens, self.temperature) for item in items
        ]
        # Identical requests: send the first, let the others read its reply from the cache (as judge.label_items).
        firsts: dict[str, int] = {}
        for i, body in enumerate(bodies):
            firsts.setdefault(cache_key(body), i)
        first = sorted(firsts.values())

        def label(i: int) -> dict[str, Any]:
            return _label_one(i, bodies[i], aspect, self.client, self.cache)

        if self.sender is None or self.sender.aspect != aspect:
            self.sender = JudgeSender(aspect, self.client, self.cache)
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="judge-critic") as pool:
            # a refused key or unknown model (AccessError) stops here, after one request
            by_index = {r["index"]: r for r in self.sender.many(pool, [(i, bodies[i]) for i in first])}
        by_index.update((i, label(i)) for i in range(len(items)) if i not in by_index)
        records = [by_index[i] for i in range(len(items))]
        out = []
        for record in records:
            self.usage["prompt_tokens"] += record.get("prompt_tokens", 0)
            self.usage["completion_tokens"] += record.get("completion_tokens", 0)
            self.usage["requests_paid"] += record["status"] != "failed" and not record.get("cached", False)
            out.append(CriticPrediction(record.get("raw_output") or "", record.get("label"), record.get("reason")))
        self._count(aspect, out)
        return out


# ----------------------------------------------------------------------------------------- building from flags


@dataclass
class CriticModelConfig(ModelConfig):
    """Which critic labels: a trained critic model (`--model_name`, the ModelConfig flags) or, with `--judge_model`,
    a judge behind an OpenAI-compatible API (judge.py: cache, retries)."""

    model_name: str = flag(
        "Critic model (train_special_tokens.py output): HF hub id or local path.",
        default="",
        metadata={"aliases": ["--critic_model_path"]},
    )
    max_new_tokens: int = flag("Tokens generated per critic answer (the original's 15).", default=15)
    batch_size: int = flag("Critic prompts per backend call (and per checkpoint write).", default=64)
    judge_model: str | None = flag(
        "Label with this judge model (e.g. gpt-4) through an OpenAI-compatible API instead of a critic model.",
        default=None,
    )
    base_url: str | None = flag("Judge API root, e.g. http://127.0.0.1:8000/v1 (default: OpenAI).", default=None)
    api_key: str | None = flag("Judge API key, or a file holding it (default: OPENAI_API_KEY).", default=None)
    cache_file: str | None = flag("Judge reply cache (sqlite); default beside the outputs.", default=None)
    concurrency: int = flag("Judge requests in flight at once.", default=8)
    max_retries: int = flag("Judge retries of one request on 429 / 5xx / timeouts.", default=6)
    retry_base_delay: float = flag("Seconds before the first judge retry (doubled each retry).", default=1.0)
    timeout: float = flag("Seconds before a judge request is abandoned (and retried).", default=60.0)

    def check_critic(self) -> None:
        if bool(self.model_name) == bool(self.judge_model):
            raise ConfigError("pass exactly one of --model_name (a critic model) and --judge_model (an API judge)")
        for name in ("max_new_tokens", "batch_size", "concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1; got {getattr(self, name)}")

    def critic_fingerprint(self) -> dict[str, Any]:
        if self.judge_model:
            return {"judge_model": self.judge_model, "base_url": self.base_url}
        return {"critic": self.model_name, "max_new_tokens": self.max_new_tokens}


class LazyCritic:
    """A `Critic` built on its first `predict` (so a finished run never loads the model)."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self.critic: Any = None

    def get(self) -> Any:
        """The critic, built now if it was not yet."""
        if self.critic is None:
            self.critic = self._factory()
        return self.critic

    def predict(self, aspect: str, items: list[dict]) -> list[str | None]:
        return self.get().predict(aspect, items)


@contextlib.contextmanager
def open_critic(
    config: CriticModelConfig, default_cache: str, backend: GenerationBackend | None = None
) -> Iterator[LazyCritic]:
    """A lazily built `ModelCritic` or `JudgeCritic` as `config` says; the model / cache is closed afterwards.

    `backend` replaces the model `config.model_name` would load (tests)."""
    config.check_critic()
    with contextlib.ExitStack() as stack:

        def build() -> _Counting:
            if config.judge_model:
                from selfrag.data_creation.judge import JudgeCache, judge_client

                cache = JudgeCache(config.cache_file or default_cache)
                stack.callback(cache.close)
                client = judge_client(config.judge_model, config, model_flag="--judge_model")
                return JudgeCritic(client, cache, config.judge_model, concurrency=config.concurrency)
            loaded = stack.enter_context(open_backend(config, backend))
            return ModelCritic(loaded, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size)

        lazy = LazyCritic(build)
        yield lazy
        if lazy.critic is not None:
            for aspect, counts in sorted(lazy.critic.stats.items()):
                logger.info("critic %s: %d labelled, %d rejected", aspect, counts["labelled"], counts["rejected"])


# ------------------------------------------------------------------------------ run_reward_vllm.py: one file


# The original's --inst_mode / --input_mode names (run_reward_vllm.py PROMPT_DICT keys) -> aspect; its task name
# `groudness` (sic) is accepted for `groundness`.
MODE_ASPECTS = {
    "retrieval_instruction": "retrieval",
    "retrieval_input": "retrieval",
    "retrieval_multi_instruction": "multi_retrieval",
    "retrieval_multi_input": "multi_retrieval",
    "multi_retrieval_three_way_instruction": "multi_retrieval",
    "multi_retrieval_three_way_input": "multi_retrieval",
    "relevance_instruction": "relevance",
    "relevance_input": "relevance",
    "ground_multi_instruction": "groundness",
    "ground_multi_input": "groundness",
    "utility_instruction": "utility",
    "utility_input": "utility",
}
TASK_ALIASES = {"groudness": "groundness"}


@dataclass
class RewardConfig(CriticModelConfig):
    """Flags of `data_creation/run_reward_vllm.py` (the original's names; `--output_file` / `--aspect` aliases)."""

    input_file: str = flag(
        "json / jsonl items (fields per aspect: selfrag/data_creation/critic_prompts.py).", default=""
    )
    result_fp: str = flag(
        "Output: the items with `pred` (label or null) and `raw_output`; .json list or .jsonl.",
        default="",
        metadata={"aliases": ["--output_file"]},
    )
    task: str = flag(
        "Aspect: retrieval, multi_retrieval, relevance, groundness (or the original's groudness), utility.",
        default="",
        metadata={"aliases": ["--aspect"]},
    )
    split: str = flag(
        "test: label items; train: score the critic on critic training records of --task (accuracy).", default="test"
    )
    inst_mode: str | None = flag("The original's prompt key; only checked against --task.", default=None)
    input_mode: str | None = flag("The original's prompt key; only checked against --task.", default=None)
    metric: str | None = flag("Accepted for compatibility (train split: exact label accuracy).", default=None)
    batch_size: int = flag("Items per backend call and per checkpoint write (the original's 10).", default=10)

    def __post_init__(self) -> None:
        self.check_critic()
        self.task = TASK_ALIASES.get(self.task, self.task)
        modes = {MODE_ASPECTS.get(m, f"unknown mode {m!r}") for m in (self.inst_mode, self.input_mode) if m}
        if not self.task and len(modes) == 1:
            self.task = next(iter(modes))
        if self.task not in ASPECTS:
            raise ConfigError(f"--task {self.task!r}: choose one of {sorted(ASPECTS)}")
        if modes - {self.task}:
            raise ConfigError(f"--inst_mode / --input_mode ({sorted(modes)}) do not match --task {self.task}")
        if self.split not in ("test", "train"):
            raise ConfigError(f"--split {self.split!r}: choose test or train")
        if self.split == "train" and self.judge_model:
            raise ConfigError("--split train scores a critic model on its own prompts; pass --model_name")
        if not self.input_file or not self.result_fp:
            raise ConfigError("--input_file and --result_fp (--output_file) are required")

    def fingerprint(self) -> dict[str, Any]:
        return {"input_file": self.input_file, "task": self.task, "split": self.split, **self.critic_fingerprint()}


def train_prompts(items: Sequence[Mapping[str, Any]], task: str) -> tuple[list[dict[str, Any]], list[str]]:
    """`--split train`: the critic records of `task` (`instruction`, `input`, `output`, `task`) and their prompts."""
    for item in items:
        for field in ("instruction", "input", "output", "task"):
            if not isinstance(item.get(field), str):
                raise DataFormatError(
                    f"{where(item)}: critic records need string fields instruction, input, output, task"
                )
    kept = [item for item in items if TASK_ALIASES.get(item["task"], item["task"]) == task]
    prompts = [
        (CRITIC_PROMPTS["prompt_input"] if item["input"] else CRITIC_PROMPTS["prompt_no_input"]).format(**item)
        for item in kept
    ]
    return kept, prompts


def write_items(path: str | Path, records: Sequence[Mapping[str, Any]]) -> None:
    """A `.json` list or JSON Lines (any other suffix), written atomically."""
    path = str(path)
    if path.endswith(".json"):
        write_json_atomic(path, list(records))
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    tmp.replace(target)


def label_file(config: RewardConfig, backend: GenerationBackend | None = None) -> dict[str, Any]:
    """Label `config.input_file` for `config.task` with the critic (resumable); write the outputs; return a summary.

    Writes `result_fp` (every item, with `pred` and `raw_output`; `correct` under --split train), its
    `.rejects.jsonl` (the items whose answer did not parse, with `reason`) and `.stats.json`.
    """
    aspect = config.task
    items = load_items(config.input_file)
    if config.split == "train":
        items, prompts = train_prompts(items, aspect)
        if not items:
            raise DataFormatError(f"{config.input_file}: no critic record with task {aspect!r}")
    else:
        prompts = [critic_prompt(aspect, item) for item in items] if not config.judge_model else []
        if config.judge_model:
            for item in items:
                judge_messages(aspect, item)  # a bad item fails before anything is sent
    run = ResumableRun(config.result_fp, config.fingerprint(), len(items), config.batch_size, aspect)
    with open_critic(config, config.result_fp + ".cache.sqlite", backend) as critic:
        for batch in run.batches() if run.todo else ():
            inner = critic.get()
            if config.judge_model:
                preds = inner.predict_raw(aspect, [items[i] for i in batch])
            else:
                preds = inner.predict_prompts(aspect, [prompts[i] for i in batch])
            run.save(
                [{"index": i, "pred": p.label, "raw_output": p.raw, "reason": p.reason} for i, p in zip(batch, preds)]
            )
    records = run.records()
    out, rejects = [], []
    for item, record in zip(items, records):
        row = {**clean(item), "pred": record["pred"], "raw_output": record["raw_output"]}
        if config.split == "train":
            row["correct"] = float(record["pred"] == item["output"])
        out.append(row)
        if record["pred"] is None:
            rejects.append({**clean(item), "raw_output": record["raw_output"], "reason": record["reason"]})
    labels = Counter("null" if r["pred"] is None else r["pred"] for r in records)
    summary: dict[str, Any] = {
        "task": aspect,
        "items": len(items),
        "labelled": len(items) - len(rejects),
        "rejected": len(rejects),
        "labels": dict(sorted(labels.items())),
    }
    if config.split == "train":
        summary["accuracy"] = sum(r["correct"] for r in out) / len(out)
    write_items(config.result_fp, out)
    write_items(config.result_fp + ".rejects.jsonl", rejects)
    write_json_atomic(config.result_fp + ".stats.json", summary)
    run.finish()
    return summary
