"""Long-form Self-RAG with live retrieval: when a segment asks for retrieval, the retriever is queried with the
question plus the answer so far (instead of re-using fixed passages, as run_long_form_static.py does).

The flags of run_long_form_static.py, plus the retriever's (as passage_retrieval.py). Items need no passages:

    python retrieval_lm/run_long_form.py --model_name selfrag/selfrag_llama2_7b \
        --retriever facebook/contriever-msmarco --passages psgs_w100.tsv \
        --passages_embeddings "wikipedia_embeddings/*" \
        --ndocs 5 --max_new_tokens 300 --threshold 0.2 --use_grounding --use_utility --use_seqscore \
        --task factscore --input_file eval_data/factscore_unlabeled_alpaca_13b_retrieval.jsonl \
        --output_file results/factscore_live.jsonl --max_depth 7
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from selfrag.cli import parse_config, run_main, setup_logging
from selfrag.eval.long_form import LiveLongFormConfig, run_live_long_form


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    run_live_long_form(parse_config(LiveLongFormConfig, argv, description=__doc__.splitlines()[0]))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, None))
