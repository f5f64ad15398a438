"""Gather result files into the paper's Table 2 and its Fig. 3c threshold sweep.

Inputs are the JSON files written by `retrieval_lm/run_short_form.py` (Self-RAG) and
`retrieval_lm/run_baseline_lm.py` (baselines) for the short-form columns (PopQA, TQA, Pub, ARC), the summaries of
`scripts/eval_alce.py --result_fp` (ASQA) and `scripts/eval_factscore.py --result_fp` (Bio), or the original code's
outputs (a short-form JSON with `metric_mean`, a baseline JSON Lines file with per-item `metric_result`, ALCE's
`.score` file, FactScore's `*_factscore_output.json`).

**Columns.** PopQA, TQA, Pub, ARC; then Bio (FactScore's `factscore`, with its length penalty) and ASQA em / rg /
mau / pre / rec (ALCE's `str_em`, `rougeLsum`, `mauve`, `citation_prec`, `citation_rec`). The six long-form
columns are printed only when at least one long-form result is present, so a table of short-form results is the
four-column one. A metric a summary lacks (MAUVE without mauve-text, citations of a run without retrieval) is a
missing cell.

**Which row and column a file fills.** A file named `SYSTEM__TASK.json` (or `.jsonl`; two underscores; TASK one
of `popqa`, `tqa` / `triviaqa`, `pub` / `pubhealth`, `arc` / `arc_c`, `asqa`, `bio` / `factscore`, any case) goes
to row SYSTEM and column TASK, whatever its config: this is how files without a config (the original's) are
placed, and how a row is renamed. An `asqa` file is an eval_alce.py summary or ALCE's own score dict
(percentages: `str_em`, `rougeLsum`, ... as `eval.py` writes them to `<f>.score`); a `bio` file is an
eval_factscore.py summary or FactScore's output (`score`). Its group is Self-RAG for a short-form output, a
summary with `generator: self-rag` (or a SYSTEM containing `Self-RAG`), baselines with retrieval for `--mode
retrieval` (or a SYSTEM starting with `Ret-`), else baselines without retrieval. Otherwise both come from the
file's `config` (for a summary: the generation run's config it carries):

- column: an eval_alce.py summary (`runner: alce`) -> ASQA, an eval_factscore.py one (`runner: factscore`) -> Bio;
  else `--task fever` -> Pub, `arc_c` -> ARC; no task -> from the input file's name (`popqa` -> PopQA,
  `triviaqa` / `tqa` -> TQA, `health` -> Pub, `arc` -> ARC); another task (an ELI5 summary, an unscored ASQA /
  biography generation) or an unknown file name is skipped with a warning;
- row: the model's paper name where known (`selfrag/selfrag_llama2_7b` -> `Self-RAG 7B`, `meta-llama/Llama-2-7b-hf`
  -> `Llama2-7B`, `gpt-3.5-turbo*` -> `ChatGPT`, ...), else the model path's last component; baselines run with
  `--mode retrieval` get the paper's `Ret-` prefix; Self-RAG runs not in the paper's mode for the task (adaptive
  retrieval; ASQA: always_retrieve) get ` (MODE)`, e.g. ` (always_retrieve)` / ` (no_retrieval)`, and
  `--compat original` runs ` [compat original]`.

Rows are grouped as in the paper (baselines without retrieval, with retrieval, Self-RAG) and sorted by name
within a group. Values are `100 x` the fraction, one decimal; `–` marks a missing cell. A short-form cell is the
run's `metric_mean` (the metric the run reported; `metric=` picks another one of the file's `metrics`); the
long-form columns always report the metrics above, whatever `metric=`. Two files for the same cell are an error.

**Threshold sweep (Fig. 3c).** Self-RAG short-form files in adaptive mode with a numeric `threshold` form one
curve per (system, task): accuracy (100 x metric_mean) and retrieval frequency (100 x `retrieval_frequency`)
against the threshold.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfrag.errors import ConfigError, DataFormatError
from selfrag.tasks import SCORER_SCRIPTS, TASKS

logger = logging.getLogger(__name__)

# The columns and the names that place a file in them come from the task registry (selfrag.tasks: each task's
# `column`, `column_metrics`, `file_tags`, `input_file_pattern`, `scorer` and `paper_mode`), in its order.
_TABLE_TASKS = tuple(task for task in TASKS.values() if task.column is not None)
_SHORT = tuple(task for task in _TABLE_TASKS if task.form == "short")
_LONG = tuple(task for task in _TABLE_TASKS if task.form == "long")
COLUMNS = tuple(task.column for task in _SHORT)  # short form: PopQA, TQA, Pub, ARC
# Bio, ASQA em / rg / mau / pre / rec; printed when any is filled
LONG_COLUMNS = tuple(column for task in _LONG for column, _ in task.column_metrics)
# A result file's TASK (SYSTEM__TASK.json) -> its short-form column: popqa, tqa / triviaqa, pub / pubhealth, ...
TASK_NAMES = {tag: task.column for task in _SHORT for tag in task.file_tags}
# Column of a run with --task, from the flag (fever -> Pub, arc_c -> ARC).
FLAG_COLUMNS = {task.task_flag: task.column for task in _SHORT if task.task_flag is not None}
GROUPS = (
    ("no_retrieval", "Baselines without retrieval"),
    ("retrieval", "Baselines with retrieval"),
    ("selfrag", "Self-RAG"),
)
# Paper names of the models of Table 2, matched against the model path's last component (lowercase).
MODEL_NAMES = (
    (re.compile(r"^selfrag_llama2_(\d+)b$"), "Self-RAG {0}B"),
    (re.compile(r"^llama-2-(\d+)b-chat(-hf)?$"), "Llama2-chat-{0}B"),
    (re.compile(r"^llama-2-(\d+)b(-hf)?$"), "Llama2-{0}B"),
    (re.compile(r"^alpaca-(\d+)b.*$"), "Alpaca-{0}B"),
    (re.compile(r"^gpt-3\.5-turbo.*$"), "ChatGPT"),
    (re.compile(r"^gpt-4.*$"), "GPT-4"),
)
# Column of a run without --task, from its input file's name (the original eval files' names, §11).
INPUT_FILE_COLUMNS = tuple(
    (re.compile(task.input_file_pattern), task.column) for task in _SHORT if task.input_file_pattern is not None
)
# Long-form tasks: the columns each fills, from which metric of a summary's `metrics` (fractions).
LONG_TASK_NAMES = {tag: task.column for task in _LONG for tag in task.file_tags}  # asqa -> ASQA, bio / factscore -> Bio
LONG_TASK_METRICS = {task.column: task.column_metrics for task in _LONG}
LONG_TASK_RUNNERS = {task.scorer: task.column for task in _LONG}  # a summary's `runner` -> its task
LONG_TASK_SCORERS = {task.column: SCORER_SCRIPTS[task.scorer] for task in _LONG}  # type: ignore[index]
LONG_TASK_FLAGS = tuple(task.task_flag for task in _LONG)  # --task of the generations the scorers read
# Self-RAG's mode in the paper, per column (App. B.2): adaptive retrieval, except ASQA, which always retrieves.
PAPER_MODES = {task.column: task.paper_mode for task in _TABLE_TASKS}
ADAPTIVE_MODES = (None, "default", "adaptive_retrieval")
NAMED_FILE = re.compile(r"^(?P<system>.+)__(?P<task>[A-Za-z_]+)$")
NO_VALUE = "–"


@dataclass(frozen=True)
class ResultEntry:
    """One result file, placed in the table."""

    path: str
    system: str
    group: str
    column: str
    value: float  # a fraction (metric_mean), not a percentage
    threshold: float | None = None
    retrieval_frequency: float | None = None
    sweepable: bool = False  # Self-RAG, adaptive mode, numeric threshold


def model_label(model_name: str) -> str:
    """The paper's name of a model (`selfrag/selfrag_llama2_7b` -> `Self-RAG 7B`), else its path's last part."""
    base = model_name.rstrip("/").split("/")[-1]
    for pattern, label in MODEL_NAMES:
        found = pattern.match(base.lower())
        if found:
            return label.format(*found.groups())
    return base


def _column_from_config(config: dict[str, Any]) -> str | None:
    task = config.get("task")
    if task:
        return FLAG_COLUMNS.get(task) if isinstance(task, str) else None
    name = Path(str(config.get("input_file", ""))).name.lower()
    for pattern, column in INPUT_FILE_COLUMNS:
        if pattern.search(name):
            return column
    return None


def _read(path: Path) -> dict[str, Any]:
    """A result JSON object, or a JSON Lines file of per-item records (the original baseline's output, also under
    a `.json` name as `run_baseline_lm.py --compat original` writes it), with the run's config from the
    `<file>.config.json` beside it when there is one."""
    from selfrag.data import read_text, run_config

    text = read_text(path, "result file")
    if path.suffix == ".jsonl" or _json_lines(text):
        try:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise DataFormatError(f"{path}: not JSON Lines ({err})") from err
        values = [r.get("metric_result") for r in records]
        if not values or any(not isinstance(v, (int, float)) for v in values):
            raise DataFormatError(
                f"{path}: every line needs a numeric 'metric_result' (the original baseline's output)"
            )
        config = run_config(path)
        return {"metric_mean": sum(values) / len(values), **({"config": config} if config else {})}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: a result file holds one JSON object")
    return data


def _json_lines(text: str) -> bool:
    """Whether `text` holds several JSON objects, one per line (rather than one JSON value)."""
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        return err.msg == "Extra data" and text.lstrip().startswith("{")
    return False


def _row_from_config(config: dict[str, Any], is_selfrag: bool, paper_mode: str) -> tuple[str, str]:
    """(system, group) of a run from its config; `paper_mode` is Self-RAG's mode in the paper for the task."""
    label = model_label(str(config.get("model_name", "?")))
    mode = config.get("mode")
    if is_selfrag:
        group = "selfrag"
        system = label if label.startswith("Self-RAG") else f"Self-RAG ({label})"
        resolved = "adaptive_retrieval" if mode in ADAPTIVE_MODES else mode
        if resolved != paper_mode:
            system += f" ({resolved})"
    else:
        group = "retrieval" if mode == "retrieval" else "no_retrieval"
        system = ("Ret-" if group == "retrieval" else "") + label
    if config.get("compat") == "original":
        system += " [compat original]"
    return system, group


def _named_group(system: str, is_selfrag: bool, mode: Any) -> str:
    """The group of a file placed by its name."""
    if is_selfrag or "self-rag" in system.lower():
        return "selfrag"
    return "retrieval" if mode == "retrieval" or system.startswith("Ret-") else "no_retrieval"


def load_results(path: str | Path, metric: str | None = None) -> list[ResultEntry]:
    """Place one result file: one entry per cell it fills (a short-form file one, an ASQA summary up to five);
    none (with a warning) when it belongs to no cell of the table."""
    path = Path(path)
    data = _read(path)
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    named = NAMED_FILE.match(path.stem)
    task = named.group("task").lower() if named else None
    if named and task not in TASK_NAMES and task not in LONG_TASK_NAMES:
        named, task = None, None
    runner_task = LONG_TASK_RUNNERS.get(str(data.get("runner")))
    if runner_task or task in LONG_TASK_NAMES:
        named_column = (TASK_NAMES.get(task) or LONG_TASK_NAMES.get(task)) if task else None
        if named_column and runner_task and named_column != runner_task:
            raise DataFormatError(
                f"{path}: named for {named_column} but holds a {LONG_TASK_SCORERS[runner_task]} summary "
                f"({runner_task}); rename it SYSTEM__{runner_task.lower()}.json"
            )
        system = named.group("system") if named else None
        return _load_long_form(path, data, config, system, named_column or runner_task)  # type: ignore[arg-type]
    entry = _load_short_form(path, data, config, named, metric)
    return [entry] if entry is not None else []


def _long_form_metrics(path: Path, data: dict[str, Any], task: str) -> dict[str, Any]:
    """The fractions of an eval_alce.py / eval_factscore.py summary, ALCE's score dict or FactScore's output."""
    metrics = data.get("metrics")
    if isinstance(metrics, dict):
        return metrics
    if data.get("runner") in LONG_TASK_RUNNERS:
        raise DataFormatError(f"{path}: a {LONG_TASK_SCORERS[task]} summary without a 'metrics' object")
    if task == "ASQA":  # ALCE's eval.py scores, in percent
        return {k: v / 100 for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"factscore": data.get("score")}  # FactScore's output, a fraction


def _load_long_form(
    path: Path, data: dict[str, Any], config: dict[str, Any], system: str | None, task: str
) -> list[ResultEntry]:
    """The ASQA / Bio cells of an eval_alce.py / eval_factscore.py summary (or of the scorers' own files)."""
    config_task = config.get("task")
    if system is None and config_task is not None and config_task not in LONG_TASK_FLAGS:
        logger.warning(
            "%s: a %s summary of task %r, which is not a column of Table 2 (ASQA, Bio); skipped",
            path,
            LONG_TASK_SCORERS[task],
            config_task,
        )
        return []
    metrics = _long_form_metrics(path, data, task)
    values = [
        (column, metrics[key])
        for column, key in LONG_TASK_METRICS[task]
        if isinstance(metrics.get(key), (int, float)) and not math.isnan(metrics[key])
    ]
    if not values:
        logger.warning(
            "%s: none of %s in it; skipped",
            path,
            ", ".join(key for _, key in LONG_TASK_METRICS[task]),
        )
        return []
    generator = data.get("generator")
    if system is not None:
        group = _named_group(system, generator == "self-rag", config.get("mode"))
    elif not config:
        logger.warning(
            "%s: no generation 'config' to name its row; name the file SYSTEM__%s.json; skipped", path, task.lower()
        )
        return []
    elif generator not in ("self-rag", "baseline"):
        logger.warning(
            "%s: its 'generator' (%r) says neither self-rag nor baseline; name the file SYSTEM__%s.json; skipped",
            path,
            generator,
            task.lower(),
        )
        return []
    else:
        system, group = _row_from_config(config, generator == "self-rag", PAPER_MODES[task])
    return [ResultEntry(str(path), system, group, column, float(value)) for column, value in values]


def _load_short_form(
    path: Path, data: dict[str, Any], config: dict[str, Any], named: re.Match[str] | None, metric: str | None
) -> ResultEntry | None:
    """The PopQA / TQA / Pub / ARC cell of a run_short_form.py / run_baseline_lm.py output."""
    is_selfrag = "all_results" in data or "retrieve" in data
    if metric is None:
        value = data.get("metric_mean")
    else:
        metrics = data.get("metrics") or {}
        if metric not in metrics:
            raise DataFormatError(f"{path}: no '{metric}' in its 'metrics' ({sorted(metrics) or 'none'})")
        value = metrics[metric]
    if not isinstance(value, (int, float)) or math.isnan(value):
        logger.warning("%s: no metric value (run with --metric none?); skipped", path)
        return None

    mode = config.get("mode")
    if named:
        system, column = named.group("system"), TASK_NAMES[named.group("task").lower()]
        group = _named_group(system, is_selfrag, mode)
    elif config:
        column = _column_from_config(config)
        long_task = LONG_TASK_NAMES.get(str(config.get("task")))
        if column is None and long_task:
            logger.warning(
                "%s: task %r is a generation to score: run %s --result_fp FILE on it and pass FILE; skipped",
                path,
                config.get("task"),
                LONG_TASK_SCORERS[long_task],
            )
            return None
        if column is None:
            logger.warning(
                "%s: task %r / input %r is not a column of Table 2 (%s); skipped",
                path,
                config.get("task"),
                config.get("input_file"),
                ", ".join(COLUMNS),
            )
            return None
        system, group = _row_from_config(config, is_selfrag, PAPER_MODES[column])
    else:
        logger.warning(
            "%s: no 'config' to name its row and column; name the file SYSTEM__TASK.json "
            "(TASK: popqa, tqa, pub, arc, asqa or bio); skipped",
            path,
        )
        return None

    threshold = config.get("threshold")
    adaptive = mode in ADAPTIVE_MODES
    return ResultEntry(
        path=str(path),
        system=system,
        group=group,
        column=column,
        value=float(value),
        threshold=float(threshold) if isinstance(threshold, (int, float)) else None,
        retrieval_frequency=data.get("retrieval_frequency"),
        sweepable=is_selfrag and adaptive and isinstance(threshold, (int, float)),
    )


def result_files(paths: Iterable[str | Path]) -> list[Path]:
    """The result files among `paths`; a directory contributes its `*.json` / `*.jsonl` files (recursively),
    without the `.config.json`, `.partial.jsonl` and `.tmp` files written beside results."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl") and p.is_file())
            files.extend(p for p in found if not p.name.endswith((".config.json", ".partial.jsonl")))
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"{path}: no such file or directory")
    return files


def collect(paths: Iterable[str | Path], metric: str | None = None) -> list[ResultEntry]:
    entries = [e for p in result_files(paths) for e in load_results(p, metric)]
    if not entries:
        raise ConfigError("no result file could be placed in the table (see the warnings above)")
    return entries


def _fmt(value: float | None) -> str:
    return NO_VALUE if value is None else f"{100 * value:.1f}"


def table2_markdown(entries: Sequence[ResultEntry]) -> str:
    """The markdown table: one row per system, grouped as in the paper, columns PopQA, TQA, Pub, ARC, then Bio and
    ASQA em / rg / mau / pre / rec when any entry fills one of them (so short-form results alone give the
    four-column table)."""
    cells: dict[tuple[str, str], ResultEntry] = {}
    groups: dict[str, str] = {}
    for entry in entries:
        key = (entry.system, entry.column)
        if key in cells:
            raise ConfigError(
                f"two results for {entry.system} / {entry.column}: {cells[key].path} and {entry.path}; move one away "
                "or rename it SYSTEM__TASK.json (threshold sweeps go to --sweep)"
            )
        cells[key] = entry
        groups.setdefault(entry.system, entry.group)
    columns = COLUMNS + LONG_COLUMNS if any(e.column in LONG_COLUMNS for e in entries) else COLUMNS
    lines = ["| System | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for group, title in GROUPS:
        systems = sorted(s for s, g in groups.items() if g == group)
        if not systems:
            continue
        lines.append(f"| *{title}* |" + " |" * len(columns))
        for system in systems:
            values = [_fmt(cells[(system, c)].value) if (system, c) in cells else NO_VALUE for c in columns]
            lines.append(f"| {system} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Threshold sweep (Fig. 3c)


@dataclass(frozen=True)
class SweepCurve:
    system: str
    column: str
    thresholds: list[float]
    accuracy: list[float]  # percentages
    retrieval: list[float]  # percentages


def sweep_curves(entries: Sequence[ResultEntry]) -> list[SweepCurve]:
    """One curve per (system, task) from the sweepable entries, sorted by threshold."""
    points: dict[tuple[str, str], dict[float, ResultEntry]] = {}
    for entry in entries:
        if not entry.sweepable:
            logger.warning("%s: not an adaptive Self-RAG run with a numeric threshold; not in the sweep", entry.path)
            continue
        if entry.retrieval_frequency is None:
            raise DataFormatError(f"{entry.path}: no 'retrieval_frequency' (not a run_short_form.py output?)")
        curve = points.setdefault((entry.system, entry.column), {})
        if entry.threshold in curve:
            raise ConfigError(
                f"two results at threshold {entry.threshold} for {entry.system} / {entry.column}: "
                f"{curve[entry.threshold].path} and {entry.path}"
            )
        curve[entry.threshold] = entry  # type: ignore[index]
    if not points:
        raise ConfigError("no threshold sweep found: pass run_short_form.py outputs of adaptive runs with --threshold")
    curves = []
    for (system, column), by_threshold in sorted(points.items(), key=lambda kv: (kv[0][0], COLUMNS.index(kv[0][1]))):
        ordered = sorted(by_threshold.items())
        curves.append(
            SweepCurve(
                system,
                column,
                [t for t, _ in ordered],
                [100 * e.value for _, e in ordered],
                [100 * float(e.retrieval_frequency) for _, e in ordered],  # type: ignore[arg-type]
            )
        )
    return curves


def sweep_markdown(curves: Sequence[SweepCurve]) -> str:
    lines = ["| System | Task | Threshold | Accuracy | Retrieval (%) |", "|---|---|---|---|---|"]
    for curve in curves:
        for t, acc, ret in zip(curve.thresholds, curve.accuracy, curve.retrieval):
            lines.append(f"| {curve.system} | {curve.column} | {t:g} | {acc:.1f} | {ret:.1f} |")
    return "\n".join(lines) + "\n"


def plot_sweep(curves: Sequence[SweepCurve], path: str | Path) -> Path:
    """Fig. 3c: accuracy and retrieval frequency (%) against the threshold, one panel per (system, task).

    Raises ImportError when matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.2), squeeze=False)
    for ax, curve in zip(axes[0], curves):
        ax.plot(curve.thresholds, curve.accuracy, marker="o", label="Accuracy")
        ax.plot(curve.thresholds, curve.retrieval, marker="s", linestyle="--", label="Retrieval frequency")
        ax.set_title(f"{curve.system}: {curve.column}")
        ax.set_xlabel("Retrieval threshold")
        ax.set_ylabel("%")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
