"""Short-form evaluation run (PopQA, TriviaQA, PubHealth, ARC-Challenge): config, data, batching, resume, output.

`run_short_form(config)` is what `retrieval_lm/run_short_form.py` calls. The output JSON keeps the original's
keys (`preds`, `prompts`, `metric_results`, `all_results`, `golds`, `metric`, `metric_mean`, `scores`) and adds
`retrieve`, `retrieval_probs`, `retrieval_frequency`, `metrics` and `config`.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from dataclasses import dataclass
from typing import Any, Literal

import torch

from selfrag.backends import GenerationBackend, ModelConfig, open_backend
from selfrag.cli import fingerprint, flag, run_only
from selfrag.data import ResumableRun, get_ctxs, load_items, require_field, where, write_json_atomic
from selfrag.decoding.config import DecodingConfig
from selfrag.decoding.short_form import ShortFormSettings, run_batch
from selfrag.errors import BackendError, ConfigError, DataFormatError
from selfrag.eval.metrics import METRICS, metric_fn
from selfrag.prompts import arc_choices, format_prompt
from selfrag.tasks import default_metric, is_closed, short_form_instruction, task_for_flag
from selfrag.tokens import ReflectionVocab
from selfrag.views.trace import TraceWriter, short_trace

logger = logging.getLogger(__name__)

MODES = ("default", "adaptive_retrieval", "no_retrieval", "always_retrieve")


@dataclass
class ShortFormConfig(ModelConfig, DecodingConfig):
    """Flags of `run_short_form.py`: the original's names and defaults, plus `--backend`, `--batch_size`, `--compat`,
    `--trace_dir`. The decoding flags are `DecodingConfig`'s (shared with long form and the server).

    Unused original flags (`--device`, `--tokenizer_path`, `--beam_width`, `--max_depth`) are accepted and ignored.
    """

    # Data
    input_file: str = flag("json / jsonl eval file with question, answers and ctxs.", default="")
    output_file: str = run_only("Result JSON; <output_file>.partial.jsonl holds progress for resuming.", default="")
    task: str | None = flag(
        "arc_c, fever (PubHealth) or none (PopQA, TriviaQA); the tasks of selfrag/tasks.py.", default=None
    )
    limit: int | None = flag("Only the first N items.", default=None)
    batch_size: int = run_only("Questions per backend call (x ndocs sequences when retrieving).", default=32)
    # Evaluation
    metric: Literal["match", "accuracy", "exact_match", "f1", "none"] | None = run_only(
        "Per-item metric reported as metric_results (default: the task's, selfrag/tasks.py: match, the paper's, "
        "for PopQA, TriviaQA, PubHealth and ARC).",
        default=None,
    )
    seed: int = run_only("Random seed (the original's 633).", default=633)
    use_chat_template: bool = flag(
        "Prompt with the tokenizer's chat template, as a model trained with finetune.py --use_chat_template "
        "(not in the original).",
        default=False,
    )
    trace_dir: str | None = run_only(
        "Write an HTML page per item showing why it was answered so (DIR/<k>.html) and DIR/index.html.", default=None
    )
    # Accepted for compatibility with the original command lines; they have no effect.
    device: str = run_only("Unused (original flag).", default="cuda")
    tokenizer_path: str | None = run_only("Unused (original flag).", default=None)

    def __post_init__(self) -> None:
        check_run_config(self)
        if self.metric is None:
            self.metric = default_metric(self.task)  # type: ignore[assignment]

    def settings(self) -> ShortFormSettings:
        return self.short_settings(closed=is_closed(self.task), add_special_tokens=not self.use_chat_template)

    def fingerprint(self) -> dict[str, Any]:
        """The settings that shape per-item results; a resumed run must match them."""
        return fingerprint(self)


def check_run_config(config: Any) -> None:
    """The checks every evaluation run's config shares (short and long form): required paths, the decoding flags,
    batch sizes."""
    if not config.model_name:
        raise ConfigError("--model_name is required")
    if not config.input_file or not config.output_file:
        raise ConfigError("--input_file and --output_file are required")
    DecodingConfig.__post_init__(config)
    for name in ("batch_size", "max_batch_size"):
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name} must be at least 1; got {getattr(config, name)}")


def gold_answers(item: dict[str, Any], task: str | None, compat: str) -> list[str]:
    """Gold answers: `answers` (or `answer`); for a task whose file stores an `answerKey` (arc_c) `[answerKey]`, with
    digit keys mapped to letters by default."""
    spec = task_for_flag(task)
    if spec is not None and spec.gold == "answer_key":
        key = str(require_field(item, "answerKey", (str, int)))
        letter = "ABCD"[int(key) - 1] if key in {"1", "2", "3", "4"} else key
        if letter not in arc_choices(item, where=f"{where(item)}: "):
            raise DataFormatError(f"{where(item)}: answerKey {key!r} is not among the choice labels")
        # The prompt shows letters; the original compares against the digit.
        return [key if compat == "original" else letter]
    if "answers" in item:
        answers = item["answers"]
    elif "answer" in item:
        answers = item["answer"]
    else:
        raise DataFormatError(
            f"{where(item)}: missing field 'answers' (or 'answer'); pass --metric none to skip scoring"
        )
    answers = [answers] if isinstance(answers, str) else answers
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise DataFormatError(f"{where(item)}: 'answers' must be a non-empty list of strings")
    return answers


def prepare_items(
    config: ShortFormConfig, tokenizer: Any | None = None
) -> tuple[list[dict[str, Any]], list[str], list[list[dict]], list[list[str]]]:
    """Load and validate every item before any model is loaded; return items, prompts, passages and golds.

    With `config.use_chat_template` the prompts are built with `tokenizer`'s chat template (`format_prompt`).
    """
    if config.use_chat_template and tokenizer is None:
        raise ConfigError("--use_chat_template builds prompts with the model's tokenizer; pass prepare_items one")
    template_tokenizer = tokenizer if config.use_chat_template else None
    items = load_items(config.input_file)[: config.limit]
    needs_ctxs = config.resolved_mode != "no_retrieval"
    prompts, evidences, golds = [], [], []
    short = 0
    for item in items:
        require_field(item, "question")
        instruction = short_form_instruction(item, config.task, where=f"{where(item)}: ")
        prompts.append(format_prompt(instruction, tokenizer=template_tokenizer))
        ctxs = get_ctxs(item)[: config.ndocs] if needs_ctxs else []
        if needs_ctxs and not ctxs:
            raise DataFormatError(f"{where(item)}: 'ctxs' is empty; retrieval needs at least one passage")
        short += len(ctxs) < config.ndocs and needs_ctxs
        evidences.append(ctxs)
        golds.append(gold_answers(item, config.task, config.compat) if config.metric != "none" else [])
    if short:
        logger.warning(
            "%d of %d items have fewer than --ndocs %d passages; they use all they have",
            short,
            len(items),
            config.ndocs,
        )
    return items, prompts, evidences, golds


def prompt_tokenizer(model_name: str, backend: GenerationBackend | None) -> Any:
    """The tokenizer whose chat template builds the prompts under `--use_chat_template`: the given backend's, or the
    one saved with `--model_name`, loaded alone so that the prompts are built and checked before the model loads."""
    if backend is not None:
        return backend.tokenizer
    from transformers import AutoTokenizer

    from selfrag.pretrained import check_model_path

    check_model_path(model_name, "cannot load the tokenizer of", BackendError)
    try:
        return AutoTokenizer.from_pretrained(model_name)
    except OSError as err:
        raise BackendError(f"cannot load the tokenizer of {model_name!r}: {err}") from err


def run_short_form(config: ShortFormConfig, backend: GenerationBackend | None = None) -> dict[str, Any]:
    """Run the evaluation and write `config.output_file`; returns the output dict."""
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    tokenizer = prompt_tokenizer(config.model_name, backend) if config.use_chat_template else None
    items, prompts, evidences, golds = prepare_items(config, tokenizer)
    run = ResumableRun(config.output_file, config.fingerprint(), len(items), config.batch_size, "short-form")
    traces = TraceWriter(config.trace_dir) if config.trace_dir else None
    if run.todo:
        with open_backend(config, backend) as backend:
            vocab = ReflectionVocab.from_tokenizer(backend.tokenizer, source=config.model_name)
            settings = config.settings()
            for batch in run.batches():
                outcomes = run_batch(
                    backend, vocab, [prompts[i] for i in batch], [evidences[i] for i in batch], settings
                )
                if traces is not None:
                    for i, o in zip(batch, outcomes):
                        traces.write(i, short_trace(items[i]["question"], o, config.resolved_mode, config.threshold))
                run.save([{"index": i, "prompt": prompts[i], **o.to_record()} for i, o in zip(batch, outcomes)])

    output = assemble_output(config, golds, run.records())
    if traces is not None:
        scored = [bool(m) for m in output["metric_results"]] if output["metric_results"] else [None] * len(items)
        traces.write_index([item["question"] for item in items], scored)
    write_json_atomic(config.output_file, output)
    write_json_atomic(config.output_file + ".config.json", dataclasses.asdict(config))
    run.finish()
    logger.info("Final result: %s", output["metric_mean"])
    logger.info("Retrieval Frequencies: %s", output["retrieval_frequency"])
    logger.info("wrote %s (and its config, %s.config.json)", config.output_file, config.output_file)
    return output


def assemble_output(config: ShortFormConfig, golds: list[list[str]], records: list[dict[str, Any]]) -> dict[str, Any]:
    preds = [r["pred"] for r in records]
    metrics: dict[str, float] = {}
    metric_results: list[float] = []
    if config.metric != "none":
        for name in METRICS:
            fn = metric_fn(name, config.task)
            values = [fn(p, g) for p, g in zip(preds, golds)]
            metrics[name] = sum(values) / len(values)
            if name == config.metric:
                metric_results = values
    retrieve = [r["retrieve"] for r in records]
    output = {
        "preds": preds,
        "prompts": [r["prompt"] for r in records],
        "metric_results": metric_results,
        "all_results": [r["results"] for r in records],
        "golds": golds,
        "metric": config.metric,
        "metric_mean": metrics.get(config.metric) if config.metric != "none" else None,
        "scores": [],
        "retrieve": retrieve,
        "retrieval_probs": [r["retrieval_prob"] for r in records],
        "retrieval_frequency": sum(retrieve) / len(retrieve),
        "metrics": metrics,
        "config": dataclasses.asdict(config),
    }
    if config.compat == "original":
        output["original_retrieval_ratios"] = [r["original_ratio"] for r in records]
    return output
