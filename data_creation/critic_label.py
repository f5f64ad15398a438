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

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from selfrag.cli import parse_config, run_main, setup_logging  # noqa: E402
from selfrag.data import write_json_atomic  # noqa: E402
from selfrag.data_creation.judge import CriticLabelConfig, config_dict, label_items  # noqa: E402

logger = logging.getLogger("selfrag.critic_label")


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    config = parse_config(CriticLabelConfig, argv, description=__doc__.splitlines()[0])
    summary = label_items(config)
    print(json.dumps(summary, indent=1))
    if config.dry_run:
        return 0
    write_json_atomic(config.output_file + ".usage.json", {"config": config_dict(config), **summary})
    logger.info(
        "%d labelled, %d rejected, %d failed; paid %d requests: %d prompt + %d completion tokens (%.4f)",
        summary["labelled"],
        summary["rejected"],
        summary["failed"],
        summary["requests_paid"],
        summary["prompt_tokens"],
        summary["completion_tokens"],
        summary["cost"],
    )
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(run_main(main, None))
