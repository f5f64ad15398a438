"""The expected form of each Self-RAG eval file, and telling a file's dataset from its name.

The forms are those of the original `eval_data` release (docs/original_selfrag.md §11), one `DatasetFormat` per
dataset, held by the task registry (`selfrag.tasks`: each task's `input_format`) and listed in `TASK_FORMATS`.
`selfrag.eval.check` checks items against them, `selfrag.eval.convert` converts known variants into them, and
`selfrag.eval.data.prepare_eval_file` ties both together for `scripts/prepare_eval_data.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

from selfrag.errors import ConfigError
from selfrag.tasks import DatasetFormat, input_formats

__all__ = [
    "CONVERT_HINT",
    "MAX_LISTED",
    "PASSAGE_KEYS",
    "TASK_FORMATS",
    "DatasetFormat",
    "dataset_format",
    "detect_dataset",
]

MAX_LISTED = 20  # problems listed in a report; the rest are only counted
PASSAGE_KEYS = ("ctxs", "top_contexts", "docs")  # where passages may live; the format names the expected one
CONVERT_HINT = "--output_file converts it"


# The form of each task's eval file lives in its entry of the task registry (`selfrag.tasks`, `Task.input_format`).
# `TASK_FORMATS` lists the built-in ones; the functions below look the registry up when called.
TASK_FORMATS: dict[str, DatasetFormat] = input_formats()


def dataset_format(dataset: str) -> DatasetFormat:
    """The `DatasetFormat` of `dataset`; raises `ConfigError` naming the known datasets."""
    formats = input_formats()
    if dataset not in formats:
        raise ConfigError(f"unknown dataset '{dataset}'; expected one of {sorted(formats)}")
    return formats[dataset]


def detect_dataset(path: str | os.PathLike) -> str:
    """The dataset of an eval file, from its name in the original release (e.g. `arc_challenge_processed.jsonl`).

    Raises:
        ConfigError: the name is not one of the release's; the caller must pass the dataset explicitly.
    """
    name = Path(path).name
    formats = input_formats()
    for fmt in formats.values():
        if name in fmt.file_names:
            return fmt.name
    known = sorted(n for fmt in formats.values() for n in fmt.file_names)
    raise ConfigError(
        f"cannot tell the dataset from the file name '{name}' (known names: {known}); "
        f"pass --dataset, one of {sorted(formats)}"
    )
