"""Training throughput of `selfrag.training.loop.train` on CPU: tokens/s for a small Llama, fp32 and bf16 autocast.

The model is random (no hub): a Llama with the Llama-2 vocabulary size (32016 rows) and a small body, trained on
bench/data/generator_sample.jsonl through the real loop (encoding, masking, padding collator, AdamW, scheduler).

    python bench/train_throughput.py                          # hidden 256, 4 layers, 10 updates of batch 4
    python bench/train_throughput.py --hidden_size 512 --num_layers 8 --steps 10 --threads 2

Prints a table and writes bench/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch
from accelerate.state import AcceleratorState

from selfrag.testing import build_tiny_model
from selfrag.training.config import FinetuneConfig
from selfrag.training.loop import train

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train_file", default=str(ROOT / "bench" / "data" / "generator_sample.jsonl"))
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--num_layers", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "train_throughput.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    corpus = Path(args.train_file).read_text(encoding="utf-8")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(
            Path(tmp) / "model",
            hidden_size=args.hidden_size,
            num_layers=args.num_layers,
            vocab_size=32016,
            corpus=corpus,
            tokenizer_vocab_size=2000,
        )
        for precision in ("no", "no", "bf16"):  # the first run (2 updates) warms up, and is not reported
            os.environ["ACCELERATE_MIXED_PRECISION"] = precision
            AcceleratorState._reset_state(reset_partial_state=True)  # a new precision needs a fresh state
            config = FinetuneConfig(
                model_name_or_path=str(model_dir),
                train_file=args.train_file,
                output_dir=str(Path(tmp) / f"out_{precision}"),
                use_special_tokens=True,
                per_device_train_batch_size=args.batch_size,
                max_train_steps=args.steps if results else 2,
                learning_rate=1e-4,
                seed=0,
                max_seq_length=1024,
            )
            result = train(config)
            results.append(
                {
                    "precision": "fp32" if precision == "no" else "bf16 autocast",
                    "updates": result.completed_steps,
                    "tokens_per_second": result.tokens_per_second,
                    "final_loss": result.losses[-1],
                }
            )
        os.environ.pop("ACCELERATE_MIXED_PRECISION", None)
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(model_dir)
    results = results[1:]
    n_params = cfg.vocab_size * cfg.hidden_size * 2 + cfg.num_hidden_layers * (
        4 * cfg.hidden_size * cfg.num_attention_heads * cfg.head_dim + 3 * cfg.hidden_size * cfg.intermediate_size
    )
    print(
        f"Llama vocab {cfg.vocab_size}, hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers "
        f"(~{n_params / 1e6:.1f} M parameters); batch {args.batch_size}; {args.threads} threads"
    )
    print(f"{'precision':<16}{'updates':>8}{'tokens/s':>10}{'final loss':>12}")
    for r in results:
        print(f"{r['precision']:<16}{r['updates']:>8}{r['tokens_per_second']:>10.0f}{r['final_loss']:>12.3f}")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "model": {
                    "vocab_size": cfg.vocab_size,
                    "hidden_size": cfg.hidden_size,
                    "num_layers": cfg.num_hidden_layers,
                    "approx_parameters": n_params,
                },
                "batch_size": args.batch_size,
                "threads": args.threads,
                "results": results,
                "torch": torch.__version__,
                "python": platform.python_version(),
                "cpu_count": os.cpu_count(),
            },
            indent=1,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
