"""Embed a passage corpus in shards (the original's flags and output files), resumably.

    python retrieval_lm/generate_passage_embeddings.py --model_name_or_path facebook/contriever-msmarco \
        --output_dir wikipedia_embeddings --passages psgs_w100.tsv --shard_id 0 --num_shards 4

Multi-GPU: each rank embeds its own shard (rank r of W: shard shard_id*W + r of num_shards*W):

    torchrun --nproc_per_node 8 retrieval_lm/generate_passage_embeddings.py \
        --model_name_or_path facebook/contriever-msmarco --output_dir wikipedia_embeddings --passages psgs_w100.tsv

A killed run continues where it stopped when started again with the same flags. Writes
{output_dir}/{prefix}_{shard_id:02d}: a pickle of (ids, embeddings), as the original.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from selfrag.cli import parse_config, run_main, setup_logging
from selfrag.retrieval.embeddings import EmbeddingConfig, generate_passage_embeddings


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    config = parse_config(EmbeddingConfig, argv, description=__doc__.splitlines()[0])
    generate_passage_embeddings(config)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, None))
