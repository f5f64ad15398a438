"""Retrieve passages for one query, or for every item of json / jsonl files (adds `ctxs`).

One query (prints the passages):

    python retrieval_lm/passage_retrieval.py --model_name_or_path facebook/contriever-msmarco \
        --passages psgs_w100.tsv --passages_embeddings "wikipedia_embeddings/*" --query "Who wrote Hamlet?" --n_docs 5

Batch mode (the README's command; writes output_dir/<same name> with ctxs = [{id, title, text, score}], plus
`hasanswer` on each ctx when the items have gold `answers` / `answer` / `golds`, and the top-1/5/20/k answer recall
to output_dir/<same name>.recall.json):

    python retrieval_lm/passage_retrieval.py --model_name_or_path facebook/contriever-msmarco \
        --passages psgs_w100.tsv --passages_embeddings "wikipedia_embeddings/*" \
        --data eval_data/popqa_longtail.jsonl --output_dir retrieved --n_docs 20 \
        --index_factory "IVF65536_HNSW32,SQ8" --save_or_load_index

--index_factory picks a compressed FAISS index; bench/index_presets.py measures recall, RAM and speed. For the 21M
DPR passages: IVF65536_HNSW32,SQ8 ~15.4 GiB, SQ6 ~11.6 GiB, SQ4 ~7.9 GiB (recall@20 vs exact 0.99 / 0.98 / 0.93 on
the bench's synthetic data); Flat (the original) needs ~60 GiB.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from selfrag import commands
from selfrag.cli import run_main


def main(argv: Sequence[str] | None = None) -> int:
    return commands.retrieve(argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(run_main(main, None))
