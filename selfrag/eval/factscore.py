"""Biography FactScore (Min et al., 2023) for our outputs: write FactScore's input, run it, read its score back.

FactScore (`pip install factscore`, CLI `python -m factscore.factscorer`) pins torch<2, transformers<5 and
openai<0.28, so it cannot share an environment with this package: install it in a separate one and pass that
interpreter as `factscore_python`. The steps:

1. `write_factscore_input`: one JSON line `{"topic", "output"}` per item of a `run_long_form_static.py --task
   factscore` output (JSON Lines) or of a `run_baseline_lm.py --task factscore` output (its `data`).
2. `run_factscore`: `python -m factscore.factscorer --input_path X.jsonl --model_name retrieval+ChatGPT --openai_key
   KEY_FILE ...`; the judge (`model_name`), key file, data / cache dirs and an OpenAI-compatible base URL
   (`OPENAI_API_BASE`, which openai<0.28 reads) are passed through. It writes `X_factscore_output.json`.
3. `read_factscore_output` + `factscore_summary`: `score` (with the length penalty, gamma 10 by default),
   `init_score` (without), `respond_ratio`, `num_facts_per_response` and per-item supported / total facts
   (from `decisions`) in our results format.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from selfrag.cli import flag
from selfrag.data import clean, load_items, read_text, run_config, where, write_json_atomic
from selfrag.errors import ConfigError, DataFormatError
from selfrag.eval.alce import generator_of

logger = logging.getLogger(__name__)

JUDGES = ("retrieval+ChatGPT", "retrieval+ChatGPT+npm", "retrieval+llama", "retrieval+llama+npm", "npm")


@dataclass
class FactScoreConfig:
    """Flags of `scripts/eval_factscore.py`: our input / output files, then FactScore's own flags, passed through."""

    input_file: str = flag(
        "run_long_form_static.py --task factscore output (jsonl) or run_baseline_lm.py json.", default=""
    )
    factscore_input: str | None = flag(
        "Where to write FactScore's input (default: <input_file without suffix>.factscore.jsonl).", default=None
    )
    result_fp: str | None = flag("Write the score in our results format here (for selfrag eval --table).", default=None)
    score_file: str | None = flag(
        "Read this FactScore output json instead of running FactScore (e.g. from a run on another machine).",
        default=None,
    )
    run: Literal["auto", "always", "never"] = flag(
        "Run FactScore: auto = when factscore is importable by --factscore_python; never = only write its input.",
        default="auto",
    )
    factscore_python: str | None = flag(
        "Python interpreter of an environment with factscore installed (default: this one).", default=None
    )
    model_name: str = flag(f"FactScore's judge, its --model_name: {', '.join(JUDGES)}.", default="retrieval+ChatGPT")
    openai_key: str = flag("FactScore's --openai_key: a file holding the OpenAI key.", default="api.key")
    base_url: str | None = flag(
        "OpenAI-compatible server for FactScore's openai<0.28 client (OPENAI_API_BASE).", default=None
    )
    data_dir: str = flag("FactScore's --data_dir (its Wikipedia db and demos).", default=".cache/factscore/")
    model_dir: str = flag("FactScore's --model_dir.", default=".cache/factscore/")
    cache_dir: str = flag("FactScore's --cache_dir.", default=".cache/factscore/")
    knowledge_source: str | None = flag("FactScore's --knowledge_source (default: its enwiki-20230401).", default=None)
    gamma: int = flag("FactScore's length-penalty --gamma.", default=10)
    abstain_detection_type: Literal["none", "generic", "perplexity_ai"] | None = flag(
        "FactScore's --abstain_detection_type.", default=None
    )
    n_samples: int | None = flag("FactScore's --n_samples: score only the first N.", default=None)

    def __post_init__(self) -> None:
        if not self.input_file and not self.score_file:
            raise ConfigError("--input_file is required (or --score_file with --factscore_input to read a score)")
        if self.model_name not in JUDGES:
            logger.warning("--model_name %s is not one of FactScore's %s", self.model_name, JUDGES)

    @property
    def factscore_input_path(self) -> str:
        if self.factscore_input:
            return self.factscore_input
        path = Path(self.input_file)
        return str(path.with_name(path.name.removesuffix(path.suffix) + ".factscore.jsonl"))


def factscore_records(items: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """`{"topic", "output"}` for each item; the topic and the answer are required strings."""
    records = []
    for item in items:
        for name in ("topic", "output"):
            if not isinstance(item.get(name), str):
                found = "missing" if name not in item else f"a {type(item[name]).__name__}"
                raise DataFormatError(
                    f"{where(item)}: field '{name}' is {found}; FactScore needs each item's 'topic' (the person) and "
                    "'output' (the biography): run run_long_form_static.py or run_baseline_lm.py with --task factscore"
                )
        records.append({"topic": item["topic"], "output": item["output"]})
    return records


def write_factscore_input(input_file: str, path: str) -> list[dict[str, str]]:
    """Write FactScore's input JSON Lines for the items of `input_file`; return the records."""
    records = factscore_records(load_items(input_file))
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    tmp.replace(target)
    logger.info("wrote FactScore's input (%d items) to %s", len(records), path)
    return records


def factscore_output_path(input_path: str) -> str:
    """Where FactScore's CLI writes its score: the input path with `.jsonl` replaced (factscorer.py's rule)."""
    return input_path.replace(".jsonl", "_factscore_output.json")


def factscore_command(config: FactScoreConfig, input_path: str) -> list[str]:
    """The FactScore command line for `input_path`, with the config's flags passed through."""
    command = [config.factscore_python or sys.executable, "-m", "factscore.factscorer", "--input_path", input_path]
    command += ["--model_name", config.model_name, "--openai_key", config.openai_key, "--gamma", str(config.gamma)]
    command += ["--data_dir", config.data_dir, "--model_dir", config.model_dir, "--cache_dir", config.cache_dir]
    if config.knowledge_source:
        command += ["--knowledge_source", config.knowledge_source]
    if config.abstain_detection_type:
        command += ["--abstain_detection_type", config.abstain_detection_type]
    if config.n_samples is not None:
        command += ["--n_samples", str(config.n_samples)]
    return command + ["--verbose", "--print_rate_limit_error"]


def factscore_available(python: str | None) -> bool:
    """Whether `python` (default: this interpreter) can import factscore."""
    if python is None or Path(python).resolve() == Path(sys.executable).resolve():
        return importlib.util.find_spec("factscore") is not None
    done = subprocess.run([python, "-c", "import factscore.factscorer"], capture_output=True, check=False)
    return done.returncode == 0


def run_factscore(config: FactScoreConfig, input_path: str) -> str:
    """Run FactScore on `input_path`; return the path of its output json."""
    command = factscore_command(config, input_path)
    env = dict(os.environ)
    if config.base_url:
        env["OPENAI_API_BASE"] = config.base_url  # read by openai<0.28, which FactScore uses
    logger.info("running FactScore: %s", " ".join(command))
    done = subprocess.run(command, env=env, check=False)
    if done.returncode != 0:
        raise ConfigError(
            f"FactScore exited with status {done.returncode}; its messages are above ({' '.join(command)})"
        )
    output = factscore_output_path(input_path)
    if not Path(output).is_file():
        raise DataFormatError(f"{output}: FactScore finished but wrote no score file (factscore>=0.2.0 writes one)")
    return output


def read_factscore_output(path: str) -> dict[str, Any]:
    """FactScore's output json: `score` and `respond_ratio` (fractions) are required; `init_score`,
    `num_facts_per_response` and `decisions` are kept when present."""
    try:
        out = json.loads(read_text(path, "FactScore output"))
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err
    if not isinstance(out, dict):
        raise DataFormatError(f"{path}: expected FactScore's output object, found {type(out).__name__}")
    for name in ("score", "respond_ratio"):
        if not isinstance(out.get(name), (int, float)):
            raise DataFormatError(f"{path}: field '{name}' is missing or not a number (not a FactScore output?)")
    return out


def _per_item(records: Sequence[Mapping[str, str]], decisions: Sequence[Any] | None) -> list[dict[str, Any]] | None:
    """Supported / total atomic facts per item from FactScore's `decisions` (None where the model abstained)."""
    if decisions is None:
        return None
    rows = []
    for record, decision in zip(records, decisions):
        if decision is None:
            rows.append({"topic": record["topic"], "facts": None, "supported": None})
        else:
            supported = sum(bool(d.get("is_supported")) for d in decision)
            rows.append({"topic": record["topic"], "facts": len(decision), "supported": supported})
    return rows


def factscore_summary(
    out: Mapping[str, Any],
    records: Sequence[Mapping[str, str]],
    source_config: Mapping[str, Any] | None,
    eval_config: FactScoreConfig,
) -> dict[str, Any]:
    """Our results format (fractions, like `metric_mean` elsewhere) for a FactScore output."""
    metrics = {"factscore": float(out["score"]), "respond_ratio": float(out["respond_ratio"])}
    if isinstance(out.get("init_score"), (int, float)):
        metrics["factscore_init"] = float(out["init_score"])
    if isinstance(out.get("num_facts_per_response"), (int, float)):
        metrics["num_facts_per_response"] = float(out["num_facts_per_response"])
    return {
        "runner": "factscore",
        "metric": "factscore",
        "metric_mean": metrics["factscore"],
        "metrics": metrics,
        "n_items": len(out["decisions"]) if isinstance(out.get("decisions"), list) else len(records),
        "per_item": _per_item(records, out.get("decisions")),
        "generator": generator_of(source_config or {}),
        "config": dict(source_config or {}),
        "eval_config": dict(vars(eval_config)),
    }


def evaluate_factscore(config: FactScoreConfig) -> dict[str, Any] | None:
    """Write FactScore's input, get its score (read, or run), write `result_fp`; return the summary, or None when
    FactScore was not run (the input is written and the command to run is logged)."""
    input_path = config.factscore_input_path
    if config.input_file:
        records = write_factscore_input(config.input_file, input_path)
    else:
        records = [clean(item) for item in load_items(input_path)]
    score_file = config.score_file
    if score_file is None:
        if config.run == "never" or (config.run == "auto" and not factscore_available(config.factscore_python)):
            if config.run == "auto":
                logger.warning(
                    "factscore is not importable by %s: install it in its own environment (pip install factscore; it "
                    "needs torch<2, openai<0.28) and pass --factscore_python ENV/bin/python, or run it yourself:",
                    config.factscore_python or sys.executable,
                )
            logger.warning("  %s", " ".join(factscore_command(config, input_path)))
            logger.warning("then read its score back with --score_file %s", factscore_output_path(input_path))
            return None
        if config.run == "always" and not factscore_available(config.factscore_python):
            raise ConfigError(
                f"--run always: factscore is not importable by {config.factscore_python or sys.executable}"
            )
        score_file = run_factscore(config, input_path)
    out = read_factscore_output(score_file)
    summary = factscore_summary(out, records, run_config(config.input_file) if config.input_file else {}, config)
    logger.info("FActScore = %.1f%% (respond ratio %.1f%%)", 100 * out["score"], 100 * out["respond_ratio"])
    if config.result_fp:
        write_json_atomic(config.result_fp, summary)
    return summary
