"""Check downloaded Self-RAG eval files and convert known variants into the form the runners read.

The expected form of each file is that of the original `eval_data` release (docs/original_selfrag.md §11); it is
listed per dataset in `TASK_FORMATS` (selfrag/eval/formats.py). `check_items` (selfrag/eval/check.py) reports every
deviation with its `file:line`, `convert_item` (selfrag/eval/convert.py) normalises the variants we know of (other
field names, raw PopQA / PUBHEALTH / AI2-ARC rows, numeric passage ids and scores), and `prepare_eval_file`, here,
ties them together for `scripts/prepare_eval_data.py`. This module re-exports the public names of all three:

    python scripts/prepare_eval_data.py --input_file ~/Downloads/eval_data/popqa_longtail_w_gs.jsonl \
        --output_file eval_data/popqa_longtail_w_gs.jsonl
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from selfrag.data import clean, load_items, write_json_atomic
from selfrag.errors import ConfigError
from selfrag.eval.check import CheckReport, build_report, check_item, check_items
from selfrag.eval.convert import CONVERSION_RULES, Rule, convert_item, convert_items
from selfrag.eval.formats import (
    CONVERT_HINT,
    MAX_LISTED,
    PASSAGE_KEYS,
    TASK_FORMATS,
    DatasetFormat,
    dataset_format,
    detect_dataset,
)

__all__ = [
    "CONVERSION_RULES",
    "CONVERT_HINT",
    "MAX_LISTED",
    "PASSAGE_KEYS",
    "TASK_FORMATS",
    "CheckReport",
    "DatasetFormat",
    "Rule",
    "build_report",
    "check_item",
    "check_items",
    "convert_item",
    "convert_items",
    "dataset_format",
    "detect_dataset",
    "file_sha256",
    "prepare_eval_file",
    "write_items",
]

logger = logging.getLogger(__name__)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (eval files can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_items(path: str | os.PathLike, items: list[dict[str, Any]]) -> None:
    """Write items atomically: a JSON list for a `.json` path (as ALCE's files), else JSON Lines."""
    path = Path(path)
    records = [clean(item) for item in items]
    if path.suffix == ".json":
        write_json_atomic(path, records)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def prepare_eval_file(
    input_file: str | os.PathLike,
    dataset: str | None = None,
    output_file: str | os.PathLike | None = None,
    drop_invalid: bool = False,
) -> CheckReport:
    """Check `input_file`; with `output_file`, convert it and write the result when no problem remains.

    Args:
        input_file: a downloaded eval file (JSON Lines, or a `.json` list).
        dataset: a key of `TASK_FORMATS`; default: detected from the file name (`detect_dataset`).
        output_file: where to write the converted items (`.json`: a JSON list, else JSON Lines). Not written while
            problems remain, so a half-valid file never sits under an eval name.
        drop_invalid: exclude items that still have problems after conversion (counted in the report).

    Returns:
        The report, with `input_file`, `sha256` and, when written, `output_file` and `output_sha256`; also logged.
    """
    dataset = dataset or detect_dataset(input_file)
    dataset_format(dataset)
    if output_file is not None and Path(output_file).resolve() == Path(input_file).resolve():
        raise ConfigError(
            f"--output_file {output_file} is the input file; write to another path so the download stays as it was"
        )
    items = load_items(input_file)
    sha256 = file_sha256(input_file)
    if output_file is None:
        if drop_invalid:
            logger.warning("--drop_invalid has no effect without --output_file")
        report = check_items(items, dataset)
    else:
        converted, report = convert_items(items, dataset, drop_invalid=drop_invalid)
        if report.ok:
            write_items(output_file, converted)
            report = dataclasses.replace(report, output_file=str(output_file), output_sha256=file_sha256(output_file))
        else:
            logger.error(
                "not writing %s: %d problems remain; fix them in the input, or pass --drop_invalid to "
                "exclude those items",
                output_file,
                report.n_problems,
            )
    report = dataclasses.replace(report, input_file=str(input_file), sha256=sha256)
    report.log()
    return report
