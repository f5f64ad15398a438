"""Long-form Self-RAG (ASQA, ELI5, biography FactScore): segment-level beam search over pre-retrieved passages.

Same flags as the original script, plus --backend {auto,vllm,hf}, --batch_size and --compat {none,original}:

    python retrieval_lm/run_long_form_static.py --model_name selfrag/selfrag_llama2_7b \
        --ndocs 5 --max_new_tokens 300 --threshold 0.2 --use_grounding --use_utility --use_seqscore \
        --task asqa --input_file eval_data/asqa_eval_gtr_top100.json --output_file results/asqa.json \
        --max_depth 7 --mode always_retrieve
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from selfrag.cli import parse_config, run_main, setup_logging
from selfrag.eval.long_form import LongFormConfig, run_long_form


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    config = parse_config(LongFormConfig, argv, description=__doc__.splitlines()[0])
    run_long_form(config)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, None))
