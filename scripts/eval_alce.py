"""Score ASQA / ELI5 answers the way ALCE does: str-em, ROUGE-Lsum, citation recall / precision, MAUVE, QA.

ALCE eval.py's flags, plus the NLI model (any TRUE-style seq2seq or sequence-classification NLI model):

    python scripts/eval_alce.py --f results/asqa.json --citations --mauve --at_most_citations 3 \
        --nli_model google/t5_xxl_true_nli_mixture --nli_kind true

Reads what retrieval_lm/run_long_form_static.py --task asqa (or run_baseline_lm.py --task asqa) writes; writes the
scores to <f>.score as ALCE does (and, with --result_fp FILE, a summary for selfrag eval --table).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from selfrag.cli import parse_config, run_main, setup_logging
from selfrag.eval.alce import AlceEvalConfig, evaluate_file


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    config = parse_config(AlceEvalConfig, argv, description=__doc__.splitlines()[0])
    scores = evaluate_file(config)
    print(json.dumps(scores, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, None))
