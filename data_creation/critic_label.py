#!/usr/bin/env python
"""Label instruction data for one reflection aspect with a judge model (GPT-4 or any OpenAI-compatible server).

Replaces the original dc/critic/gpt4_reward/chatgpt_{need_retrieval,relevance,groundness,utility}.py:

    python data_creation/critic_label.py --aspect relevance --input_file rel_inputs.jsonl \
        --output_file labels/relevance.jsonl --model gpt-4 --dry_run        # cost estimate, sends nothing
    python data_creation/critic_label.py --aspect relevance --input_file rel_inputs.jsonl \
        --output_file labels/relevance.jsonl --model gpt-4                   # rerun to resume / retry failures

Writes <output_file>, <output_file>.rejects.jsonl and <output_file>.usage.json; replies are cached in
<output_file>.cache.sqlite (or --cache_file), so a rerun never pays twice. Exit status 1 if some requests still
failed after all retries (rerun to retry them).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from selfrag import commands
from selfrag.cli import run_main


def main(argv: Sequence[str] | None = None) -> int:
    return commands.label(argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(run_main(main, None))
