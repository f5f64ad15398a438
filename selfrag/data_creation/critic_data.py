"""Combine judge-labelled aspects into critic training data (the original combine_chat_gpt_reward.py, §8.2).

Each labelled item (output of `judge.label_items`: the input fields plus `aspect` and `label`) becomes one record
`{"instruction", "input", "output", "task"}` (`critic_prompts.critic_record`), the format the critic trainer reads
(`### Instruction:\\n{instruction}\\n\\n### Input:\\n{input}\\n\\n### Response:` -> `output`).

Differences from the original, on purpose:
- every label is re-validated against its aspect's label set; invalid ones are counted and dropped, never mapped;
- the `[Relevant]` down-sampling (the original kept each with probability 0.7, unseeded) is `relevant_keep`,
  default 1.0 (keep all), seeded;
- shuffling and the train/dev split are seeded; the dev set is the first `dev_size` shuffled records (the
  original's 1500), at most half of the data;
- duplicate (instruction, input) pairs are kept once; records whose instruction or input contains
  `### Response:` are dropped, as in the original (they would break the prompt).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from selfrag import tokens
from selfrag.cli import flag
from selfrag.data import where
from selfrag.data_creation.critic_prompts import critic_record, get_aspect
from selfrag.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass
class CombineConfig:
    input_files: list[str] = flag("Labelled files from critic_label.py (any aspects).", default_factory=list)
    output_file_name: str = flag("Prefix of {prefix}_train.json and {prefix}_dev.json.", default="critic_data")
    dev_size: int = flag("Records in the dev split (the original's 1500; at most half the data).", default=1500)
    seed: int = flag("Seed of the shuffle, the split and the [Relevant] down-sampling.", default=0)
    relevant_keep: float = flag(
        "Keep each [Relevant] relevance record with this probability (original: 0.7).", default=1.0
    )

    def __post_init__(self) -> None:
        if not self.input_files:
            raise ConfigError("--input_files: give at least one labelled file (from critic_label.py)")
        if not 0.0 <= self.relevant_keep <= 1.0 or self.dev_size < 0:
            raise ConfigError("--relevant_keep must be in [0, 1] and --dev_size at least 0")


def critic_records(
    labelled: Iterable[Mapping[str, Any]], aspect: str | None = None, relevant_keep: float = 1.0, seed: int = 0
) -> tuple[list[dict[str, str]], Counter]:
    """Critic records from labelled items (`aspect` defaults to each item's own `aspect` field) and drop counts."""
    rng = random.Random(seed)
    records: list[dict[str, str]] = []
    dropped: Counter = Counter()
    seen: set[tuple[str, str]] = set()
    for item in labelled:
        name = aspect or item.get("aspect")
        if not isinstance(name, str):
            dropped["no aspect"] += 1
            logger.warning("%s: no 'aspect' field; dropped", where(item))
            continue
        label = item.get("label")
        if label not in get_aspect(name).labels:
            dropped[f"{name}: invalid label"] += 1
            logger.warning("%s: %r is not a %s label; dropped", where(item), label, name)
            continue
        if label == tokens.RELEVANT and name == "relevance" and rng.random() >= relevant_keep:
            dropped[f"{name}: [Relevant] down-sampled"] += 1
            continue
        record = critic_record(name, item, label)
        if "### Response:" in record["instruction"] or "### Response:" in record["input"]:
            dropped[f"{name}: contains '### Response:'"] += 1
            continue
        if (record["instruction"], record["input"]) in seen:
            dropped[f"{name}: duplicate"] += 1
            continue
        seen.add((record["instruction"], record["input"]))
        records.append(record)
    return records, dropped


def split_train_dev(
    records: list[dict[str, str]], dev_size: int, seed: int
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Shuffle with `seed`; dev = the first `min(dev_size, len // 2)` records, train = the rest."""
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    n_dev = min(max(dev_size, 0), len(shuffled) // 2)
    if n_dev < dev_size:
        logger.warning("only %d records: dev set cut from %d to %d", len(shuffled), dev_size, n_dev)
    return shuffled[n_dev:], shuffled[:n_dev]


def label_distribution(records: Iterable[Mapping[str, str]]) -> dict[str, dict[str, int]]:
    """Counts of each output label per task (for the log and a sanity check of the judge)."""
    dist: dict[str, Counter] = {}
    for record in records:
        dist.setdefault(record["task"], Counter())[record["output"]] += 1
    return {task: dict(sorted(counts.items())) for task, counts in sorted(dist.items())}
