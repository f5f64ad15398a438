"""Short-form Self-RAG inference and evaluation (PopQA, TriviaQA, PubHealth, ARC-Challenge).

Same flags as the original script, plus --backend {auto,vllm,hf}, --batch_size and --compat {none,original}:

    python retrieval_lm/run_short_form.py --model_name selfrag/selfrag_llama2_7b \
        --input_file eval_data/popqa_longtail_w_gs.jsonl --mode adaptive_retrieval --max_new_tokens 100 \
        --threshold 0.2 --output_file results/popqa.json --metric match --ndocs 10 \
        --use_groundness --use_utility --use_seqscore --dtype half
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from selfrag.cli import parse_config, run_main, setup_logging
from selfrag.eval.short_form import ShortFormConfig, run_short_form


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    config = parse_config(ShortFormConfig, argv, description=__doc__.splitlines()[0])
    run_short_form(config)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, None))
