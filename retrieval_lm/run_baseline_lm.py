"""Baselines of Table 2: an LM (HF, vllm or an OpenAI-compatible API) answering with or without retrieved passages.

The original's flags (--model_name --input_file --mode {vanilla,retrieval} --top_n --prompt_name --task --metric
--result_fp --batch_size --max_new_tokens ...), plus --backend {auto,vllm,hf,openai}, --base_url and --compat:

    python retrieval_lm/run_baseline_lm.py --model_name meta-llama/Llama-2-7b-hf \
        --input_file eval_data/popqa_longtail_w_gs.jsonl --mode retrieval --top_n 5 --max_new_tokens 100 \
        --metric match --result_fp results/popqa_llama2-7b_retrieval.json

    python retrieval_lm/run_baseline_lm.py --model_name gpt-3.5-turbo --api_key ~/.openai_key \
        --input_file eval_data/health_claims_processed.jsonl --task fever --max_new_tokens 50 \
        --metric match --result_fp results/pub_chatgpt.json
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from selfrag.cli import parse_config, run_main, setup_logging
from selfrag.eval.baseline import BaselineConfig, run_baseline


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    config = parse_config(BaselineConfig, argv, description=__doc__.splitlines()[0])
    run_baseline(config)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, None))
