"""Long-form evaluation run (ASQA, ELI5, biography FactScore): config, data, batching, resume, answers with citations.

`run_long_form(config)` is what `retrieval_lm/run_long_form_static.py` calls. ASQA / ELI5 read and write ALCE's
format (a JSON list of items with `question` and `docs`; the output envelope `{"data", "args", "total_cost",
"azure_filter_fail"}` with `output` carrying `[k]` citations into the item's new `docs`); FactScore reads and
writes JSON Lines (`input`, `topic`, `cat`, `ctxs` -> `input`, `output`, `topic`, `cat`). Every output item also
keeps `intermediate` (the raw segments of the best path), and adds `retrieve`, `retrieval_prob` and
`prediction_tree` (every node with its critique scores) so a user can see why a path won.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from selfrag.backends import GenerationBackend, ModelConfig, open_backend
from selfrag.cli import fingerprint, flag, run_only
from selfrag.data import CTX_KEYS, ResumableRun, clean, get_ctxs, load_items, require_field, where, write_json_atomic
from selfrag.decoding.config import DecodingConfig
from selfrag.decoding.long_form import BeamResult, LongFormSettings, PassageSource, beam_search
from selfrag.errors import ConfigError, DataFormatError
from selfrag.eval.short_form import check_run_config, prompt_tokenizer
from selfrag.prompts import format_prompt
from selfrag.tasks import Task, task_for_flag
from selfrag.tokens import ReflectionVocab
from selfrag.views.trace import TraceWriter, long_trace

logger = logging.getLogger(__name__)


@dataclass
class LongFormConfig(ModelConfig, DecodingConfig):
    """Flags of `run_long_form_static.py`: the original's names and defaults, plus `--backend`, `--batch_size`,
    `--compat`, `--trace_dir`. The decoding flags are `DecodingConfig`'s (shared with short form and the server);
    `--w_rel / --w_sup / --w_use` and `--use_seqscore` take effect (the original ignored them)."""

    input_file: str = flag(
        "ASQA / ELI5: ALCE json list with question and docs; FactScore: jsonl with input and ctxs.", default=""
    )
    output_file: str = run_only("Result file; <output_file>.partial.jsonl holds progress for resuming.", default="")
    task: Literal["asqa", "eli5", "factscore"] = flag("Long-form task.", default="asqa")
    limit: int | None = flag("Only the first N items.", default=None)
    batch_size: int = run_only(
        "Questions searched together (one backend call per depth level); 32: bench/long_form_throughput.py.",
        default=32,
    )
    seed: int = run_only("Unused: decoding is greedy (original flag).", default=633)
    device: str = run_only("Unused (original flag).", default="cuda")
    use_chat_template: bool = flag(
        "Prompt with the tokenizer's chat template, as a model trained with finetune.py --use_chat_template "
        "(not in the original).",
        default=False,
    )
    trace_dir: str | None = run_only(
        "Write an HTML page per item showing its beam tree (DIR/<k>.html) and DIR/index.html.", default=None
    )

    def __post_init__(self) -> None:
        check_run_config(self)
        long_form_task(self.task)

    def settings(self) -> LongFormSettings:
        return self.long_settings(cite=long_form_task(self.task).cite, add_special_tokens=not self.use_chat_template)

    def fingerprint(self) -> dict[str, Any]:
        """The settings that shape per-item results; a resumed run must match them."""
        return fingerprint(self)


# --------------------------------------------------------------------------------------------------------- driver


def long_form_task(task: str) -> Task:
    """The registered long-form task of `--task task` (selfrag.tasks); raises `ConfigError` for any other."""
    spec = task_for_flag(task)
    if spec is None or spec.form != "long":
        raise ConfigError(f"--task {task!r} is not a long-form task of selfrag/tasks.py")
    return spec


def question_of(item: Mapping[str, Any], task: str) -> str:
    """The item's question, from its task's query field: `input` for FactScore (its whole prompt, e.g. "Question:
    Tell me a bio of X."), else `question`."""
    return require_field(item, long_form_task(task).query_field)


def prepare_items(
    config: LongFormConfig, live: bool = False, tokenizer: Any | None = None
) -> tuple[list[dict[str, Any]], list[str], list[list[dict]]]:
    """Load and validate every item before the model loads; return items, prompts and passages.

    With `live` retrieval the items need no passages of their own. With `config.use_chat_template` the prompts are
    built with `tokenizer`'s chat template (`format_prompt`).
    """
    if config.use_chat_template and tokenizer is None:
        raise ConfigError("--use_chat_template builds prompts with the model's tokenizer; pass prepare_items one")
    template_tokenizer = tokenizer if config.use_chat_template else None
    items = load_items(config.input_file)[: config.limit]
    needs = config.resolved_mode != "no_retrieval" and not live
    task = long_form_task(config.task)
    # ALCE's files hold the passages in `docs`; a task without an instruction (FactScore) is prompted with its input.
    passage_keys = ("docs", *CTX_KEYS) if task.scorer == "alce" else CTX_KEYS
    prompts, ctxs = [], []
    for item in items:
        question = question_of(item, config.task)
        if task.instruction is None:
            instruction = question
        else:
            instruction = task.instruction + "## Input:\n\n" + question
        docs = get_ctxs(item, passage_keys) if needs else []
        if needs and not docs:
            raise DataFormatError(f"{where(item)}: no passages; retrieval needs at least one")
        prompts.append(format_prompt(instruction, tokenizer=template_tokenizer))
        ctxs.append(docs[: config.ndocs])
    return items, prompts, ctxs


Search = Callable[[list[str], int], list[list[dict[str, Any]]]]


class LiveRetrieval:
    """Passages for the beam search from a retriever, queried with the question plus the answer so far.

    Results are cached by query, so paths that share a prefix, and reruns within a process, search once.

    Args:
        search: `Retriever.search`-like: (queries, k) -> ranked passages for each.
        questions: the question of each item (indexed like the run's items).
        k: passages per query.
    """

    def __init__(self, search: Search, questions: Sequence[str], k: int):
        self.search, self.questions, self.k = search, questions, k
        self.cache: dict[str, list[dict[str, Any]]] = {}
        self.queries: list[str] = []  # every query sent to the retriever, in order (for logs and tests)

    def query(self, index: int, answer: str) -> str:
        return f"{self.questions[index]} {answer}".strip()

    def __call__(self, requests: list[tuple[int, str]]) -> list[list[dict[str, Any]]]:
        queries = [self.query(i, answer) for i, answer in requests]
        missing = list(dict.fromkeys(q for q in queries if q not in self.cache))
        if missing:
            self.queries.extend(missing)
            self.cache.update(zip(missing, self.search(missing, self.k)))
        return [self.cache[q] for q in queries]


def run_long_form(
    config: LongFormConfig, backend: GenerationBackend | None = None, search: Search | None = None
) -> list[dict[str, Any]]:
    """Run the search for every item, write `config.output_file`, return the output items.

    Args:
        search: live retrieval (`Retriever.search`); without it each item's own passages are re-used at every step.
    """
    tokenizer = prompt_tokenizer(config.model_name, backend) if config.use_chat_template else None
    items, prompts, ctxs = prepare_items(config, live=search is not None, tokenizer=tokenizer)
    passage_source = None
    if search is not None:
        passage_source = LiveRetrieval(search, [question_of(item, config.task) for item in items], config.ndocs)
    run = ResumableRun(config.output_file, config.fingerprint(), len(items), config.batch_size, "long-form")
    traces = TraceWriter(config.trace_dir) if config.trace_dir else None
    if run.todo:
        with open_backend(config, backend) as backend:
            vocab = ReflectionVocab.from_tokenizer(backend.tokenizer, source=config.model_name)
            settings = config.settings()
            for batch in run.batches():
                results = beam_search(
                    backend,
                    vocab,
                    [prompts[i] for i in batch],
                    [ctxs[i] for i in batch],
                    settings,
                    _for_batch(passage_source, batch),
                )
                if traces is not None:
                    for i, result in zip(batch, results):
                        traces.write(i, long_trace(question_of(items[i], config.task), result))
                run.save([_record(i, result, config) for i, result in zip(batch, results)])

    records = run.records()
    outputs = [_output_item(config.task, clean(item), record) for item, record in zip(items, records)]
    if traces is not None:
        traces.write_index([question_of(item, config.task) for item in items], [None] * len(items))
    if long_form_task(config.task).scorer == "factscore":  # FactScore's input: JSON Lines
        tmp = Path(config.output_file + ".tmp")
        tmp.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in outputs), encoding="utf-8")
        tmp.replace(config.output_file)
    else:
        write_json_atomic(config.output_file, {"data": outputs, "args": [], "total_cost": 0.0, "azure_filter_fail": ""})
    write_json_atomic(config.output_file + ".config.json", dataclasses.asdict(config))
    run.finish()
    retrieved = sum(record["retrieve"] for record in records)
    logger.info(
        "wrote %d items to %s; retrieval frequency %.3f", len(items), config.output_file, retrieved / len(items)
    )
    return outputs


def _for_batch(source: PassageSource | None, batch: list[int]) -> PassageSource | None:
    """The passage source seen from inside a batch, whose questions are numbered from 0."""
    if source is None:
        return None
    return lambda queries: source([(batch[i], query) for i, query in queries])


def _record(index: int, result: BeamResult, config: LongFormConfig) -> dict[str, Any]:
    return {
        "index": index,
        "output": result.answer,
        "docs": result.citations,
        **result.to_dict(),
        "intermediate": [n.pred for n in result.path],
    }


def _output_item(task: str, item: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    trace = {k: record[k] for k in ("retrieve", "retrieval_prob", "best_path", "prediction_tree")}
    if long_form_task(task).scorer == "factscore":
        base = {k: item.get(k) for k in ("input", "topic", "cat")}
        return {**base, "output": record["output"], "intermediate": record["intermediate"], **trace}
    out = {**item, "output": record["output"], "intermediate": record["intermediate"], **trace}
    if record["retrieve"]:
        out["docs"] = record["docs"]
    return out


@dataclass
class LiveLongFormConfig(LongFormConfig):
    """run_long_form.py's flags: run_long_form_static.py's plus the retriever's (as passage_retrieval.py)."""

    retriever: str = flag(
        "Query encoder (the one that embedded the passages), e.g. facebook/contriever-msmarco.", default=""
    )
    passages: str = flag("Passage file: DPR TSV (id, text, title) or JSONL.", default="")
    passages_embeddings: str | None = flag('Glob of embedding shards, quoted: "wikipedia_embeddings/*".', default=None)
    index_dir: str | None = flag("Folder of a saved index (default: the shards' folder).", default=None)
    index_factory: str | None = flag(
        "FAISS factory string of the index to build if none is saved (default Flat).", default=None
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.retriever or not self.passages:
            raise ConfigError("--retriever and --passages are required for live retrieval")


def run_live_long_form(config: LiveLongFormConfig) -> list[dict[str, Any]]:
    """Long form with live retrieval: build the retriever from the config's paths, then `run_long_form`."""
    from selfrag.retrieval import Retriever

    retriever = Retriever.from_paths(
        config.retriever,
        config.passages,
        index_dir=config.index_dir,
        passages_embeddings=config.passages_embeddings,
        index_factory=config.index_factory,
    )
    return run_long_form(config, search=retriever.search)
