"""The `selfrag` command: one entry point over the scripts, with the same config dataclasses and flags.

    selfrag infer --config configs/popqa.yaml --threshold 0.3          # = retrieval_lm/run_short_form.py
    selfrag eval results/popqa.json --metric accuracy                  # re-score an output file
    selfrag <command> --help                                           # the command's flags

Every command takes `--config FILE.yaml` (repeatable) under its flags and writes the resolved config next to its
results (`selfrag.cli.record_path`). Heavy modules are imported by the command that needs them, so `selfrag --help`
does not load torch. Under torchrun: `torchrun --nproc_per_node 2 -m selfrag train ...`.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfrag import __version__
from selfrag.cli import (
    RECORD_SUFFIX,
    flag,
    invocation,
    parse_config,
    program,
    run_main,
    setup_logging,
    write_config_record,
)
from selfrag.errors import ConfigError, DataFormatError
from selfrag.retrieval.presets import PRESETS

logger = logging.getLogger(__name__)


def _out(text: str) -> None:
    """Results go to stdout (logs go to stderr)."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------------- retrieval


def index(argv: Sequence[str]) -> int:
    from selfrag.retrieval.embeddings import EmbeddingConfig, generate_passage_embeddings

    setup_logging()
    config = parse_config(EmbeddingConfig, argv, description=COMMANDS["index"].help)
    _out(str(generate_passage_embeddings(config)))
    return 0


@dataclass
class BuildIndexConfig:
    """Flags of `selfrag build-index`: the index part of passage_retrieval.py's flags, run on its own."""

    passages_embeddings: str = flag('Glob of embedding shards, quoted: "wikipedia_embeddings/*".', default="")
    index_dir: str | None = flag("Where to save the index (default: the shards' folder).", default=None)
    index_preset: str | None = flag(
        "Index sized to the corpus: exact (Flat), compressed (IVF,SQ8) or small (IVF,SQ6); see passage_retrieval.py.",
        default=None,
        metadata={"choices": sorted(PRESETS)},
    )
    index_factory: str | None = flag(
        "FAISS factory string (Flat, IVF,SQ8, HNSW32, OPQ64,IVF,PQ64 ...; a bare IVF gets the list count for the "
        "corpus size). Default: the original's (Flat, or PQ with --n_subquantizers).",
        default=None,
    )
    n_subquantizers: int = flag("Original index choice: IndexPQ with this many sub-quantizers (0: Flat).", default=0)
    n_bits: int = flag("Bits per sub-quantizer code (with --n_subquantizers).", default=8)
    train_size: int | None = flag(
        "Vectors sampled to train IVF / PQ / SQ / OPQ indexes (default: 50 per IVF list, at least 65,536; else 1M).",
        default=None,
    )
    indexing_batch_size: int = flag("Vectors added to the index at a time.", default=1_000_000)
    projection_size: int | None = flag("Embedding dimension; default: the shards'.", default=None)
    seed: int = flag("Seed of the training sample.", default=0)

    def __post_init__(self) -> None:
        if not self.passages_embeddings:
            raise ConfigError('--passages_embeddings is required (a quoted glob: "wikipedia_embeddings/*")')

    @property
    def factory(self) -> str:
        from selfrag.retrieval.index import original_factory

        return self.index_preset or self.index_factory or original_factory(self.n_subquantizers, self.n_bits)


def build_index(argv: Sequence[str]) -> int:
    from selfrag.retrieval.embeddings import embedding_files
    from selfrag.retrieval.pipeline import load_or_build_index

    setup_logging()
    config = parse_config(BuildIndexConfig, argv, description=COMMANDS["build-index"].help, record=False)
    folder = Path(config.index_dir or embedding_files(config.passages_embeddings)[0].parent).resolve()
    # Beside the folder, not in it: the shards' folder is read back with a glob.
    write_config_record(config, argv, folder.parent / f"{folder.name}.index{RECORD_SUFFIX}")
    built = load_or_build_index(
        index_dir=str(folder),
        passages_embeddings=config.passages_embeddings,
        factory=config.factory,
        save=True,
        mmap=True,
        train_size=config.train_size,
        indexing_batch_size=config.indexing_batch_size,
        projection_size=config.projection_size,
        seed=config.seed,
    )
    _out(json.dumps({"index_dir": str(folder), "factory": built.factory, "vectors": built.ntotal, "dim": built.dim}))
    logger.info("wrote the index (%d vectors, %s) to %s", built.ntotal, built.factory, folder)
    return 0


def retrieve(argv: Sequence[str] | None, description: str | None = None) -> int:
    from selfrag.retrieval.pipeline import RetrievalConfig, retrieve_files, setup_retriever

    setup_logging()
    config = parse_config(RetrievalConfig, argv, description=description or COMMANDS["retrieve"].help)
    retriever = setup_retriever(config)
    if config.query is not None:
        for rank, hit in enumerate(retriever.search([config.query], config.n_docs)[0], start=1):
            _out(json.dumps({"rank": rank, **hit}, ensure_ascii=False))
        return 0
    paths = [str(path) for path in retrieve_files(config, retriever)]
    for path in paths:
        _out(path)
    logger.info("wrote the retrieved passages to %s", ", ".join(paths))
    return 0


# ---------------------------------------------------------------------------------------------------- inference


def infer(argv: Sequence[str]) -> int:
    from selfrag.eval.short_form import ShortFormConfig, run_short_form

    setup_logging()
    run_short_form(parse_config(ShortFormConfig, argv, description=COMMANDS["infer"].help))
    return 0


def long_form(argv: Sequence[str]) -> int:
    from selfrag.eval.long_form import LiveLongFormConfig, LongFormConfig, run_live_long_form, run_long_form

    setup_logging()
    argv = list(argv)
    if "--live" not in argv:
        run_long_form(parse_config(LongFormConfig, argv, description=COMMANDS["long-form"].help + LIVE_NOTE))
        return 0
    argv.remove("--live")
    run_live_long_form(parse_config(LiveLongFormConfig, argv, description=LIVE_DESCRIPTION))
    return 0


LIVE_NOTE = ". With --live (run_long_form.py): passages come from a retriever; see `selfrag long-form --live --help`."
LIVE_DESCRIPTION = (
    "Long-form Self-RAG with live retrieval (retrieval_lm/run_long_form.py): when a segment asks for retrieval, the "
    "retriever is queried with the question plus the answer so far; items need no passages."
)


def baseline(argv: Sequence[str]) -> int:
    from selfrag.eval.baseline import BaselineConfig, run_baseline

    setup_logging()
    run_baseline(parse_config(BaselineConfig, argv, description=COMMANDS["baseline"].help))
    return 0


# ---------------------------------------------------------------------------------------------------- training


def train(argv: Sequence[str]) -> int:
    from selfrag.training.distributed import setup_rank_logging

    setup_rank_logging()
    argv = list(argv)
    if "--critic" in argv:
        argv.remove("--critic")
        from selfrag.training.critic import CriticConfig, train_critic

        train_critic(parse_config(CriticConfig, argv, description=CRITIC_DESCRIPTION))
        return 0
    from selfrag.training.config import FinetuneConfig
    from selfrag.training.loop import train as train_generator

    train_generator(parse_config(FinetuneConfig, argv, description=COMMANDS["train"].help + CRITIC_NOTE))
    return 0


CRITIC_NOTE = ". With --critic (train_special_tokens.py): train the critic; see `selfrag train --critic --help`."
CRITIC_DESCRIPTION = (
    "Train the Self-RAG critic (data_creation/train_special_tokens.py): next-token loss on {instruction, input, "
    "output} critic examples, on the generator's training loop."
)


LABEL_COUNTS = ("labelled", "rejected", "failed", "requests_paid", "prompt_tokens", "completion_tokens", "cost")


def label(argv: Sequence[str] | None, description: str | None = None) -> int:
    from selfrag.data import write_json_atomic
    from selfrag.data_creation.judge import CriticLabelConfig, config_dict, label_items

    setup_logging()
    config = parse_config(CriticLabelConfig, argv, description=description or COMMANDS["label"].help)
    summary = label_items(config)
    _out(json.dumps(summary, indent=1))
    if config.dry_run:
        return 0
    write_json_atomic(config.output_file + ".usage.json", {"config": config_dict(config), **summary})
    logger.info(
        "%d labelled, %d rejected, %d failed; paid %d requests: %d prompt + %d completion tokens (%.4f); "
        "wrote %s, %s.rejects.jsonl and %s.usage.json",
        *(summary[k] for k in LABEL_COUNTS),
        *[config.output_file] * 3,
    )
    return 1 if summary["failed"] else 0


def combine(argv: Sequence[str] | None, description: str | None = None) -> int:
    from selfrag.data import load_items, write_json_atomic
    from selfrag.data_creation.critic_data import CombineConfig, critic_records, label_distribution, split_train_dev

    setup_logging()
    config = parse_config(CombineConfig, argv, description=description or COMMANDS["combine"].help)
    items = [item for path in config.input_files for item in load_items(path)]
    records, dropped = critic_records(items, relevant_keep=config.relevant_keep, seed=config.seed)
    train_records, dev = split_train_dev(records, config.dev_size, config.seed)
    write_json_atomic(f"{config.output_file_name}_train.json", train_records)
    write_json_atomic(f"{config.output_file_name}_dev.json", dev)
    stats = {
        "train": len(train_records),
        "dev": len(dev),
        "dropped": dict(dropped),
        "labels": label_distribution(records),
    }
    _out(json.dumps(stats, indent=1))
    logger.info("wrote %s_train.json and %s_dev.json", config.output_file_name, config.output_file_name)
    return 0


# ---------------------------------------------------------------------------------------------------- evaluation

METRIC_NAMES = ("match", "accuracy", "exact_match", "f1")  # = selfrag.eval.metrics.METRICS, without importing it


@dataclass
class EvalConfig:
    """Flags of `selfrag eval`. The result files may also be given first, without `--files`."""

    files: list[str] = flag(
        "Result files (or folders of them) of run_short_form.py / run_baseline_lm.py.", default=None
    )
    metric: list[str] = flag(
        "Metrics to compute (default: all four). match is the paper's; see selfrag/eval/metrics.py.",
        default=None,
        metadata={"choices": METRIC_NAMES},
    )
    task: str | None = flag(
        "Score as this task (arc_c, fever or none); default: each file's config.task.", default=None
    )
    table: bool = flag(
        "Print the paper's Table 2 from the files instead (selfrag/eval/results_table.py; --metric: one stored "
        "metric).",
        default=False,
    )
    sweep: list[str] = flag(
        "With --table: also the Fig. 3c threshold sweep of these adaptive Self-RAG result files (or folders).",
        default=None,
    )
    plot: str | None = flag(
        "With --sweep: save Fig. 3c (accuracy and retrieval frequency vs threshold) here (needs matplotlib).",
        default=None,
    )
    output: str | None = flag("Also write the table (markdown) to this file.", default=None)

    def __post_init__(self) -> None:
        if (self.sweep or self.plot) and not self.table:
            raise ConfigError("--sweep and --plot go with --table: selfrag eval [FILES] --table --sweep FILES")
        if self.plot and not self.sweep:
            raise ConfigError("--plot draws the threshold sweep: add --sweep FILES")
        if not self.files and not self.sweep:
            raise ConfigError("give result files: selfrag eval results/popqa.json [more files or folders]")
        self.files = list(self.files or [])
        self.metric = list(self.metric or METRIC_NAMES)
        if self.table and len(self.metric) > 1 and self.metric != list(METRIC_NAMES):
            raise ConfigError("--table reports one metric: pass at most one --metric")


def rescore(path: Path, metrics: Sequence[str], task: str | None = None) -> dict[str, Any]:
    """Recompute `metrics` (fractions) for the `preds` and `golds` of one short-form / baseline output file.

    The task (ARC letter parsing, PubHealth true/false) is `task`, else the file's `config.task`. Returns
    `{"file", "task", "items", <metric>: value ...}`.
    """
    from selfrag.data import read_text, run_config
    from selfrag.eval.metrics import metric_fn

    text = read_text(path, "result file")
    data = _result_json(path, text)
    if isinstance(data, list):  # JSON Lines of per-item records (run_baseline_lm.py --compat original, the original)
        data = {
            "preds": [r.get("output") for r in data],
            "golds": [r.get("golds") for r in data],
            "config": run_config(path),
        }
    preds = data.get("preds") if isinstance(data, dict) else None
    golds = data.get("golds") if isinstance(data, dict) else None
    if not isinstance(preds, list) or not isinstance(golds, list) or len(preds) != len(golds):
        raise DataFormatError(
            f"{path}: needs 'preds' and 'golds' lists of equal length: selfrag eval re-scores the outputs of "
            "selfrag infer / baseline (run_short_form.py / run_baseline_lm.py)"
        )
    if not preds or any(not g for g in golds):
        raise DataFormatError(f"{path}: no items, or items without gold answers (a run with --metric none?)")
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    task = task if task is not None else config.get("task")
    task = None if task in ("", "none") else task
    row: dict[str, Any] = {"file": str(path), "task": task or "-", "items": len(preds)}
    for name in metrics:
        fn = metric_fn(name, task)
        row[name] = sum(fn(p, g) for p, g in zip(preds, golds)) / len(preds)
    return row


def _result_json(path: Path, text: str) -> Any:
    """One JSON value, or the list of records of a JSON Lines file (one object per line)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg != "Extra data":
            raise DataFormatError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(f"{path}:{lineno}: not valid JSON Lines ({err.msg})") from err
        if not isinstance(record, dict):
            raise DataFormatError(f"{path}:{lineno}: expected one JSON object per line")
        records.append(record)
    return records


def rescore_markdown(rows: Sequence[dict[str, Any]], metrics: Sequence[str]) -> str:
    """Rows of `rescore` as a markdown table, values x100 with one decimal (as the paper reports them)."""
    lines = ["| file | task | items | " + " | ".join(metrics) + " |", "|---|---|---|" + "---|" * len(metrics)]
    for row in rows:
        cells = [row["file"], row["task"], str(row["items"]), *(f"{100 * row[m]:.1f}" for m in metrics)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluate(argv: Sequence[str]) -> int:
    from selfrag.eval.results_table import collect, result_files, sweep_curves, sweep_markdown, table2_markdown

    setup_logging(logging.WARNING)
    argv = list(argv)
    leading = next((i for i, arg in enumerate(argv) if arg.startswith("-")), len(argv))
    if leading:  # `selfrag eval a.json b.json --metric f1` = `--files a.json b.json --metric f1`
        argv = ["--files", *argv[:leading], *argv[leading:]]
    config = parse_config(EvalConfig, argv, description=COMMANDS["eval"].help, record=False)
    if config.output:  # a file is written: say where (the table itself goes to stdout, without log lines)
        setup_logging()
        write_config_record(config, argv, config.output + RECORD_SUFFIX)
    curves = None
    if config.table:
        metric = config.metric[0] if config.metric != list(METRIC_NAMES) else None
        parts = [table2_markdown(collect(config.files, metric))] if config.files else []
        if config.sweep:
            curves = sweep_curves(collect(config.sweep, metric))
            parts.append(sweep_markdown(curves))
        text = "\n".join(parts)
    else:
        files = [p for p in result_files(config.files) if not p.name.endswith(RECORD_SUFFIX)]
        text = rescore_markdown([rescore(p, config.metric, config.task) for p in files], config.metric)
    _out(text)
    if config.output:
        from selfrag.data import write_text_atomic

        write_text_atomic(config.output, text)
        logger.info("wrote the table to %s", config.output)
    if config.plot and curves:
        _plot_sweep(curves, config.plot)
    return 0


def _plot_sweep(curves: Any, path: str) -> None:
    """Draw Fig. 3c to `path`; without matplotlib, say so on stderr (the sweep is printed already)."""
    from selfrag.eval.results_table import plot_sweep

    try:
        saved = plot_sweep(curves, path)
    except ImportError:
        sys.stderr.write(
            f"matplotlib is not installed, so {path} was not drawn (pip install matplotlib); "
            "the sweep is printed above\n"
        )
    else:
        sys.stderr.write(f"saved {saved}\n")


# ---------------------------------------------------------------------------------------------------- delegated


def _delegate(module: str) -> Callable[[Sequence[str]], int]:
    """`module.main(argv)`, imported when the command runs (the module may be absent from this installation)."""

    def run(argv: Sequence[str]) -> int:
        setup_logging()  # the module's own log lines (where its results went) reach stderr as other commands'
        try:
            target = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise  # a missing dependency of the module: its own message says what to install
            raise ConfigError(f"{module} is not part of this installation of selfrag {__version__}") from err
        if not callable(getattr(target, "main", None)):
            raise ConfigError(f"{module} has no main(argv) entry point in this version ({__version__})")
        return target.main(list(argv))

    return run


@dataclass(frozen=True)
class Command:
    help: str
    run: Callable[[Sequence[str]], int]


COMMANDS: dict[str, Command] = {
    "index": Command("Embed a passage corpus in shards (retrieval_lm/generate_passage_embeddings.py)", index),
    "build-index": Command(
        "Build and save a FAISS index over embedding shards (the index step of retrieve)", build_index
    ),
    "retrieve": Command(
        "Retrieve passages for a query or for eval files (retrieval_lm/passage_retrieval.py)", retrieve
    ),
    "infer": Command("Short-form Self-RAG inference and evaluation (retrieval_lm/run_short_form.py)", infer),
    "long-form": Command(
        "Long-form Self-RAG beam search over given passages (run_long_form_static.py); --live: run_long_form.py",
        long_form,
    ),
    "baseline": Command("Baseline LM with or without retrieved passages (retrieval_lm/run_baseline_lm.py)", baseline),
    "train": Command("Fine-tune the generator (finetune.py); --critic: the critic (train_special_tokens.py)", train),
    "label": Command("Label data for one reflection aspect with a judge LM (data_creation/critic_label.py)", label),
    "combine": Command("Combine judge labels into critic train / dev data (combine_critic_data.py)", combine),
    "eval": Command(
        "Re-score result files with chosen metrics, or print Table 2 (--table) and the threshold sweep (--sweep)",
        evaluate,
    ),
    "serve": Command("OpenAI-compatible HTTP server over Self-RAG (selfrag.server)", _delegate("selfrag.server")),
    "quickstart": Command(
        "Offline Self-RAG demo on the shipped corpus (selfrag.quickstart)", _delegate("selfrag.quickstart")
    ),
}


def make_parser() -> argparse.ArgumentParser:
    width = max(map(len, COMMANDS)) + 2
    listing = "\n".join(f"  {name:<{width}}{command.help}" for name, command in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="selfrag",
        usage="selfrag <command> [flags]",
        description="Self-RAG: retrieve, generate and critique through self-reflection (Asai et al., ICLR 2024).",
        epilog=f"commands:\n{listing}\n\n'selfrag <command> --help' shows a command's flags. Every command reads "
        "--config FILE.yaml (repeatable) under its flags and writes the resolved config next to its results.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"selfrag {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`selfrag <command> [flags]`: run one command; exit status 2 for an unknown command or a bad config."""
    # Records name the program as it was typed: `selfrag` or `python -m selfrag` (in-process callers: `selfrag`).
    prefix = invocation() if argv is None else "selfrag"
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    if not argv or argv[0].startswith("-"):
        parser.parse_args(argv)  # --help / --version exit here; anything else is an error
        parser.print_usage(sys.stderr)
        sys.stderr.write("selfrag: error: name a command (selfrag --help lists them)\n")
        return 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        parser.print_usage(sys.stderr)
        sys.stderr.write(f"selfrag: error: unknown command '{name}'{hint} (commands: {', '.join(COMMANDS)})\n")
        return 2
    with program(f"{prefix} {name}"):
        return run_main(COMMANDS[name].run, rest)
