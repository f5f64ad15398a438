"""Save a tiny random Llama with the Self-RAG reflection tokens, for demos and smoke tests without a model hub.

    python scripts/build_tiny_model.py --output_dir .cache/tiny-selfrag

Its weights are random: it exercises the whole pipeline (prompts, backends, scoring, output) but its answers
and reflection tokens mean nothing. Use a trained Self-RAG checkpoint for real results.
"""

from __future__ import annotations

import argparse
import sys

from selfrag.testing import build_tiny_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default=".cache/tiny-selfrag")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build_tiny_model(args.output_dir, seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
