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
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from selfrag.backends import GenerationBackend, ModelConfig, open_backend
from selfrag.cli import flag
from selfrag.data import CTX_KEYS, ResumableRun, clean, get_ctxs, load_items, require_field, where, write_json_atomic
from selfrag.decoding.long_form import BeamResult, LongFormSettings, Node, PassageSource, beam_search
from selfrag.errors import ConfigError, DataFormatError
from selfrag.eval.short_form import prompt_tokenizer
from selfrag.prompts import TASK_INST, format_prompt
from selfrag.scoring import Weights
from selfrag.tokens import (
    ALL_TOKENS,
    CONTINUE,
    NO_SUPPORT,
    ORIGINAL_CONTROL_TOKENS,
    ReflectionVocab,
    strip_reflection_tokens,
)

logger = logging.getLogger(__name__)


@dataclass
class LongFormConfig(ModelConfig):
    """Flags of `run_long_form_static.py`: the original's names and defaults, plus `--backend`, `--batch_size`,
    `--compat`. `--w_rel / --w_sup / --w_use` and `--use_seqscore` take effect (the original ignored them)."""

    input_file: str = flag(
        "ASQA / ELI5: ALCE json list with question and docs; FactScore: jsonl with input and ctxs.", default=""
    )
    output_file: str = flag("Result file; <output_file>.partial.jsonl holds progress for resuming.", default="")
    task: Literal["asqa", "eli5", "factscore"] = flag("Long-form task.", default="asqa")
    ndocs: int = flag("Passages tried at each retrieval (docs[:ndocs] / ctxs[:ndocs]).", default=10)
    limit: int | None = flag("Only the first N items.", default=None)
    mode: Literal["default", "adaptive_retrieval", "no_retrieval", "always_retrieve"] = flag(
        "default = adaptive_retrieval.", default="default"
    )
    threshold: float | None = flag(
        "Retrieve when p(Ret)/(p(Ret)+p(NoRet)) > threshold; unset: when the model generates [Retrieval].", default=None
    )
    max_new_tokens: int = flag("Tokens per segment.", default=15)
    beam_width: int = flag("Paths kept at each depth.", default=2)
    max_depth: int = flag("Depth of the tree counting the root: at most max_depth-1 segments.", default=2)
    use_grounding: bool = flag("Add the IsSup score.", default=False, metadata={"aliases": ["--use_groundness"]})
    use_utility: bool = flag("Add the IsUse score.", default=False)
    use_seqscore: bool = flag("Add exp(mean token log-prob).", default=False)
    w_rel: float = flag("Weight of IsRel.", default=1.0)
    w_sup: float = flag("Weight of IsSup.", default=1.0)
    w_use: float = flag("Weight of IsUse.", default=0.5)
    ignore_cont: bool = flag("Drop segments marked [No support / Contradictory] from the answer.", default=False)
    compat: Literal["none", "original"] = flag(
        "original: the original's path scores, weights and output assembly (docs/upstream_quirks.md).", default="none"
    )
    batch_size: int = flag("Questions searched together (one backend call per depth level).", default=8)
    seed: int = flag("Unused: decoding is greedy (original flag).", default=633)
    device: str = flag("Unused (original flag).", default="cuda")
    use_chat_template: bool = flag(
        "Prompt with the tokenizer's chat template, as a model trained with finetune.py --use_chat_template "
        "(not in the original).",
        default=False,
    )

    def __post_init__(self) -> None:
        if not self.model_name:
            raise ConfigError("--model_name is required")
        if not self.input_file or not self.output_file:
            raise ConfigError("--input_file and --output_file are required")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"--threshold must lie in [0, 1] (a probability); got {self.threshold}")
        if self.max_depth < 2:
            raise ConfigError(
                f"--max_depth counts the root, so it must be at least 2 (one segment); got {self.max_depth}"
            )
        for name in ("ndocs", "max_new_tokens", "beam_width", "batch_size", "max_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1; got {getattr(self, name)}")

    @property
    def resolved_mode(self) -> str:
        return "adaptive_retrieval" if self.mode == "default" else self.mode

    def settings(self) -> LongFormSettings:
        weights = Weights(
            w_rel=self.w_rel,
            w_sup=self.w_sup,
            w_use=self.w_use,
            use_groundness=self.use_grounding,
            use_utility=self.use_utility,
            use_seqscore=self.use_seqscore,
        )
        return LongFormSettings(
            mode=self.resolved_mode,
            threshold=self.threshold,
            ndocs=self.ndocs,  # type: ignore[arg-type]
            beam_width=self.beam_width,
            max_depth=self.max_depth,
            max_new_tokens=self.max_new_tokens,
            weights=weights,
            ignore_cont=self.ignore_cont,
            compat=self.compat,
            add_special_tokens=not self.use_chat_template,
        )

    def fingerprint(self) -> dict[str, Any]:
        skip = {
            "backend",
            "dtype",
            "world_size",
            "download_dir",
            "max_model_len",
            "output_file",
            "batch_size",
            "max_batch_size",
            "seed",
            "device",
            "use_chat_template",  # joins only when set, so partial files of runs without it still resume
        }
        fingerprint = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip} | {
            "mode": self.resolved_mode
        }
        if self.use_chat_template:
            fingerprint["use_chat_template"] = True
        return fingerprint


# ------------------------------------------------------------------------------------------------ answer assembly


def fix_spacing(text: str, compat: str = "none") -> str:
    """Insert a space after a sentence end glued to the next word ("end.Next" -> "end. Next").

    The original (utils.py:78-81) also splits decimals ("3.5" -> "3. 5"); we only split before a capital letter.
    """
    if compat == "original":
        return re.sub(r"(?<=\w)([.!?])(?=\w)", r"\1 ", text)
    return re.sub(r"(?<=[a-z0-9)])([.!?])(?=[A-Z])", r"\1 ", text)


def clean_segment(text: str, compat: str = "none") -> str:
    """A segment as it appears in the answer: reflection tokens and `</s>` removed.

    Default: all 15 tokens and collapsed whitespace. Original (utils.py:84-95): the 14 control strings and `</s>`,
    then one leading space dropped (`[Continue to Use Evidence]` is handled by `assemble_answer`).
    """
    if compat == "original":
        text = strip_reflection_tokens(text, ORIGINAL_CONTROL_TOKENS).replace("</s>", "")
        return text[1:] if text.startswith(" ") else text
    return " ".join(strip_reflection_tokens(text, ALL_TOKENS).replace("</s>", "").split())


def assemble_answer(result: BeamResult, task: str, ignore_cont: bool = False, compat: str = "none") -> tuple[str, list]:
    """The answer text and the cited passages, in citation order.

    ASQA / ELI5 cite ALCE-style: each segment ends with `[k]` (before its final punctuation), k numbering the
    distinct passages in order of first citation; FactScore joins the segments with spaces. Segments repeated
    word for word are dropped. The original numbers citations by depth and drops each segment's last character.
    """
    if not result.retrieve:
        return fix_spacing(clean_segment(result.no_retrieval_text or "", compat), compat), []
    nodes = [n for n in result.path if not (ignore_cont and NO_SUPPORT in n.segment)]
    if compat == "original":
        return _assemble_original(nodes, task)
    seen: set[str] = set()
    parts: list[str] = []
    docs: list[Mapping[str, Any]] = []
    for node in nodes:
        text = clean_segment(node.segment)
        if not text or text in seen:
            continue
        seen.add(text)
        if task == "factscore":
            parts.append(text)
            continue
        if node.ctx not in docs:
            docs.append(node.ctx)
        cite = f" [{docs.index(node.ctx) + 1}]"
        parts.append(text[:-1] + cite + text[-1] if text[-1] in ".!?" else text + cite)
    return fix_spacing(" ".join(parts)), [dict(d) for d in docs]


def _assemble_original(nodes: Sequence[Node], task: str) -> tuple[str, list]:
    """run_long_form_static.py:276-297 and 372-435, kept for `--compat original`."""
    if task == "factscore":
        return fix_spacing(clean_segment(" " + " ".join(n.segment for n in nodes), "original"), "original"), []
    output, docs, seen = "", [], []
    for depth, node in enumerate(nodes, start=1):
        text = clean_segment(node.segment, "original")
        if not node.segment or text in seen:
            continue
        seen.append(text)
        output += text[:-1] + " [" + str(depth) + "]. "
        docs.append(dict(node.ctx))
    output = fix_spacing(output[:-1] if output.endswith(" ") else output, "original")
    output = output.replace(f".{CONTINUE}", " [1]. ").replace(". [1] ", " [1]. ")
    return output, docs


# --------------------------------------------------------------------------------------------------------- driver


def question_of(item: Mapping[str, Any], task: str) -> str:
    """The item's question: `input` for FactScore (its whole prompt, e.g. "Question: Tell me a bio of X."), else
    `question`."""
    return require_field(item, "input" if task == "factscore" else "question")


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
    prompts, ctxs = [], []
    for item in items:
        question = question_of(item, config.task)
        if config.task == "factscore":
            instruction = question
            docs = get_ctxs(item) if needs else []
        else:
            instruction = TASK_INST[config.task] + "## Input:\n\n" + question
            docs = get_ctxs(item, ("docs", *CTX_KEYS)) if needs else []
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
                run.save([_record(i, result, config) for i, result in zip(batch, results)])

    records = run.records()
    outputs = [_output_item(config.task, clean(item), record) for item, record in zip(items, records)]
    if config.task == "factscore":
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
    output, docs = assemble_answer(result, config.task, config.ignore_cont, config.compat)
    return {
        "index": index,
        "output": output,
        "docs": docs,
        **result.to_dict(),
        "intermediate": [n.pred for n in result.path],
    }


def _output_item(task: str, item: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    trace = {k: record[k] for k in ("retrieve", "retrieval_prob", "best_path", "prediction_tree")}
    if task == "factscore":
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
