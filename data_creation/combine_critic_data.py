#!/usr/bin/env python
"""Combine judge-labelled aspect files into critic training data, split into train and dev by seed.

Replaces the original data_creation/critic/gpt4_reward/combine_chat_gpt_reward.py:

    python data_creation/combine_critic_data.py --input_files labels/retrieval.jsonl labels/relevance.jsonl \
        labels/groundness.jsonl labels/utility.jsonl labels/multi_retrieval.jsonl --output_file_name critic_data

Each input is an output of data_creation/critic_label.py (items carry their `aspect` and `label`). Writes
{output_file_name}_train.json and {output_file_name}_dev.json: lists of {instruction, input, output, task}.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from selfrag.cli import parse_config, run_main, setup_logging  # noqa: E402
from selfrag.data import load_items, write_json_atomic  # noqa: E402
from selfrag.data_creation.critic_data import (  # noqa: E402
    CombineConfig,
    critic_records,
    label_distribution,
    split_train_dev,
)

logger = logging.getLogger("selfrag.combine_critic_data")


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    config = parse_config(CombineConfig, argv, description=__doc__.splitlines()[0])
    items = [item for path in config.input_files for item in load_items(path)]
    records, dropped = critic_records(items, relevant_keep=config.relevant_keep, seed=config.seed)
    train, dev = split_train_dev(records, config.dev_size, config.seed)
    write_json_atomic(f"{config.output_file_name}_train.json", train)
    write_json_atomic(f"{config.output_file_name}_dev.json", dev)
    stats = {"train": len(train), "dev": len(dev), "dropped": dict(dropped), "labels": label_distribution(records)}
    print(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, None))
