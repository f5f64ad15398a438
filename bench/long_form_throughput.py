"""Long-form throughput: the beam search batched across questions against one question at a time.

Same model, data, settings and HF backend; both must produce the same answers. The batched run makes one
backend call per depth level for all questions of a batch; the per-item run (the original's structure) makes
one per level per question.

    python bench/long_form_throughput.py                        # random Llama-2-shaped small model
    python bench/long_form_throughput.py --model_name PATH      # any Self-RAG checkpoint

With a random model, segments seldom ask for another retrieval, so trees are mostly one level deep; a trained
checkpoint gives deeper trees (and larger gains, since every level is batched). Prints a table and writes
bench/results/long_form_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from selfrag.backends.hf import HFBackend
from selfrag.data import get_ctxs, load_items
from selfrag.decoding.long_form import LongFormSettings, beam_search
from selfrag.prompts import TASK_INST, format_prompt
from selfrag.scoring import Weights
from selfrag.tokens import ReflectionVocab

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name", default=None)
    parser.add_argument(
        "--input_file",
        default=str(ROOT / "eval_data" / "popqa_longtail_w_gs.jsonl"),
        help="items with question and ctxs (or docs)",
    )
    parser.add_argument("--items", type=int, default=12)
    parser.add_argument("--ndocs", type=int, default=5)
    parser.add_argument("--max_new_tokens", type=int, default=60)
    parser.add_argument("--beam_width", type=int, default=2)
    parser.add_argument("--max_depth", type=int, default=3)
    parser.add_argument("--max_batch_size", type=int, default=128)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "long_form_throughput.json"))
    args = parser.parse_args()

    items = load_items(args.input_file)[: args.items]
    ctxs = [(item.get("docs") or get_ctxs(item))[: args.ndocs] for item in items]
    model_name, model_desc = args.model_name, args.model_name
    if model_name is None:
        from selfrag.testing import BENCH_MODEL, build_bench_model

        corpus = "\n".join(c["text"] for docs in ctxs for c in docs)
        model_name = str(build_bench_model(Path(tempfile.mkdtemp()) / "small", corpus))
        model_desc = BENCH_MODEL
    backend = HFBackend.from_pretrained(model_name, dtype="float32", max_batch_size=args.max_batch_size)
    vocab = ReflectionVocab.from_tokenizer(backend.tokenizer)
    prompts = [format_prompt(TASK_INST["asqa"] + "## Input:\n\n" + item["question"]) for item in items]
    settings = LongFormSettings(
        mode="always_retrieve",
        ndocs=args.ndocs,
        beam_width=args.beam_width,
        max_depth=args.max_depth,
        max_new_tokens=args.max_new_tokens,
        weights=Weights(use_groundness=True, use_utility=True, use_seqscore=True),
    )

    beam_search(
        backend, vocab, prompts[:1], ctxs[:1], LongFormSettings(mode="always_retrieve", ndocs=1, max_new_tokens=2)
    )
    t0 = time.perf_counter()
    batched = beam_search(backend, vocab, prompts, ctxs, settings)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = [beam_search(backend, vocab, [p], [c], settings)[0] for p, c in zip(prompts, ctxs)]
    t_single = time.perf_counter() - t0
    agree = sum(a.answer == b.answer for a, b in zip(batched, single))
    depth = max(n.depth for r in batched for n in r.tree)

    print(
        f"model: {model_desc}; {len(items)} items x {args.ndocs} passages, beam {args.beam_width}, "
        f"max_depth {args.max_depth} (deepest level reached: {depth}), {args.max_new_tokens} tokens/segment, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"| {'approach':<40} | {'seconds':>8} | {'items/s':>8} |")
    print(f"|{'-' * 42}|{'-' * 10}|{'-' * 10}|")
    for name, seconds in (("one question at a time", t_single), ("batched across questions", t_batched)):
        print(f"| {name:<40} | {seconds:>8.2f} | {len(items) / seconds:>8.2f} |")
    print(f"speed-up: {t_single / t_batched:.1f}x; identical answers: {agree}/{len(items)}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(
        json.dumps(
            {
                "model": model_desc,
                "items": len(items),
                "ndocs": args.ndocs,
                "beam_width": args.beam_width,
                "max_depth": args.max_depth,
                "deepest_level": depth,
                "max_new_tokens": args.max_new_tokens,
                "seconds_single": t_single,
                "seconds_batched": t_batched,
                "speedup": t_single / t_batched,
                "identical_answers": agree,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
