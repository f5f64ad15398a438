"""Biography FactScore for run_long_form_static.py / run_baseline_lm.py outputs (--task factscore).

Writes FactScore's input (jsonl: topic, output), runs FactScore when it is importable by --factscore_python (it
needs its own environment: torch<2, openai<0.28), and reads its score back into our results format:

    python scripts/eval_factscore.py --input_file results/factscore.jsonl --result_fp results/bio_selfrag-7b.json \
        --factscore_python ~/factscore-env/bin/python --model_name retrieval+ChatGPT --openai_key api.key

    # FactScore run elsewhere: read its output back
    python scripts/eval_factscore.py --input_file results/factscore.jsonl --run never \
        --score_file results/factscore.factscore_factscore_output.json --result_fp results/bio_selfrag-7b.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from selfrag.cli import parse_config, run_main, setup_logging
from selfrag.eval.factscore import FactScoreConfig, evaluate_factscore


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    config = parse_config(FactScoreConfig, argv, description=__doc__.splitlines()[0])
    summary = evaluate_factscore(config)
    if summary is not None:
        print(json.dumps(summary["metrics"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, None))
