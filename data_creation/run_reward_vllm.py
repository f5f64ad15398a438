#!/usr/bin/env python
"""Critic inference: label one file for one reflection aspect with a trained critic (vllm or HF), batched, resumable.

The original data_creation/generator/run_reward_vllm.py, with its flags (docs/data_creation.md):

    python data_creation/run_reward_vllm.py --input_file rel_inputs.jsonl --model_name critic_llama2_7b \
        --task relevance --inst_mode relevance_instruction --input_mode relevance_input --metric match \
        --result_fp rel_preds.json --split test --backend vllm --batch_size 256
    # the brief's names work too:
    python data_creation/run_reward_vllm.py --critic_model_path critic_llama2_7b --aspect relevance \
        --input_file rel_inputs.jsonl --output_file rel_preds.jsonl --backend hf --batch_size 16

--split train scores the critic on critic training records of --task (accuracy). --judge_model gpt-4 (with
--base_url) labels with an OpenAI-compatible judge instead. Writes <result_fp> (items + pred + raw_output),
<result_fp>.rejects.jsonl and <result_fp>.stats.json; rerun the same command to resume.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from selfrag.cli import parse_config, run_main, setup_logging
from selfrag.data_creation.critic_infer import RewardConfig, label_file


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    config = parse_config(RewardConfig, argv, description=__doc__.splitlines()[0])
    summary = label_file(config)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, None))
