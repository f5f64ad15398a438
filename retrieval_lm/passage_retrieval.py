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

import json
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from selfrag.cli import parse_config, run_main, setup_logging  # noqa: E402
from selfrag.retrieval.pipeline import RetrievalConfig, retrieve_files, setup_retriever  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    config = parse_config(RetrievalConfig, argv, description=__doc__.splitlines()[0])
    retriever = setup_retriever(config)
    if config.query is not None:
        for rank, hit in enumerate(retriever.search([config.query], config.n_docs)[0], start=1):
            print(json.dumps({"rank": rank, **hit}, ensure_ascii=False))
        return 0
    for path in retrieve_files(config, retriever):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, None))
