"""Check a downloaded Self-RAG eval file and convert it into the form the runners read.

Check only (exit status 0: the file is in the expected form; 1: problems remain; 2: the file cannot be read):

    python scripts/prepare_eval_data.py --input_file eval_data/popqa_longtail_w_gs.jsonl

Convert (the dataset is detected from the original file names, else pass --dataset):

    python scripts/prepare_eval_data.py --input_file ~/Downloads/eval_data/health_claims_processed.jsonl \
        --output_file eval_data/health_claims_processed.jsonl --report_file results/pubhealth_data_report.json

The expected forms and the conversion rules are documented in selfrag/eval/formats.py and selfrag/eval/convert.py.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from selfrag.cli import run_main, setup_logging
from selfrag.data import write_json_atomic
from selfrag.eval.data import TASK_FORMATS, prepare_eval_file


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input_file", required=True, help="Downloaded eval file (JSON Lines, or a .json list).")
    parser.add_argument(
        "--dataset",
        choices=sorted(TASK_FORMATS),
        default=None,
        help="Expected format (default: detected from the original file name).",
    )
    parser.add_argument(
        "--output_file",
        default=None,
        help="Write the converted items here (.json: a JSON list, else JSON Lines); without it, only "
        "check. Not written while problems remain.",
    )
    parser.add_argument(
        "--drop_invalid",
        action="store_true",
        help="Exclude items that still have problems after conversion (e.g. PubHealth 'mixture' "
        "labels); they are counted in the report.",
    )
    parser.add_argument("--report_file", default=None, help="Also write the report as JSON here.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    setup_logging()
    report = prepare_eval_file(args.input_file, args.dataset, args.output_file, drop_invalid=args.drop_invalid)
    if args.report_file:
        write_json_atomic(args.report_file, report.to_dict())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(run_main(main, None))
