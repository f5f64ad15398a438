#!/usr/bin/env python
"""Combine judge-labelled aspect files into critic training data, split into train and dev by seed.

Replaces the original data_creation/critic/gpt4_reward/combine_chat_gpt_reward.py:

    python data_creation/combine_critic_data.py --input_files labels/retrieval.jsonl labels/relevance.jsonl \
        labels/groundness.jsonl labels/utility.jsonl labels/multi_retrieval.jsonl --output_file_name critic_data

Each input is an output of data_creation/critic_label.py (items carry their `aspect` and `label`). Writes
{output_file_name}_train.json and {output_file_name}_dev.json: lists of {instruction, input, output, task}.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from selfrag import commands
from selfrag.cli import run_main


def main(argv: Sequence[str] | None = None) -> int:
    return commands.combine(argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(run_main(main, None))
