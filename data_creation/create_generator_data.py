#!/usr/bin/env python
"""Generator training data from raw instruction data: critic labels, retrieval and sentence splitting in one chain.

Replaces the original data_creation/generator/ steps (create_retrieval_data.py, passage_retrieval.py,
run_reward_vllm.py x5, create_prompt_data.py, postprocess_data.py; docs/data_creation.md):

    python data_creation/create_generator_data.py --input_files raw/*.jsonl --output_file gen_data.jsonl \
        --work_dir gen_work --model_name critic_llama2_7b --backend vllm --batch_size 256 \
        --retriever facebook/contriever-msmarco --passages psgs_w100.tsv \
        --passages_embeddings "wikipedia_embeddings/*" --n_docs 10 --top_n 10

Each step writes its file under --work_dir; rerun the same command to resume. --judge_model gpt-4 (with
--base_url for any OpenAI-compatible server) labels with a judge instead of a critic model. Writes <output_file>
({instruction, output, input, id, dataset_name}) and <output_file>.stats.json (label distribution, drops).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from selfrag.cli import parse_config, run_main, setup_logging
from selfrag.data_creation.pipeline import GeneratorDataConfig, run_generator_data


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    config = parse_config(GeneratorDataConfig, argv, description=__doc__.splitlines()[0])
    result = run_generator_data(config)
    summary = {k: result.stats[k] for k in ("items", "instances", "dropped", "critic_labels", "output_tokens")}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, None))
