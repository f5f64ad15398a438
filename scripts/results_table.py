"""Print the paper's Table 2 (PopQA, TQA, Pub, ARC, Bio, ASQA) from result files, and the Fig. 3c threshold sweep.

    python scripts/results_table.py results/table2/                       # markdown table on stdout
    python scripts/results_table.py results/table2/ --metric accuracy     # strict metric instead of match
    python scripts/results_table.py --sweep results/sweep_pub/ --plot fig3c.png

Files come from retrieval_lm/run_short_form.py and retrieval_lm/run_baseline_lm.py (short form), and from
scripts/eval_alce.py / scripts/eval_factscore.py --result_fp (ASQA, Bio; their columns are printed only when one
such file is given); a file named SYSTEM__TASK.json (TASK: popqa, tqa, pub, arc, asqa, bio) is placed by its name.
--metric applies to the short-form columns. Rules: selfrag/results_table.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from selfrag.cli import run_main, setup_logging
from selfrag.errors import ConfigError
from selfrag.metrics import METRICS
from selfrag.results_table import collect, plot_sweep, sweep_curves, sweep_markdown, table2_markdown


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="result files or directories for the table")
    parser.add_argument(
        "--metric",
        choices=METRICS,
        default=None,
        help="report this entry of each short-form file's 'metrics' (default: the run's metric_mean)",
    )
    parser.add_argument("--output", default=None, help="also write the table (and sweep) markdown to this file")
    parser.add_argument("--sweep", nargs="+", default=[], help="adaptive Self-RAG results at several thresholds")
    parser.add_argument("--plot", default=None, help="save Fig. 3c (accuracy, retrieval vs threshold) here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging(logging.WARNING)
    args = make_parser().parse_args(argv)
    if not args.paths and not args.sweep:
        raise ConfigError("give result files or directories (and/or --sweep FILES)")
    if args.plot and not args.sweep:
        raise ConfigError("--plot draws the threshold sweep: add --sweep FILES")
    parts, curves = [], None
    if args.paths:
        parts.append(table2_markdown(collect(args.paths, args.metric)))
    if args.sweep:
        curves = sweep_curves(collect(args.sweep, args.metric))
        parts.append(sweep_markdown(curves))
    text = "\n".join(parts)
    print(text, end="", flush=True)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    if args.plot and curves:
        try:
            saved = plot_sweep(curves, args.plot)
        except ImportError:
            print(
                f"matplotlib is not installed, so {args.plot} was not drawn (pip install matplotlib); "
                "the sweep is printed above",
                file=sys.stderr,
            )
        else:
            print(f"saved {saved}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, None))
