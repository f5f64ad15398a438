"""Short-form throughput: this implementation against the original's approach, same model, data and backend.

The original (run_short_form.py:51-200) answers one question per `generate` call and asks for the log-probs of
the whole vocabulary at every generated position (32016 in the first pass, 5000 in the passage pass), then
scores from those dicts. Here all questions x passages of a batch go to the backend together and only the 15
reflection-token log-probs are read. Both runs use the HF backend and the same decisions (adaptive retrieval
with threshold 0, so every question retrieves in both), and must give the same predictions.

    python bench/short_form_throughput.py                       # random Llama-2-shaped small model
    python bench/short_form_throughput.py --model_name PATH     # any Self-RAG checkpoint

Prints a table and writes bench/results/short_form_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import torch

from selfrag.backends.base import GenParams
from selfrag.backends.hf import HFBackend
from selfrag.data import get_ctxs, load_items
from selfrag.decoding.short_form import ShortFormSettings, postprocess_answer, run_batch
from selfrag.prompts import format_evidence, format_prompt
from selfrag.scoring import Weights
from selfrag.tokens import ISREL_TOKENS, ISSUP_TOKENS, ISUSE_TOKENS, NO_RETRIEVAL, RETRIEVAL, ReflectionVocab

ROOT = Path(__file__).resolve().parent.parent


def original_item(backend, vocab, prompt, ctxs, max_tokens, vocab_size):
    """One question the original way: full-vocabulary log-prob dicts, one generate call per pass."""
    full = GenParams(max_tokens=max_tokens, watch_token_ids=tuple(range(vocab_size)))
    first = backend.generate([prompt], full)[0]
    s = first.step_logprobs[0]
    p_ret = math.exp(s[vocab[RETRIEVAL]])
    assert p_ret / (p_ret + math.exp(s[vocab[NO_RETRIEVAL]])) > 0.0  # threshold 0: retrieve, as in our run
    top5000 = GenParams(max_tokens=max_tokens, watch_token_ids=tuple(range(min(5000, vocab_size))) + vocab.all_ids)
    gens = backend.generate([prompt + format_evidence(c) for c in ctxs], top5000)
    best, best_score = None, -math.inf
    for gen in gens:
        lp = gen.step_logprobs
        rel = [math.exp(lp[0][vocab[t]]) for t in ISREL_TOKENS]
        score = math.exp(gen.mean_logprob) + rel[1] / sum(rel)
        for group, weights in ((ISSUP_TOKENS, (1.0, 0.5, 0.0)), (ISUSE_TOKENS, (-1, -0.5, 0, 0.5, 1))):
            ids = set(vocab.group(group))
            pos = next((t for t, tok in enumerate(gen.token_ids) if tok in ids), None)
            if pos is not None:
                probs = [math.exp(lp[pos][vocab[t]]) for t in group]
                score += (
                    (0.5 if group is ISUSE_TOKENS else 1.0) * sum(w * p for w, p in zip(weights, probs)) / sum(probs)
                )
        if score > best_score:
            best, best_score = gen, score
    return postprocess_answer(best.text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name", default=None, help="Self-RAG checkpoint; default: a random small Llama")
    parser.add_argument("--input_file", default=str(ROOT / "eval_data" / "popqa_longtail_w_gs.jsonl"))
    parser.add_argument("--items", type=int, default=12)
    parser.add_argument("--ndocs", type=int, default=10)
    parser.add_argument("--max_new_tokens", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=12, help="questions per backend call (ours)")
    parser.add_argument("--max_batch_size", type=int, default=128, help="sequences per forward pass (HF backend)")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "short_form_throughput.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    model_name = args.model_name
    if model_name is None:
        from selfrag.testing import BENCH_MODEL, build_bench_model

        # A tokenizer trained on the eval file itself gives Llama-like token counts for its passages.
        corpus = "\n".join(c["text"] for item in load_items(args.input_file) for c in get_ctxs(item))
        model_name = str(build_bench_model(Path(tempfile.mkdtemp()) / "small", corpus))
        model_desc = BENCH_MODEL
    else:
        model_desc = model_name
    backend = HFBackend.from_pretrained(model_name, dtype="float32", max_batch_size=args.max_batch_size)
    vocab = ReflectionVocab.from_tokenizer(backend.tokenizer)
    vocab_size = backend.model.config.vocab_size
    items = load_items(args.input_file)[: args.items]
    prompts = [format_prompt(item["question"]) for item in items]
    evidences = [get_ctxs(item)[: args.ndocs] for item in items]
    settings = ShortFormSettings(
        mode="adaptive_retrieval",
        threshold=0.0,
        ndocs=args.ndocs,
        max_new_tokens=args.max_new_tokens,
        weights=Weights(use_groundness=True, use_utility=True, use_seqscore=True),
    )

    backend.generate(prompts[:1], GenParams(max_tokens=2))  # warm-up
    t0 = time.perf_counter()
    ours = []
    for start in range(0, len(items), args.batch_size):
        sl = slice(start, start + args.batch_size)
        ours += [r.pred for r in run_batch(backend, vocab, prompts[sl], evidences[sl], settings)]
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    original = [
        original_item(backend, vocab, p, c, args.max_new_tokens, vocab_size) for p, c in zip(prompts, evidences)
    ]
    t_orig = time.perf_counter() - t0
    agree = sum(a == b for a, b in zip(ours, original))

    rows = [
        ("original approach (1 item/call, full-vocab log-probs)", t_orig),
        ("this implementation (batched, 15 ids)", t_ours),
    ]
    n_tokens = sum(
        len(backend.tokenizer(p + format_evidence(c))["input_ids"]) for p, cs in zip(prompts, evidences) for c in cs
    )
    print(
        f"model: {model_desc}; {len(items)} items x {args.ndocs} passages ({n_tokens} prompt tokens), "
        f"{args.max_new_tokens} new tokens, {torch.get_num_threads()} threads"
    )
    print(f"| {'approach':<56} | {'seconds':>8} | {'items/s':>8} |")
    print(f"|{'-' * 58}|{'-' * 10}|{'-' * 10}|")
    for name, seconds in rows:
        print(f"| {name:<56} | {seconds:>8.2f} | {len(items) / seconds:>8.2f} |")
    print(f"speed-up: {t_orig / t_ours:.1f}x; identical predictions: {agree}/{len(items)}")
    result = {
        "model": model_desc,
        "items": len(items),
        "ndocs": args.ndocs,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "seconds_original": t_orig,
        "seconds_ours": t_ours,
        "items_per_s_original": len(items) / t_orig,
        "items_per_s_ours": len(items) / t_ours,
        "speedup": t_orig / t_ours,
        "identical_predictions": agree,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
