"""FAISS index presets for dense retrieval: RAM, build time, queries/s and recall@20 against exact search.

For N vectors (synthetic 768-d by default, or real embedding shards with --embeddings), each preset is built
(trained on a sample, vectors added in chunks), measured, and projected to the 21,015,324 passages of DPR Wikipedia:

    python bench/index_presets.py                      # 1M synthetic 768-d vectors (needs ~8 GB RAM, ~1 h on 2 cores)
    python bench/index_presets.py --n 200000           # smaller
    python bench/index_presets.py --embeddings "wikipedia_embeddings/*" --n 1000000   # real Contriever shards

Synthetic data: a mixture of 1024 anisotropic Gaussians whose hardness for nearest-neighbour search (relative
contrast, effective dimension) matches real sentence embeddings (see `synthetic`); queries come from the same
distribution. Contriever-on-Wikipedia vectors are not this distribution: re-measure on real shards (--embeddings)
before relying on a preset's recall.

Projection to 21M: memory is exact arithmetic (bytes per vector measured here x 21M, plus the trained structures with
the IVF list count scaled to the corpus); build and search speed are estimates (see `project`).
Prints a table and writes bench/results/index_presets.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from selfrag.retrieval.index import FaissIndex, import_faiss

ROOT = Path(__file__).resolve().parent.parent
WIKIPEDIA = 21_015_324  # passages in DPR psgs_w100.tsv
NLIST_21M = 65536  # IVF lists for the full corpus (~ 4 * sqrt(N), FAISS guidelines for 10M-100M vectors)

# name -> (factory with {nlist}, search settings, what it is); "nprobe=1/16" visits nlist/16 lists.
SWEEP = [{"nprobe": "1/256"}, {"nprobe": "1/64"}, {"nprobe": "1/16"}]
PRESETS = {
    "flat": ("Flat", [{}], "exact inner product (original default, IndexFlatIP)"),
    "sq8": ("SQ8", [{}], "exhaustive scan of 8-bit scalar codes"),
    "pq64": ("PQ64", [{}], "original --n_subquantizers 64 (IndexPQ, exhaustive scan of 64-byte codes)"),
    "ivf_pq64": ("IVF{nlist}_HNSW32,PQ64", SWEEP, "IVF + 64-byte PQ codes"),
    "opq_ivf_pq64": ("OPQ64_256,IVF{nlist}_HNSW32,PQ64", SWEEP, "OPQ rotation to 256-d, IVF + 64-byte PQ codes"),
    "ivf_pq256": ("IVF{nlist}_HNSW32,PQ256", SWEEP, "IVF + 256-byte PQ codes (issue #9's 5.5 GB index size)"),
    "ivf_sq4": ("IVF{nlist}_HNSW32,SQ4", SWEEP, "IVF + 4-bit scalar quantisation"),
    "ivf_sq6": ("IVF{nlist}_HNSW32,SQ6", SWEEP, "IVF + 6-bit scalar quantisation"),
    "ivf_sq8": ("IVF{nlist}_HNSW32,SQ8", SWEEP, "IVF + 8-bit scalar quantisation"),
    "hnsw32": ("HNSW32", [{"efSearch": 64}, {"efSearch": 256}, {"efSearch": 1024}], "HNSW graph over float vectors"),
}


def resolve(params: dict, nlist: int) -> dict:
    """`nprobe: "1/16"` -> nlist // 16."""
    out = {}
    for key, value in params.items():
        if isinstance(value, str) and value.startswith("1/"):
            value = max(1, nlist // int(value[2:]))
        out[key] = value
    return out


def synthetic(
    n: int, nq: int, d: int, seed: int, n_clusters: int = 1024, chunk: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """Database and queries from one mixture of anisotropic Gaussians (float32), shaped like real text embeddings.

    Calibrated on all-MiniLM-L6-v2 embeddings (unnormalised) of 656 English paragraphs (Python's pydoc topics): per-
    direction spread (5 + i)^-0.65 and clusters 2.5x the within-cluster spread give the same relative contrast (mean
    / nearest L2 distance: 1.85 vs 1.79 real) and effective dimension (participation ratio 41 vs 44); a shared mean
    carries a quarter of the squared norm, as there (Contriever vectors are not normalised either).
    """
    rng = np.random.default_rng(seed)
    spectrum = (5.0 + np.arange(d)) ** -0.65
    spectrum /= np.sqrt((spectrum**2).sum())
    rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
    spread = 2.5
    centers = (rng.normal(size=(n_clusters, d)) * spectrum * spread) @ rotation.T
    direction = rng.normal(size=d)
    mean = direction / np.linalg.norm(direction) * np.sqrt((1 + spread**2) / 3)

    def draw(count: int) -> np.ndarray:
        out = np.empty((count, d), dtype=np.float32)
        for start in range(0, count, chunk):
            m = min(chunk, count - start)
            noise = (rng.normal(size=(m, d)) * spectrum) @ rotation.T
            out[start : start + m] = centers[rng.integers(0, n_clusters, m)] + noise + mean
        return out

    return draw(n), draw(nq)


def load_real(pattern: str, n: int, nq: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from selfrag.retrieval.embeddings import embedding_files, read_embedding_shard

    parts, total = [], 0
    for path in embedding_files(pattern):
        _, emb = read_embedding_shard(path)
        parts.append(np.asarray(emb[: n + nq - total], dtype=np.float32))
        total += len(parts[-1])
        if total >= n + nq:
            break
    data = np.concatenate(parts)
    order = np.random.default_rng(seed).permutation(len(data))
    return np.ascontiguousarray(data[order[nq:]]), np.ascontiguousarray(data[order[:nq]])


def index_bytes(index) -> int:
    faiss = import_faiss()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "index.faiss")
        faiss.write_index(index, path)
        return os.path.getsize(path)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(f[f >= 0]) & set(e)) / k for f, e in zip(found, exact)]))


def timed_search(index: FaissIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, float, float]:
    """(positions, queries/s for the whole batch at once, median ms for one query alone)."""
    index.search(queries[:10], k)  # warm up (page in, allocate)
    start = time.perf_counter()
    _, positions = index.search(queries, k)
    qps = len(queries) / (time.perf_counter() - start)
    singles = []
    for row in range(min(20, len(queries))):
        start = time.perf_counter()
        index.search(queries[row : row + 1], k)
        singles.append(time.perf_counter() - start)
    return positions, qps, 1000 * float(np.median(singles))


def project(row: dict, n: int, nlist: int) -> dict:
    """Memory at 21M: fixed part (with IVF centroids scaled from nlist to NLIST_21M) + bytes per vector x 21M.

    Speed at 21M (estimates): exhaustive scans (Flat, SQ, PQ) slow down by 21M / N. IVF is projected for the same
    *fraction* of lists visited (nprobe scaled with nlist), so it also scans 21M / N times more vectors: a pessimistic
    estimate (at a fixed recall, the fraction usually falls as N grows) that keeps the measured speed-up over exact
    search. HNSW search grows ~ log N. Build: adding linear in N; IVF training x (65536 / nlist)^2 (sample and
    lists both grow).
    """
    scale = WIKIPEDIA / n
    fixed = row["trained_bytes"]
    if row["ivf"]:
        fixed += (NLIST_21M - nlist) * (row["ivf_dim"] * 4 + 32 * 2 * 4 + 8)  # centroids + HNSW links + list heads
    per_vector = (row["bytes"] - row["trained_bytes"]) / n
    mem = fixed + per_vector * WIKIPEDIA
    qps_factor = math.log(n) / math.log(WIKIPEDIA) if row["kind"] == "hnsw" else 1 / scale
    return {
        "bytes_21m": mem,
        "gib_21m": mem / 2**30,
        "bytes_per_vector": per_vector,
        "qps_21m_est": {k: v * qps_factor for k, v in row["qps"].items()},
        # k-means cost grows with sample size x list count, both x NLIST_21M / nlist (minutes on a GPU)
        "build_s_21m_est": row["train_s"] * ((NLIST_21M / nlist) ** 2 if row["ivf"] else 1) + row["add_s"] * scale,
    }


def build(name: str, factory: str, xb: np.ndarray, train: np.ndarray, shared: dict, chunk: int) -> tuple:
    """Build one preset; IVF presets without OPQ reuse one trained coarse quantizer (its training time is added)."""
    faiss = import_faiss()
    index = FaissIndex(xb.shape[1], factory)
    ivf = None
    try:
        ivf = faiss.extract_index_ivf(index.index)
    except RuntimeError:
        pass
    extra = 0.0
    start = time.perf_counter()
    if ivf is not None and not factory.startswith("OPQ") and "quantizer" in shared:
        ivf.quantizer = faiss.clone_index(shared["quantizer"])
        ivf.quantizer.this.disown()  # the IVF index owns and frees it
        ivf.own_fields = True
        extra = shared["quantizer_s"]
    index.train(train)
    train_s = time.perf_counter() - start + extra
    if ivf is not None and not factory.startswith("OPQ") and "quantizer" not in shared:
        shared["quantizer"] = faiss.clone_index(ivf.quantizer)
        shared["quantizer_s"] = train_s  # upper bound: includes this preset's codec training
    trained_bytes = index_bytes(index.index)
    start = time.perf_counter()
    for lo in range(0, len(xb), chunk):
        index.index.add(xb[lo : lo + chunk])
    add_s = time.perf_counter() - start
    return index, ivf, train_s, add_s, trained_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="database vectors")
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--nq", type=int, default=1000, help="queries")
    parser.add_argument("--k", type=int, default=20, help="recall@k against exact search")
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (default ~4*sqrt(n), a power of 2)")
    parser.add_argument("--train_size", type=int, default=None, help="training sample (default 64 * nlist)")
    parser.add_argument("--presets", default=",".join(PRESETS), help=f"comma list of {list(PRESETS)}")
    parser.add_argument("--embeddings", default=None, help="glob of real embedding shards instead of synthetic data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=100_000, help="vectors added at a time")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "index_presets.json"))
    args = parser.parse_args()
    faiss = import_faiss()

    nlist = args.nlist or 2 ** round(math.log2(4 * math.sqrt(args.n)))
    train_size = min(args.n, args.train_size or 64 * nlist)
    t0 = time.perf_counter()
    if args.embeddings:
        xb, xq = load_real(args.embeddings, args.n, args.nq, args.seed)
        source = f"embeddings {args.embeddings}"
    else:
        xb, xq = synthetic(args.n, args.nq, args.d, args.seed)
        source = "synthetic: 1024 anisotropic Gaussians calibrated to MiniLM text embeddings"
    n, d = xb.shape
    print(
        f"data: {n} x {d} ({source}) in {time.perf_counter() - t0:.0f} s; nlist {nlist}, train {train_size}, "
        f"threads {faiss.omp_get_max_threads()}",
        flush=True,
    )
    train = xb[np.random.default_rng(args.seed).choice(n, size=train_size, replace=False)]

    exact_index = FaissIndex(d)
    exact_index.index.add(xb)
    exact, flat_qps, flat_ms = timed_search(exact_index, xq, args.k)
    del exact_index

    rows, shared = [], {}
    for name in args.presets.split(","):
        factory, settings, what = PRESETS[name]
        factory = factory.format(nlist=nlist)
        print(f"building {name}: {factory}", flush=True)
        index, ivf, train_s, add_s, trained_bytes = build(name, factory, xb, train, shared, args.chunk)
        row = {
            "preset": name,
            "factory": factory,
            "what": what,
            "train_s": train_s,
            "add_s": add_s,
            "bytes": index_bytes(index.index),
            "trained_bytes": trained_bytes,
            "ivf": ivf is not None,
            "ivf_dim": int(ivf.d) if ivf is not None else 0,
            "kind": "hnsw" if factory.startswith("HNSW") else "scan",
            "qps": {},
            "ms_one_query": {},
            "recall": {},
        }
        for params in settings:
            params = resolve(params, nlist)
            index.set_search_params(**params)
            found, qps, ms = timed_search(index, xq, args.k)
            key = ",".join(f"{k}={v}" for k, v in params.items()) or "-"
            row["qps"][key], row["ms_one_query"][key], row["recall"][key] = qps, ms, recall(found, exact)
        row.update(project(row, n, nlist))
        rows.append(row)
        best = max(row["recall"], key=row["recall"].get)
        print(
            f"  {name}: {row['bytes'] / 2**20:.0f} MiB, build {train_s + add_s:.0f} s, recall@{args.k} "
            + ", ".join(f"{k}: {v:.3f} @ {row['qps'][k]:.0f} q/s" for k, v in row["recall"].items())
            + f"; 21M: {row['gib_21m']:.1f} GiB (best {best})",
            flush=True,
        )
        del index

    print(
        f"\n{n} x {d}, {args.nq} queries, recall@{args.k} vs exact; exact search {flat_qps:.1f} q/s "
        f"({flat_ms:.1f} ms for one query); 21M projection with nlist {NLIST_21M}"
    )
    header = (
        f"{'preset':20} {'search':24} {'RAM MiB':>8} {'build s':>8} {'q/s':>8} {'ms/1q':>7} {'recall':>7} "
        f"{'21M GiB':>8} {'21M q/s*':>9} {'21M build h*':>12}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        for key in row["recall"]:
            print(
                f"{row['preset']:20} {key:24} {row['bytes'] / 2**20:8.0f} {row['train_s'] + row['add_s']:8.0f} "
                f"{row['qps'][key]:8.0f} {row['ms_one_query'][key]:7.2f} {row['recall'][key]:7.3f} "
                f"{row['gib_21m']:8.1f} "
                f"{row['qps_21m_est'][key]:9.1f} {row['build_s_21m_est'] / 3600:12.2f}"
            )
    print("* estimates (see project() in this file); RAM = size of the saved index (what a memory-mapped load maps)")
    result = {
        "n": n,
        "d": d,
        "nq": args.nq,
        "k": args.k,
        "nlist": nlist,
        "train_size": train_size,
        "data": source,
        "exact_qps": flat_qps,
        "exact_ms_one_query": flat_ms,
        "threads": faiss.omp_get_max_threads(),
        "machine": platform.processor() or platform.machine(),
        "faiss": faiss.__version__,
        "projection": {"passages": WIKIPEDIA, "nlist": NLIST_21M},
        "presets": rows,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
