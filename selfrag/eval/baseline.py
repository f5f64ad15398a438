"""Baselines of the paper's Table 2: an LM answering with or without retrieved passages (`run_baseline_lm.py`).

`run_baseline(config)` is what `retrieval_lm/run_baseline_lm.py` calls. It keeps the original's flags
(docs/original_selfrag.md §9) and prompts (§3.5), and fixes what made it crash or drift:

- HF transformers, vllm and any OpenAI-compatible API (`--backend openai --base_url ...`, current client);
- greedy decoding by default (the original sampled local models at temperature 0.8, top-p 0.95, unseeded);
- every task runs: ASQA / FactScore items without `ctxs` in vanilla mode, ALCE's `docs` as passages, FactScore's
  `input` as the instruction, fewer items than one batch; missing passages in retrieval mode stop the run
  before any model is loaded, naming file and line;
- ARC choices are appended to the instruction as the short form does (`--compat original`: dropped, as the
  original at HEAD, which leaves the model guessing a letter it never saw);
- every item is postprocessed the same way (the original overwrote the postprocessed answer of every full batch
  with the raw one, and turned `SUPPORTS` into `true` but left `REFUTES`);
- results are appended to `<result_fp>.partial.jsonl` as they come, so an interrupted run resumes.

Output (`--output_format`): the original wrote JSON Lines, one per-item record per line (the input item with
`instruction`, `paragraph`, `golds`, `output` and `metric_result`), to whatever `--result_fp` names; that is what
`--compat original` writes, and what a `.jsonl` `--result_fp` gets. Otherwise (a `.json` name, by default) the
result is one JSON object with the short form's keys (`preds`, `prompts`, `golds`, `metric_results`, `metric`,
`metric_mean`, `metrics`), `raw_preds`, `retrieval_frequency`, `runner: "baseline"`, `config`, and `data`: the same
per-item records, which under `data` also form ALCE's envelope. Either way the resolved config goes to
`<result_fp>.config.json`, and the file is replaced whole (written beside it, then renamed).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from selfrag.backends import GenerationBackend, GenParams, default_backend, load_backend
from selfrag.cli import flag
from selfrag.data import ResumableRun, clean, find_passages, load_items, where, write_json_atomic, write_jsonl_atomic
from selfrag.errors import ConfigError, DataFormatError
from selfrag.eval.metrics import METRICS, metric_fn
from selfrag.eval.short_form import gold_answers
from selfrag.prompts import ARC_LETTERS, PROMPT_DICT, arc_choices
from selfrag.tasks import default_metric, is_long_form, long_form_flags, task_for_flag

logger = logging.getLogger(__name__)

# Models the original sent to OpenAI (run_baseline_lm.py:96); `--backend auto` also routes other API names there.
OPENAI_MODEL_PATTERN = re.compile(r"^(gpt-|text-davinci|davinci|babbage|o\d)")
# Long-form tasks: evaluated by ALCE / FactScore, not against short gold strings, and never cut at a blank line.
# The registry's (selfrag.tasks) built-in ones; the run looks a task up when it runs (`is_long_form`).
LONG_FORM_TASKS = long_form_flags()
PASSAGE_KEYS = ("ctxs", "top_contexts", "docs")  # docs: ALCE's ASQA files
QUERY_KEYS = ("instruction", "question", "input")  # input: FactScore's prompts

# What a chat API receives as its user message by default: the instruction, after the passages in retrieval mode
# (the content of `llama_chat_prompt(_retrieval)` without the [INST] markup). The original sent the formatted
# `--prompt_name` template (`### Instruction: ...`) as the message; `--compat original` or an explicit
# `--prompt_name` does that.
CHAT_PROMPTS = {"chat_user": "{instruction}", "chat_user_retrieval": "{paragraph}\n{instruction}"}
PROMPTS = {
    name: PROMPT_DICT[name]
    for name in (
        "prompt_no_input",
        "prompt_no_input_retrieval",
        "prompt_open_instruct",
        "prompt_open_instruct_retrieval",
        "llama_chat_prompt",
        "llama_chat_prompt_retrieval",
    )
} | CHAT_PROMPTS


@dataclass
class BaselineConfig:
    """Flags of `run_baseline_lm.py`: the original's names and defaults, plus the backend and API settings.

    Unused original flags (`--device`, `--int8bit`) are accepted and ignored.
    """

    # Model and backend
    model_name: str = flag("HF hub id, local path, or API model name.", default="meta-llama/Llama-2-7b-chat-hf")
    backend: Literal["auto", "vllm", "hf", "openai"] = flag(
        "auto: openai for API model names (gpt-*, text-davinci-*) or with --base_url, else vllm with a CUDA GPU, "
        "else HF transformers.",
        default="auto",
    )
    dtype: str | None = flag("Model dtype (vllm / hf); default: the model's (auto).", default=None)
    world_size: int = flag("vllm tensor_parallel_size.", default=1)
    download_dir: str = flag("vllm download directory.", default=".cache")
    max_model_len: int | None = flag("vllm max_model_len (default: the model's).", default=None)
    max_batch_size: int = flag("hf backend: sequences per forward pass.", default=64)
    # OpenAI-compatible APIs
    base_url: str | None = flag("API root of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1.", default=None)
    api_key: str | None = flag("The API key, or a file holding it; default: OPENAI_API_KEY.", default=None)
    openai_api: Literal["auto", "chat", "completions"] = flag(
        "chat or completions endpoint; auto: completions for *davinci* / *instruct* models, else chat.", default="auto"
    )
    concurrency: int = flag("API requests in flight at once.", default=8)
    max_retries: int = flag("API retries after a 429 / 5xx / timeout, with exponential backoff.", default=6)
    retry_base_delay: float = flag("Seconds before the first API retry (doubles each retry).", default=1.0)
    request_timeout: float = flag("Seconds before an API request is abandoned and retried.", default=60.0)
    # Data
    input_file: str = flag("json / jsonl eval file.", default="")
    result_fp: str = flag(
        "Result JSON; <result_fp>.partial.jsonl holds progress for resuming.",
        default="",
        metadata={"aliases": ["--output_file"]},
    )
    retrieval_file: str | None = flag(
        "File whose items' ctxs are the passages (matched by id, else position).", default=None
    )
    task: str | None = flag("fever (PubHealth), arc_c, asqa, factscore, or none (PopQA, TriviaQA).", default=None)
    limit: int | None = flag("Only the first N items.", default=None)
    # Prompting
    mode: Literal["vanilla", "retrieval"] = flag(
        "retrieval: put the top_n passages into the prompt.", default="vanilla"
    )
    top_n: int = flag("Passages per question in retrieval mode.", default=1)
    prompt_name: str | None = flag(
        f"One of {sorted(PROMPTS)}; default: prompt_no_input (vanilla) / prompt_no_input_retrieval (retrieval), "
        "chat_user(_retrieval) for chat APIs.",
        default=None,
    )
    instruction: str | None = flag("Prefix: '<instruction>\\n\\n### Input:\\n<question>'.", default=None)
    choices: str | None = flag(
        "Space-separated answer options; the last one found in the output is the answer.", default=None
    )
    # Decoding
    max_new_tokens: int = flag("Tokens to generate.", default=15)
    temperature: float | None = flag(
        "Default 0 (greedy); --compat original: 0.8 (local models), 1 (chat APIs).", default=None
    )
    top_p: float | None = flag("Default 1.0; --compat original: 0.95 for local models.", default=None)
    batch_size: int = flag("Items per backend call and per checkpoint write.", default=5)
    compat: Literal["none", "original"] = flag(
        "original: the original's sampling, prompts and postprocessing (docs/baselines.md).", default="none"
    )
    seed: int = flag("Random seed.", default=633)
    output_format: Literal["auto", "json", "jsonl"] = flag(
        "jsonl: the per-item records, one per line (the original's output); json: one object with the scores and "
        "the records under 'data'. auto: jsonl with --compat original or a .jsonl --result_fp, else json.",
        default="auto",
    )
    # Evaluation
    metric: Literal["match", "accuracy", "exact_match", "em", "f1", "none"] | None = flag(
        "Per-item metric reported as metric_results; em = exact_match. Default: match when the items have gold "
        "answers, none when they have none (asqa, factscore).",
        default=None,
    )
    # Accepted for compatibility with the original command lines; they have no effect.
    device: str = flag("Unused (original flag).", default="cuda")
    int8bit: bool = flag("Unused (original flag).", default=False)

    def __post_init__(self) -> None:
        if not self.input_file or not self.result_fp:
            raise ConfigError("--input_file and --result_fp are required")
        if not self.model_name:
            raise ConfigError("--model_name is required")
        for name in ("top_n", "max_new_tokens", "batch_size", "max_batch_size", "concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1; got {getattr(self, name)}")
        if self.max_retries < 0:
            raise ConfigError(f"--max_retries must be at least 0; got {self.max_retries}")
        if self.metric == "em":
            self.metric = "exact_match"
        if self.backend == "auto":
            is_api = self.base_url is not None or OPENAI_MODEL_PATTERN.match(self.model_name) is not None
            self.backend = "openai" if is_api else default_backend()  # type: ignore[assignment]
        if self.openai_api == "auto" and self.backend == "openai":
            self.openai_api = "completions" if re.search(r"davinci|babbage|instruct", self.model_name) else "chat"
        if self.temperature is None:
            self.temperature = 0.0 if self.compat == "none" else self._original_temperature()
        if self.top_p is None:
            self.top_p = 0.95 if self.compat == "original" and self.backend != "openai" else 1.0
        if not 0.0 < self.top_p <= 1.0 or self.temperature < 0.0:
            raise ConfigError(f"need 0 < --top_p <= 1 and --temperature >= 0; got {self.top_p}, {self.temperature}")
        self.prompt_name = self._resolve_prompt_name()
        if self.output_format == "auto":
            jsonl = self.compat == "original" or self.result_fp.endswith(".jsonl")
            self.output_format = "jsonl" if jsonl else "json"  # type: ignore[assignment]

    def _original_temperature(self) -> float:
        # run_baseline_lm.py:51-52 (vllm: 0.8), :22-30 (chat: no temperature, the API's 1), :38 (completions: 0).
        if self.backend != "openai":
            return 0.8
        return 1.0 if self.openai_api == "chat" else 0.0

    @property
    def chat_api(self) -> bool:
        return self.backend == "openai" and self.openai_api == "chat"

    def _resolve_prompt_name(self) -> str:
        suffix = "_retrieval" if self.mode == "retrieval" else ""
        if self.prompt_name is None:
            base = "chat_user" if self.chat_api and self.compat == "none" else "prompt_no_input"
            return base + suffix
        if self.prompt_name not in PROMPTS:
            raise ConfigError(f"unknown --prompt_name {self.prompt_name!r}; choose one of {sorted(PROMPTS)}")
        has_paragraph = "{paragraph}" in PROMPTS[self.prompt_name]
        if has_paragraph != (self.mode == "retrieval"):
            problem = (
                f"--prompt_name {self.prompt_name} has no {{paragraph}}: the passages of --mode retrieval "
                "would be dropped"
                if not has_paragraph
                else f"--prompt_name {self.prompt_name} needs passages ({{paragraph}}); add --mode retrieval"
            )
            if self.compat != "original":
                raise ConfigError(problem)
            logger.warning("%s (kept: --compat original)", problem)
        return self.prompt_name

    @property
    def local(self) -> bool:
        """A local model (hf / vllm), whose outputs the original cut at the first blank line."""
        return self.backend != "openai"

    def to_dict(self) -> dict[str, Any]:
        """The resolved config for the output files and the log, with a literal API key redacted (a key file's
        path is kept)."""
        values = dataclasses.asdict(self)
        if self.api_key and not Path(self.api_key).is_file():
            values["api_key"] = "<redacted>"
        return values

    def fingerprint(self) -> dict[str, Any]:
        """The settings that shape per-item outputs; a resumed run must match them."""
        keep = (
            "model_name",
            "input_file",
            "retrieval_file",
            "task",
            "limit",
            "mode",
            "top_n",
            "prompt_name",
            "instruction",
            "max_new_tokens",
            "temperature",
            "top_p",
            "compat",
            "seed",
        )
        api = f"openai-{self.openai_api}" if self.backend == "openai" else "local"
        return {"api": api, **{k: getattr(self, k) for k in keep}}


# ---------------------------------------------------------------------------------------------------------------
# Prompts


def format_paragraph(ctxs: list[Mapping[str, Any]]) -> str:
    """The passages as the original joins them (run_baseline_lm.py:112-131): `[i] title\\ntext`, i from 1, one per line.

    >>> format_paragraph([{"title": "Paris", "text": "Capital of France."}, {"title": "Lyon", "text": "A city."}])
    '[1] Paris\\nCapital of France.\\n[2] Lyon\\nA city.'
    """
    return "\n".join(f"[{i}] {ctx.get('title', '')}\n{ctx['text']}" for i, ctx in enumerate(ctxs, start=1))


def baseline_instruction(item: Mapping[str, Any], task: str | None, prefix: str | None, compat: str) -> str:
    """The `instruction` of a baseline prompt (run_baseline_lm.py:140-152).

    The item's `instruction`, else `question`, else `input` (FactScore); `--instruction X` makes it
    `X\\n\\n### Input:\\n<it>`; closed-set tasks (fever and arc_c; selfrag.tasks) then get
    `TASK_INST[task]\\n\\n### Input:\\n<it>`, and arc_c the choices `\\nA: ...\\nB: ...\\nC: ...\\nD: ...` (not with
    `--compat original`, as the original at HEAD).
    """
    key = next((k for k in QUERY_KEYS if isinstance(item.get(k), str)), None)
    if key is None:
        raise DataFormatError(f"{where(item)}: missing field 'question' (or 'instruction' / 'input')")
    text = item[key]
    if prefix is not None:
        text = prefix + "\n\n### Input:\n" + text
    spec = task_for_flag(task)
    if spec is not None and spec.closed and spec.instruction is not None:
        text = spec.instruction + "\n\n### Input:\n" + text
    if spec is not None and spec.choices_in_prompt and compat != "original":
        letters = arc_choices(item, where=f"{where(item)}: ")
        text += "".join(f"\n{letter}: {letters.get(letter, '')}" for letter in ARC_LETTERS)
    return text


# ---------------------------------------------------------------------------------------------------------------
# Passages and golds


def item_passages(items: list[dict[str, Any]], config: BaselineConfig) -> list[list[dict[str, Any]]]:
    """The top_n passages of each item: from `--retrieval_file` (by `id`, else by position), else the item."""
    lookup: dict[Any, tuple[list[dict[str, Any]] | None, str]] | None = None
    if config.retrieval_file is not None:
        lookup = {}
        for position, record in enumerate(load_items(config.retrieval_file)):
            lookup[record.get("id", position)] = (find_passages(record, PASSAGE_KEYS), where(record))
    out = []
    for position, item in enumerate(items):
        if lookup is not None:
            key = item.get("id", position)
            if key not in lookup:
                raise DataFormatError(
                    f"{where(item)}: no item with id {key!r} in --retrieval_file {config.retrieval_file}"
                )
            ctxs, source = lookup[key]
        else:
            ctxs, source = find_passages(item, PASSAGE_KEYS), where(item)
        if ctxs is None:
            raise DataFormatError(
                f"{source}: missing field 'ctxs' (retrieved passages; also read: 'top_contexts', ALCE's 'docs'), "
                "which --mode retrieval needs; add them with retrieval_lm/passage_retrieval.py, pass "
                "--retrieval_file, or run --mode vanilla"
            )
        if not ctxs:
            raise DataFormatError(f"{source}: the passage list is empty; --mode retrieval needs at least one")
        out.append(ctxs[: config.top_n])
    return out


def baseline_golds(item: dict[str, Any], task: str | None, compat: str) -> list[str] | None:
    """Gold answers, or None when the item has none (ASQA, FactScore).

    The original's order (run_baseline_lm.py:133-139): `answerKey` over `possible_answers` (a Python literal)
    over `answers` over `output`; `answer` (a string or list) is read last, except for long-form tasks, where it
    is ASQA's long reference answer. ARC keys are validated and digit keys mapped to letters as in the short form.
    """
    spec = task_for_flag(task)
    if spec is not None and spec.gold == "answer_key":
        return gold_answers(item, task, compat)
    if "answerKey" in item:
        return [str(item["answerKey"])]
    if "possible_answers" in item:
        answers = item["possible_answers"]
        if isinstance(answers, str):
            try:
                answers = ast.literal_eval(answers)
            except (ValueError, SyntaxError) as err:
                raise DataFormatError(f"{where(item)}: 'possible_answers' is not a list literal: {err}") from err
    else:
        keys = ("answers", "output") if is_long_form(task) else ("answers", "output", "answer")
        key = next((k for k in keys if k in item), None)
        if key is None:
            return None
        answers = item[key]
    answers = [answers] if isinstance(answers, str) else answers
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise DataFormatError(f"{where(item)}: gold answers must be a non-empty list of strings")
    return answers


# ---------------------------------------------------------------------------------------------------------------
# Postprocessing


def postprocess_output(text: str, cut_blank_line: bool, compat: str) -> str:
    """The original's `call_model` + `postprocess_output` (run_baseline_lm.py:51-64): keep the text before the
    first blank line (local models, short-form tasks), drop `</s>` and one leading space. Default: strip all
    surrounding whitespace instead of one space."""
    if cut_blank_line:
        text = text.split("\n\n")[0]
    text = text.replace("</s>", "")
    if compat == "original":
        return text[1:] if text.startswith(" ") else text
    return text.strip()


def postprocess_answers_closed(output: str, task: str | None, choices: str | None, compat: str = "none") -> str:
    """The original's `postprocess_answers_closed` (utils.py:200-213).

    With `choices`, the last option found in the output (as a substring) is the answer. For fever an output that
    is exactly `SUPPORTS` becomes `true`, and `true` / `false` in any case are lowercased. The original leaves an
    exact `REFUTES` as is (a bug kept under `--compat original`); the default maps it to `false`.
    """
    final = None
    if choices is not None:
        for choice in choices.split(" "):
            if choice and choice in output:
                final = choice
    if task == "fever" and output in ("REFUTES", "SUPPORTS"):
        final = "true" if output == "SUPPORTS" else ("REFUTES" if compat == "original" else "false")
    if task == "fever" and output.lower() in ("true", "false"):
        final = output.lower()
    return output if final is None else final


def final_answer(raw: str, index: int, n_items: int, config: BaselineConfig) -> str:
    """The prediction of item `index` from its raw generation.

    Under `--compat original`, items of full batches keep the unprocessed answer, as the original's loop
    overwrites the postprocessed one (run_baseline_lm.py:175-177); only the last, partial batch is postprocessed.
    """
    if config.compat == "original":
        pred = postprocess_output(raw, True, "original") if config.local else raw
        if index < (n_items // config.batch_size) * config.batch_size:
            return pred
    else:
        pred = postprocess_output(raw, config.local and not is_long_form(config.task), "none")
    return postprocess_answers_closed(pred, config.task, config.choices, config.compat)


# ---------------------------------------------------------------------------------------------------------------
# Run


@dataclass
class PreparedItems:
    items: list[dict[str, Any]]
    instructions: list[str]
    paragraphs: list[str | None]
    passages: list[list[dict[str, Any]]]
    prompts: list[str]
    golds: list[list[str] | None]
    metric: str


def prepare_items(config: BaselineConfig) -> PreparedItems:
    """Load and validate every item, build every prompt and resolve the metric, before any model is loaded."""
    items = load_items(config.input_file)[: config.limit]
    spec = task_for_flag(config.task)
    if spec is not None and spec.choices_in_prompt:
        for item in items:
            arc_choices(item, where=f"{where(item)}: ")
    instructions = [baseline_instruction(item, config.task, config.instruction, config.compat) for item in items]
    passages = item_passages(items, config) if config.mode == "retrieval" else [[] for _ in items]
    paragraphs = [format_paragraph(p) if config.mode == "retrieval" else None for p in passages]
    template = PROMPTS[str(config.prompt_name)]
    prompts = [template.format(instruction=i, paragraph=p or "") for i, p in zip(instructions, paragraphs)]
    golds = [baseline_golds(item, config.task, config.compat) for item in items]

    metric = config.metric
    missing = [item for item, gold in zip(items, golds) if gold is None]
    if metric is None:
        metric = "none" if len(missing) == len(items) else default_metric(config.task)
        if metric == "none":
            logger.info("the items have no gold answers (task %s): no metric is computed", config.task)
    if metric != "none" and missing:
        raise DataFormatError(
            f"{where(missing[0])}: no gold answers ('answers', 'answer', 'output', 'possible_answers' or "
            f"'answerKey') for --metric {metric}; pass --metric none to run without scoring"
        )
    return PreparedItems(items, instructions, paragraphs, passages, prompts, golds, metric)


def load_baseline_backend(config: BaselineConfig) -> GenerationBackend:
    """The backend named by `config.backend` (already resolved from `auto`)."""
    if config.backend == "openai":
        from selfrag.backends.openai_chat import OpenAIBackend, api_key_source, resolve_api_key

        return OpenAIBackend(
            config.model_name,
            api=config.openai_api,  # type: ignore[arg-type]
            base_url=config.base_url,
            api_key=resolve_api_key(config.api_key, config.base_url),
            concurrency=config.concurrency,
            max_retries=config.max_retries,
            retry_base_delay=config.retry_base_delay,
            timeout=config.request_timeout,
            key_source=api_key_source(config.api_key, config.base_url),
            model_flag="--model_name",
        )
    return load_backend(
        config.backend,
        config.model_name,
        dtype=config.dtype or "auto",
        world_size=config.world_size,
        download_dir=config.download_dir,
        max_batch_size=config.max_batch_size,
        max_model_len=config.max_model_len,
    )


def run_baseline(config: BaselineConfig, backend: GenerationBackend | None = None) -> dict[str, Any]:
    """Run the baseline and write `config.result_fp`; returns the output dict."""
    random.seed(config.seed)
    logger.info("config: %s", json.dumps(config.to_dict()))
    prepared = prepare_items(config)
    if config.backend == "openai" and backend is None:
        from selfrag.backends.openai_chat import resolve_api_key

        resolve_api_key(config.api_key, config.base_url)  # a missing key fails here, before any work
    run = ResumableRun(config.result_fp, config.fingerprint(), len(prepared.items), config.batch_size, "baseline")
    if run.todo:
        owned = backend is None
        if owned:
            logger.info("loading %s with the %s backend", config.model_name, config.backend)
            backend = load_baseline_backend(config)
        params = GenParams(
            max_tokens=config.max_new_tokens,
            temperature=float(config.temperature),
            top_p=float(config.top_p),
            seed=config.seed,
        )
        try:
            for batch in run.batches():
                generations = backend.generate([prepared.prompts[i] for i in batch], params)
                run.save(
                    [{"index": i, "prompt": prepared.prompts[i], "raw": g.text} for i, g in zip(batch, generations)]
                )
        finally:
            if owned:
                backend.close()

    output = assemble_output(config, prepared, [record["raw"] for record in run.records()])
    if config.output_format == "jsonl":
        write_jsonl_atomic(config.result_fp, output["data"])
    else:
        write_json_atomic(config.result_fp, output)
    write_json_atomic(config.result_fp + ".config.json", config.to_dict())
    run.finish()
    logger.info("overall result: %s", output["metric_mean"])
    what = "JSON Lines, one record per item" if config.output_format == "jsonl" else "one JSON object"
    logger.info("wrote %s (and its config, %s.config.json): %s", config.result_fp, config.result_fp, what)
    return output


def assemble_output(config: BaselineConfig, prepared: PreparedItems, raws: list[str]) -> dict[str, Any]:
    n = len(raws)
    preds = [final_answer(raw, i, n, config) for i, raw in enumerate(raws)]
    metrics: dict[str, float] = {}
    metric_results: list[float] = []
    if prepared.metric != "none":
        golds = [g or [] for g in prepared.golds]
        for name in METRICS:
            fn = metric_fn(name, config.task)
            values = [fn(p, g) for p, g in zip(preds, golds)]
            metrics[name] = sum(values) / n
            if name == prepared.metric:
                metric_results = values
    data = []
    for i, item in enumerate(prepared.items):
        if config.compat == "original":  # the original wrote each input item whole, every passage kept
            record = clean(item)
        else:
            record = {k: v for k, v in clean(item).items() if k not in PASSAGE_KEYS}
        record["instruction"] = prepared.instructions[i]
        if config.mode == "retrieval":
            if config.compat != "original":
                record["ctxs" if "docs" not in item else "docs"] = prepared.passages[i]
            record["paragraph"] = prepared.paragraphs[i]
        if prepared.golds[i] is not None:
            record["golds"] = prepared.golds[i]
        record["output"] = preds[i]
        if metric_results:
            record["metric_result"] = metric_results[i]
        data.append(record)
    return {
        "preds": preds,
        "prompts": prepared.prompts,
        "golds": [g or [] for g in prepared.golds],
        "metric_results": metric_results,
        "metric": prepared.metric,
        "metric_mean": metrics.get(prepared.metric),
        "metrics": metrics,
        "raw_preds": raws,
        "retrieval_frequency": 1.0 if config.mode == "retrieval" else 0.0,
        "runner": "baseline",
        "data": data,
        "config": config.to_dict(),
    }
