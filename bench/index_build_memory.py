"""Peak memory and time of building an index from embedding shards, as passage_retrieval.py builds it.

Synthetic 768-d vectors (bench/index_presets.py's distribution) are written as `--shards` embedding shards, one at
a time, so this process never holds them all; then a fresh process builds the `--index_preset` index with
`selfrag.retrieval.pipeline.build_index_from_shards` (a training sample drawn across the shards, then the shards
added one by one) and reports its peak resident memory against the index's own size, the largest shard and the
training sample:

    python bench/index_build_memory.py --n 1000000 --shards 10 --preset compressed

The build has two phases, measured apart (the peak is reset between them): training holds the training sample;
adding holds the index and one shard at a time. Projected to 21M passages: training scales with the sample at that
size; adding is the index's bytes per vector x 21M plus one shard (as many shards as here, or 21 of 1M vectors).
Prints a table and writes bench/results/index_build_memory_<n>.json.
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WIKIPEDIA = 21_015_324
GIB = 1024**3


def write_shards(folder: Path, n: int, shards: int, seed: int) -> list[Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from index_presets import synthetic

    paths = []
    for i, part in enumerate(np.array_split(np.arange(n), shards)):
        xb, _ = synthetic(len(part), 1, 768, seed + i)
        path = folder / f"passages_{i:02d}"
        with path.open("wb") as handle:
            pickle.dump(([str(j) for j in part], xb), handle, protocol=4)
        paths.append(path)
    return paths


def peak_rss(reset: bool = False) -> int:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss, not inherited across exec), optionally reset."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    peak = int(line.split()[1]) * 1024
    if reset:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: restart the peak from the current size
    return peak


def build(folder: str, preset: str) -> dict:
    """In a fresh process: build the index from the shards, with the peak memory of each phase (training, adding)."""
    from selfrag.retrieval.embeddings import read_embedding_shard
    from selfrag.retrieval.index import FaissIndex
    from selfrag.retrieval.pipeline import build_index_from_shards
    from selfrag.retrieval.presets import resolve_factory
    from selfrag.retrieval.presets import train_size as presets_train_size

    paths = sorted(Path(folder).glob("passages_*"))
    before = peak_rss(reset=True)
    phases = {}
    train = FaissIndex.train

    def timed_train(self, embeddings):
        train(self, embeddings)
        phases["train_peak"] = peak_rss(reset=True)  # the sample is freed when training returns

    FaissIndex.train = timed_train
    start = time.perf_counter()
    index = build_index_from_shards(paths, preset)
    seconds = time.perf_counter() - start
    phases["add_peak"] = peak_rss()
    out = Path(folder) / "index.faiss"
    import faiss

    faiss.write_index(index.index, str(out))
    n = index.ntotal
    factory = resolve_factory(preset, n)
    return {
        "preset": preset,
        "factory": factory,
        "n": n,
        "seconds": seconds,
        "rss_before": before,
        **phases,
        "index_bytes": out.stat().st_size,
        "shard_bytes": max(read_embedding_shard(p)[1].nbytes for p in paths[:1]),
        "train_bytes": presets_train_size(factory, n) * 768 * 4,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--preset", default="compressed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--build", default=None, help=argparse.SUPPRESS)  # internal: the child process
    args = parser.parse_args()
    if args.build:
        print(json.dumps(build(args.build, args.preset)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        write_shards(Path(tmp), args.n, args.shards, args.seed)
        child = subprocess.run(
            [sys.executable, __file__, "--build", tmp, "--preset", args.preset],
            check=True,
            capture_output=True,
            text=True,
        )
    r = json.loads(child.stdout.strip().splitlines()[-1])
    from selfrag.retrieval.presets import resolve_factory
    from selfrag.retrieval.presets import train_size as presets_train_size

    per_vector = r["index_bytes"] / r["n"]
    index_21m = per_vector * WIKIPEDIA
    train_21m = presets_train_size(resolve_factory(args.preset, WIKIPEDIA), WIKIPEDIA) * 768 * 4
    shard_same_count = r["shard_bytes"] * WIKIPEDIA / args.n  # the same number of shards, each 21M/shards vectors
    shard_1m = 1_000_000 * 768 * 4  # shards of 1M float32 vectors (generate_passage_embeddings.py --num_shards 21)
    # Training holds the sample (and k-means' work, scaled with it); adding holds the index and one shard.
    train_peak_21m = r["rss_before"] + (r["train_peak"] - r["rss_before"]) * train_21m / r["train_bytes"]
    add_same = r["rss_before"] + index_21m + shard_same_count
    add_1m = r["rss_before"] + index_21m + shard_1m
    print(f"{r['factory']} ({args.preset}) over {r['n']} vectors in {args.shards} shards: {r['seconds']:.0f} s")
    print(f"| {'':<44} | {'here':>10} | {'21M (projected)':>16} |")
    print(f"|{'-' * 46}|{'-' * 12}|{'-' * 18}|")
    rows = [
        ("peak RSS while training", r["train_peak"], train_peak_21m),
        ("peak RSS while adding the shards", r["add_peak"], None),
        (f"  projected, {args.shards} shards of {WIKIPEDIA // args.shards} vectors", None, add_same),
        ("  projected, 21 shards of 1M vectors", None, add_1m),
        ("the index itself", r["index_bytes"], index_21m),
        ("one shard (held while it is added)", r["shard_bytes"], shard_same_count),
        ("training sample", r["train_bytes"], train_21m),
        ("the process before the build", r["rss_before"], r["rss_before"]),
    ]
    for name, here, projected in rows:
        cells = [f"{v / GIB:>8.2f} G" if v is not None else " " * 10 for v in (here, projected)]
        print(f"| {name:<44} | {cells[0]:>10} | {cells[1]:>16} |")
    result = {
        **r,
        "shards": args.shards,
        "projected_index_21m": index_21m,
        "projected_train_peak_21m": train_peak_21m,
        "projected_add_peak_21m_same_shard_count": add_same,
        "projected_add_peak_21m_1m_shards": add_1m,
    }
    out = ROOT / "bench" / "results" / f"index_build_memory_{args.n}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
