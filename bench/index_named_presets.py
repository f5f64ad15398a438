"""The `--index_preset` names of passage_retrieval.py, built the way it builds them: recall@20, size and build time.

For N synthetic 768-d vectors (bench/index_presets.py's distribution), the vectors are written as embedding shards
and each compressed preset is built by `selfrag.retrieval.pipeline.build_index_from_shards` (list count, quantiser
and training sample from the corpus size; default search parameters), then compared with exact search:

    python bench/index_named_presets.py --n 200000     # a few minutes on 2 cores
    python bench/index_named_presets.py --n 1000000

Prints a table and writes bench/results/index_named_presets_<n>.json. Memory at 21M passages is projected as in
bench/index_presets.py: bytes per vector measured here (index size less its trained part) x 21M, plus the trained
structures at the 21M list count.
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from index_presets import WIKIPEDIA, index_bytes, recall, synthetic, timed_search  # noqa: E402

from selfrag.retrieval.index import FaissIndex, import_faiss  # noqa: E402
from selfrag.retrieval.pipeline import apply_search_params, build_index_from_shards  # noqa: E402
from selfrag.retrieval.presets import PRESETS, ivf_lists, resolve_factory  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--nq", type=int, default=1000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    faiss = import_faiss()
    xb, xq = synthetic(args.n, args.nq, 768, args.seed)
    exact_index = FaissIndex(768)
    exact_index.index.add(xb)
    exact, exact_qps, _ = timed_search(exact_index, xq, args.k)
    del exact_index
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, part in enumerate(np.array_split(np.arange(args.n), args.shards)):
            path = Path(tmp) / f"passages_{i:02d}"
            with path.open("wb") as handle:
                pickle.dump(([str(j) for j in part], xb[part]), handle)
            paths.append(path)
        for name in sorted(set(PRESETS) - {"exact"}):
            start = time.perf_counter()
            index = build_index_from_shards(paths, name)
            build_s = time.perf_counter() - start
            apply_search_params(index)
            found, qps, ms = timed_search(index, xq, args.k)
            size = index_bytes(index.index)
            index.index.reset()  # the vectors out, the trained part (centroids, codebooks) kept
            fixed = index_bytes(index.index)
            lists_here, lists_21m = ivf_lists(args.n), ivf_lists(WIKIPEDIA)
            extra = (lists_21m - lists_here) * (768 * 4 + 32 * 2 * 4 + 8)  # more centroids (+ HNSW links) at 21M
            gib_21m = ((size - fixed) / args.n * WIKIPEDIA + fixed + extra) / 2**30
            rows.append(
                {
                    "preset": name,
                    "factory": index.factory,
                    "factory_21m": resolve_factory(name, WIKIPEDIA),
                    "search": dict(index.search_params),
                    "recall": recall(found, exact),
                    "qps": qps,
                    "ms_one_query": ms,
                    "build_s": build_s,
                    "bytes": size,
                    "trained_bytes": fixed,
                    "gib_21m": gib_21m,
                }
            )
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\n{args.n} x 768 synthetic vectors, {args.nq} queries, recall@{args.k} vs exact ({exact_qps:.0f} q/s)")
    header = ("preset", "factory", "search", "recall", "q/s", "build s", "MiB", "21M GiB")
    print("{:11} {:16} {:12} {:>7} {:>7} {:>8} {:>6} {:>8}".format(*header))
    for r in rows:
        search = ",".join(f"{k}={v}" for k, v in r["search"].items() if k == "nprobe")
        print(
            f"{r['preset']:11} {r['factory']:16} {search:12} {r['recall']:7.3f} {r['qps']:7.0f} {r['build_s']:8.0f} "
            f"{r['bytes'] / 2**20:6.0f} {r['gib_21m']:8.1f}"
        )
    print(f"peak RSS of this process (data, exact index and builds included): {peak_gib:.1f} GiB")
    out = Path(args.output or ROOT / "bench" / "results" / f"index_named_presets_{args.n}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "n": args.n,
        "nq": args.nq,
        "k": args.k,
        "exact_qps": exact_qps,
        "peak_rss_gib": peak_gib,
        "threads": faiss.omp_get_max_threads(),
        "presets": rows,
    }
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
