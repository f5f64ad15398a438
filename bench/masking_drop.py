"""How many target tokens the original paragraph-masking rule drops (upstream issue #95), on realistic data.

The original masks ONE span from after the first `<paragraph>` to before the last `</paragraph>`
(finetune.py:269-285), so in a row with several passages the answer segments and reflection tokens between the
passages never reach the loss. This counts, per row, the completion tokens that are targets under the intended
rule (each passage masked on its own) and under the original rule, and what kind of tokens the original drops.

    python bench/masking_drop.py                                   # bench/data/generator_sample.jsonl
    python bench/masking_drop.py --train_file train.jsonl --tokenizer meta-llama/Llama-2-7b-hf

Without --tokenizer, a byte-level BPE tokenizer (2,000 tokens) is trained on the file itself, which gives roughly
Llama-like token counts. Prints a table and writes bench/results/masking_drop.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections import Counter
from pathlib import Path

from selfrag.data import clean, load_items
from selfrag.tokens import ALL_TOKENS, PARAGRAPH_START
from selfrag.training.encode import IGNORE_INDEX, build_prompt, encode_example
from selfrag.training.vocab import add_reflection_tokens

ROOT = Path(__file__).resolve().parent.parent


def load_tokenizer(name: str | None, items: list[dict]):
    if name:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name)
        add_reflection_tokens(tokenizer)
        return tokenizer, name
    from selfrag.testing import build_tiny_tokenizer

    text = "\n".join(build_prompt(it) + it["output"] for it in items)
    for tok in ALL_TOKENS:
        text = text.replace(tok, "\n")
    return build_tiny_tokenizer(vocab_size=2000, corpus=text), "byte-level BPE (2000) trained on the file"


def measure(item: dict, tokenizer, reflection_ids: set[int]) -> dict:
    """Completion targets under both rules for one row, and the kinds of tokens the original drops."""
    source_len = len(tokenizer(build_prompt(item))["input_ids"])
    ours = encode_example(item, tokenizer, 10**6)
    orig = encode_example(item, tokenizer, 10**6, original_masking=True)
    ids = ours["input_ids"]
    kept = [i for i in range(source_len, len(ids)) if ours["labels"][i] != IGNORE_INDEX]
    dropped = [i for i in kept if orig["labels"][i] == IGNORE_INDEX]
    kinds = Counter(tokenizer.convert_ids_to_tokens(ids[i]) if ids[i] in reflection_ids else "text" for i in dropped)
    return {
        "id": item.get("id"),
        "paragraphs": item["output"].count(PARAGRAPH_START),
        "tokens": len(ids),
        "targets": len(kept),
        "targets_original": len(kept) - len(dropped),
        "dropped": len(dropped),
        "dropped_reflection": sum(v for k, v in kinds.items() if k != "text"),
        "dropped_kinds": dict(kinds),
    }


def _display(path: str) -> str:
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train_file", default=str(ROOT / "bench" / "data" / "generator_sample.jsonl"))
    parser.add_argument("--tokenizer", default=None, help="HF tokenizer (default: one trained on the file)")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "masking_drop.json"))
    args = parser.parse_args(argv)

    items = [clean(it) for it in load_items(args.train_file)]
    tokenizer, tokenizer_desc = load_tokenizer(args.tokenizer, items)
    reflection_ids = set(tokenizer.convert_tokens_to_ids(list(ALL_TOKENS)))
    rows = [measure(item, tokenizer, reflection_ids) for item in items]

    buckets = {
        "0 paragraphs": [r for r in rows if r["paragraphs"] == 0],
        "1 paragraph": [r for r in rows if r["paragraphs"] == 1],
        "2 paragraphs": [r for r in rows if r["paragraphs"] == 2],
        "3+ paragraphs": [r for r in rows if r["paragraphs"] >= 3],
        ">= 2 paragraphs": [r for r in rows if r["paragraphs"] >= 2],
        "all rows": rows,
    }
    summary = {}
    print(f"{_display(args.train_file)}: {len(rows)} rows; tokenizer: {tokenizer_desc}")
    print(f"{'rows':<16}{'n':>4}{'targets':>10}{'original':>10}{'dropped':>10}{'dropped %':>11}{'reflection':>12}")
    for name, group in buckets.items():
        targets = sum(r["targets"] for r in group)
        dropped = sum(r["dropped"] for r in group)
        summary[name] = {
            "rows": len(group),
            "targets": targets,
            "targets_original": targets - dropped,
            "dropped": dropped,
            "dropped_fraction": dropped / targets if targets else 0.0,
            "dropped_reflection": sum(r["dropped_reflection"] for r in group),
        }
        s = summary[name]
        print(
            f"{name:<16}{s['rows']:>4}{targets:>10}{s['targets_original']:>10}{dropped:>10}"
            f"{100 * s['dropped_fraction']:>10.1f}%{s['dropped_reflection']:>12}"
        )
    kinds = sum((Counter(r["dropped_kinds"]) for r in rows), Counter())
    print("dropped by the original rule:", ", ".join(f"{k} x{v}" for k, v in kinds.most_common()))

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "train_file": _display(args.train_file),
                "tokenizer": tokenizer_desc,
                "note": "targets: completion tokens with a label (prompt excluded); original: the shipped rule",
                "summary": summary,
                "dropped_kinds": dict(kinds),
                "rows": rows,
                "python": platform.python_version(),
            },
            indent=1,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
