"""The expected form of each Self-RAG eval file, and telling a file's dataset from its name.

The forms are those of the original `eval_data` release (docs/original_selfrag.md §11), one `DatasetFormat` per
dataset in `TASK_FORMATS`. `selfrag.eval.check` checks items against them, `selfrag.eval.convert` converts known
variants into them, and `selfrag.eval.data.prepare_eval_file` ties both together for `scripts/prepare_eval_data.py`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from selfrag.errors import ConfigError

MAX_LISTED = 20  # problems listed in a report; the rest are only counted
PASSAGE_KEYS = ("ctxs", "top_contexts", "docs")  # where passages may live; the format names the expected one
CONVERT_HINT = "--output_file converts it"


@dataclass(frozen=True)
class DatasetFormat:
    """The expected form of one eval file (docs/original_selfrag.md §11).

    Attributes:
        name: the dataset name (`--dataset`).
        file_names: the file names in the original release, for `detect_dataset`.
        query_field: the field holding the question or prompt (`input` for FactScore).
        gold: how the gold answers are stored: `aliases` (`answers`, a non-empty list of strings), `true_false`
            (`answers`, `["true"]` or `["false"]`, lowercase), `answer_key` (`choices` `{text, label}` and
            `answerKey`), `alce` (ALCE's `qa_pairs` / `answer`, passed through unchecked) or `None` (no gold).
        passages: the key of the passage list: `ctxs`, or ALCE's `docs` for ASQA.
        required_strings: other fields that must be non-empty strings.
        run: how the runners use the file.
    """

    name: str
    file_names: tuple[str, ...]
    query_field: str
    gold: str | None
    passages: str
    required_strings: tuple[str, ...] = ()
    run: str = ""


TASK_FORMATS: dict[str, DatasetFormat] = {
    fmt.name: fmt
    for fmt in (
        DatasetFormat(
            "popqa",
            ("popqa_longtail_w_gs.jsonl",),
            "question",
            "aliases",
            "ctxs",
            run="retrieval_lm/run_short_form.py, no --task",
        ),
        DatasetFormat(
            "triviaqa",
            ("triviaqa_test_w_gs.jsonl", "triviaqa_test.jsonl"),
            "question",
            "aliases",
            "ctxs",
            run="retrieval_lm/run_short_form.py, no --task",
        ),
        DatasetFormat(
            "pubhealth",
            ("health_claims_processed.jsonl",),
            "question",
            "true_false",
            "ctxs",
            run="retrieval_lm/run_short_form.py --task fever",
        ),
        DatasetFormat(
            "arc_c",
            ("arc_challenge_processed.jsonl",),
            "question",
            "answer_key",
            "ctxs",
            run="retrieval_lm/run_short_form.py --task arc_c",
        ),
        DatasetFormat(
            "asqa",
            ("asqa_eval_gtr_top100.json",),
            "question",
            "alce",
            "docs",
            run="retrieval_lm/run_long_form_static.py --task asqa (a JSON list, ALCE's format)",
        ),
        DatasetFormat(
            "factscore",
            ("factscore_unlabeled_alpaca_13b_retrieval.jsonl",),
            "input",
            None,
            "ctxs",
            required_strings=("topic",),
            run="retrieval_lm/run_long_form_static.py --task factscore",
        ),
    )
}


def dataset_format(dataset: str) -> DatasetFormat:
    """The `DatasetFormat` of `dataset`; raises `ConfigError` naming the known datasets."""
    if dataset not in TASK_FORMATS:
        raise ConfigError(f"unknown dataset '{dataset}'; expected one of {sorted(TASK_FORMATS)}")
    return TASK_FORMATS[dataset]


def detect_dataset(path: str | os.PathLike) -> str:
    """The dataset of an eval file, from its name in the original release (e.g. `arc_challenge_processed.jsonl`).

    Raises:
        ConfigError: the name is not one of the release's; the caller must pass the dataset explicitly.
    """
    name = Path(path).name
    for fmt in TASK_FORMATS.values():
        if name in fmt.file_names:
            return fmt.name
    known = sorted(n for fmt in TASK_FORMATS.values() for n in fmt.file_names)
    raise ConfigError(
        f"cannot tell the dataset from the file name '{name}' (known names: {known}); "
        f"pass --dataset, one of {sorted(TASK_FORMATS)}"
    )
