"""Every benchmark in one run, each against the original's approach measured in the same run: docs/performance.md.

Runs each bench/ script as a subprocess (one thread: OMP_NUM_THREADS=1; sizes below, chosen so that the whole run
takes under 30 minutes on 2 CPU cores), reads the JSON it writes under bench/results/run_all/, and writes
docs/performance.md: one table (benchmark, our figure, the original's approach's figure, ratio, exact command) and a
note per benchmark. A benchmark that fails is recorded as failed, with the end of its output, and the others go on.

    python bench/run_all.py                      # everything (~13 minutes on 2 cores)
    python bench/run_all.py --only embeddings    # rerun one; the others keep their last results

Logs and results: bench/results/run_all/{NAME}.log, {NAME}.json, and state.json (what the page is made from).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "run_all"
PAGE = ROOT / "docs" / "performance.md"
WIKIPEDIA = 21_015_324
TIMEOUT_S = 15 * 60


def short_form(r: dict) -> list[tuple]:
    return [
        (
            f"short form, items/s ({r['items']} PopQA questions x {r['ndocs']} passages, {r['max_new_tokens']} tokens)",
            f"{r['items_per_s_ours']:.2f}",
            f"{r['items_per_s_original']:.2f}",
            f"{r['speedup']:.1f}x",
            f"{r['identical_predictions']}/{r['items']} identical predictions",
        )
    ]


def long_form(r: dict) -> list[tuple]:
    items, bs = r["items"], r["default_batch_size"]
    return [
        (
            f"long form, items per CPU second ({r.get('mode', 'always_retrieve')}; {items} ASQA-style items x "
            f"{r['ndocs']} passages, beam {r['beam_width']}, depth {r['max_depth']}, --batch_size {bs})",
            f"{items / r['seconds_batched']:.2f}",
            f"{items / r['seconds_single']:.2f}",
            f"{r['speedup']:.1f}x",
            "identical answers" if r["identical_answers"] else "ANSWERS DIFFER",
        )
    ]


def index_presets(r: dict) -> list[tuple]:
    exact_gib = WIKIPEDIA * 768 * 4 / 2**30
    rows = []
    for p in r["presets"]:
        rows.append(
            (
                f"retrieval preset `{p['preset']}` ({p['factory']}), queries/s over {r['n']:,} vectors",
                f"{p['qps']:.0f} q/s, recall@{r['k']} {p['recall']:.3f}",
                f"{r['exact_qps']:.0f} q/s (exact)",
                f"{p['qps'] / r['exact_qps']:.1f}x",
                f"build {p['build_s']:.0f} s",
            )
        )
        rows.append(
            (
                f"retrieval preset `{p['preset']}`, RAM at 21M passages ({p['factory_21m']})",
                f"{p['gib_21m']:.1f} GiB",
                f"{exact_gib:.1f} GiB (exact)",
                f"{p['gib_21m'] / exact_gib:.2f}x",
                "",
            )
        )
    return rows


def embeddings(r: dict) -> list[tuple]:
    return [
        (
            f"passage embeddings, passages/s ({r['n']} passages, batch {r['batch_size']}, MiniLM-L6 as Contriever)",
            f"{r['passages_per_s_ours']:.1f}",
            f"{r['passages_per_s_original']:.1f}",
            f"{r['speedup']:.2f}x",
            f"max abs diff {r['max_abs_diff']:.0e}" if r["identical"] else "EMBEDDINGS DIFFER",
        )
    ]


def server(r: dict) -> list[tuple]:
    one = r["levels"][0]
    return [
        (
            f"server, requests/s at {lv['clients']} client{'s' if lv['clients'] > 1 else ''} "
            f"(p50 {lv['p50_ms'] / 1000:.1f} s)",
            f"{lv['throughput_rps']:.2f}",
            f"{one['throughput_rps']:.2f} (1 client)",
            f"{lv['throughput_rps'] / one['throughput_rps']:.1f}x",
            f"{lv['identical_answers']}/{lv['requests']} as at 1 client; mean batch {lv['mean_batch_size']:.1f}",
        )
        for lv in r["levels"]
    ]


def training(r: dict) -> list[tuple]:
    by = {x["precision"]: x for x in r["results"]}
    fp32, bf16 = by["fp32"], by["bf16 autocast"]
    m = r["model"]
    return [
        (
            f"training, tokens/s (Llama hidden {m['hidden_size']}, {m['num_layers']} layers, vocab {m['vocab_size']}, "
            f"batch {r['batch_size']}, {fp32['updates']} updates)",
            f"{bf16['tokens_per_second']:.0f} (bf16 autocast)",
            f"{fp32['tokens_per_second']:.0f} (fp32)",
            f"{bf16['tokens_per_second'] / fp32['tokens_per_second']:.1f}x",
            "",
        )
    ]


# name -> (script and its flags, rows from its JSON, what the comparison is)
BENCHMARKS = {
    "short_form": (
        ["bench/short_form_throughput.py", "--items", "12", "--ndocs", "10", "--max_new_tokens", "100"],
        short_form,
        "The original's approach (run_short_form.py): one question per `generate` call, log-probs of the whole "
        "vocabulary at every position (32016 in the first pass, 5000 in the passage pass). Ours: every question x "
        "passage of a batch in one backend call, only the 15 reflection-token log-probs read. Same random "
        "Llama-2-shaped model (hidden 256, 4 layers, vocab 32016), HF backend, adaptive retrieval with threshold 0, "
        "wall-clock seconds.",
    ),
    "long_form": (
        ["bench/long_form_throughput.py", "--items", "32", "--batch_sizes", "4", "8", "16", "32"],
        long_form,
        "The original's approach (run_long_form_static.py): one question at a time, i.e. `--batch_size 1`. Ours: "
        "the beam search batched across questions at the default `--batch_size` (in the row), with prefix reuse. "
        "Same random model, always retrieving, 40 tokens a segment, CPU seconds, model loading excluded. The script "
        "also times other batch sizes, prefix reuse off and the forward-pass ceiling (in its log and JSON). With a "
        "random model the trees are mostly one level deep.",
    ),
    "long_form_adaptive": (
        ["bench/long_form_throughput.py", "--mode", "default", "--items", "32", "--batch_sizes", "32"],
        long_form,
        "As long_form, in the script's default mode (adaptive retrieval: a first pass decides per question; with a "
        "random model about half retrieve).",
    ),
    "index_presets": (
        ["bench/index_named_presets.py", "--n", "200000", "--nq", "1000"],
        index_presets,
        "No second implementation here: the original always builds IndexFlatIP (exact inner-product search, "
        "`--n_subquantizers 0`), so each preset's queries/s and RAM at 21M passages are compared with exact search "
        "over the same vectors, and recall@20 is measured against it. Synthetic 768-d vectors "
        "(bench/index_presets.py's distribution), not Contriever embeddings. Build times are ours only (the "
        "original has no build step beyond adding the vectors). RAM at 21M is projected from the bytes per vector "
        "measured here; exact search needs 21,015,324 x 768 x 4 bytes.",
    ),
    "embeddings": (
        ["bench/embed_throughput.py", "--n", "1024", "--batch_size", "512", "--repeats", "2"],
        embeddings,
        "The original's approach (contriever's generate_passage_embeddings.py): passages in file order, "
        "`--per_gpu_batch_size` 512 at a time, each batch padded to its longest passage. Ours "
        "(selfrag.retrieval.embeddings.generate_passage_embeddings): passages sorted longest first, so batch mates "
        "pad little, written in resumable chunks. Same TSV, encoder (all-MiniLM-L6-v2 with mean pooling and no "
        "normalisation, the only encoder weights installable here), batch size and outputs. The passages are short "
        "and of similar lengths (50-98 tokens), so sorting saves little; fp32 on CPU.",
    ),
    "server": (
        ["bench/server_latency.py", "--requests", "48", "--clients", "1,4,16"],
        server,
        "No counterpart in the original, which has no server: the ratio is against 1 client, i.e. one request at a "
        "time, which is how the original's scripts answer questions. Requests at 4 and 16 clients are batched "
        "(up to 16 per Self-RAG call). Random model, MiniLM + FAISS Flat retrieval over the eval sample's "
        "passages, 5 passages a question, 32 new tokens, adaptive retrieval with threshold 0.",
    ),
    "training": (
        ["bench/train_throughput.py", "--steps", "10", "--batch_size", "4"],
        training,
        "No separate original approach on CPU: `selfrag.training.loop.train` is the original finetune.py's "
        "algorithm (AdamW, padding to the longest example, same loss); the original trains in bf16 "
        "(`accelerate --mixed_precision bf16`) on GPUs with DeepSpeed. The ratio is bf16 autocast against fp32 "
        "in the same run, on a random Llama with the Llama-2 vocabulary, trained on bench/data/generator_sample.jsonl.",
    ),
}


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def command_of(name: str) -> list[str]:
    return [*BENCHMARKS[name][0], "--output", f"bench/results/run_all/{name}.json"]


def run_one(name: str) -> dict:
    argv = command_of(name)
    out, log_file = OUT / f"{name}.json", OUT / f"{name}.log"
    out.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    log(f"{name}: OMP_NUM_THREADS=1 python {' '.join(argv)}")
    start = time.perf_counter()
    entry = {"command": f"OMP_NUM_THREADS=1 python {' '.join(argv)}", "load_before": os.getloadavg()[0]}
    try:
        with log_file.open("w") as handle:
            proc = subprocess.run(
                [sys.executable, *argv], cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=TIMEOUT_S
            )
        if proc.returncode != 0:
            raise RuntimeError(f"exit status {proc.returncode}")
        entry["result"] = json.loads(out.read_text())
        entry["rows"] = BENCHMARKS[name][1](entry["result"])
        entry["status"] = "ok"
    except Exception as err:  # noqa: BLE001 - one benchmark's failure is recorded, the others go on
        tail = log_file.read_text(errors="replace").splitlines()[-15:] if log_file.exists() else []
        entry.update(status="failed", error=f"{type(err).__name__}: {err}", tail="\n".join(tail))
    entry["seconds"] = time.perf_counter() - start
    entry["load_after"] = os.getloadavg()[0]
    entry["finished"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    log(f"{name}: {entry['status']} in {entry['seconds']:.0f} s (log: {log_file.relative_to(ROOT)})")
    return entry


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def write_page(state: dict) -> None:
    import torch

    lines = [
        "# Performance",
        "",
        "Written by `python bench/run_all.py`: every benchmark of bench/ run on one machine, each figure next to the "
        "original's approach (or the stated reference) measured in the same run. Re-run one benchmark with "
        "`python bench/run_all.py --only NAME` (names: " + ", ".join(f"`{n}`" for n in BENCHMARKS) + ").",
        "",
        "| benchmark | this implementation | the original's approach (same run) | ratio | check | command |",
        "|---|---|---|---|---|---|",
    ]
    for name in BENCHMARKS:
        entry = state.get(name)
        if entry is None:
            lines.append(f"| {name} | not run | | | | |")
            continue
        cmd = f"`{entry['command']}`"
        if entry["status"] != "ok":
            error = entry["error"].replace("|", "/")
            lines.append(f"| {name} | **failed** ({error}) | | | see the notes | {cmd} |")
            continue
        for i, row in enumerate(entry["rows"]):
            lines.append("| " + " | ".join(str(x) for x in row) + f" | {cmd if i == 0 else '(same run)'} |")
    lines += [
        "",
        "Not in the table: bench/masking_drop.py (target tokens the original masking rule drops: not a speed figure), "
        "bench/index_presets.py (more index types than the named presets, ~1 h) and bench/index_build_memory.py "
        "(peak memory of the index build).",
        "",
        "## Notes",
        "",
    ]
    for name, (_, _, note) in BENCHMARKS.items():
        entry = state.get(name)
        ran = f" Ran {entry['finished']}, {entry['seconds']:.0f} s." if entry else " Not run yet."
        lines.append(f"* **{name}**: {note}{ran}")
        if entry and entry["status"] != "ok":
            lines += ["", f"  Failed: {entry['error']}. End of its output:", "", "  ```"]
            lines += [f"  {x}" for x in entry["tail"].splitlines()] + ["  ```", ""]
    total = state.get("_total_seconds")
    entries = [state[name] for name in BENCHMARKS if name in state]
    loads = [x for e in entries for x in (e["load_before"], e["load_after"])]
    lines += [
        "",
        "## Machine",
        "",
        f"* CPU: {cpu_model()}, {os.cpu_count()} cores; every benchmark ran on one thread (`OMP_NUM_THREADS=1`).",
        f"* torch {torch.__version__}, Python {platform.python_version()}, {platform.system()} {platform.release()}.",
        f"* Last full run: {state.get('_date', 'none')}" + (f", {total / 60:.1f} minutes in all." if total else "."),
        f"* The {os.cpu_count()} cores are shared with other jobs: the 1-minute load average, read before and after "
        f"each benchmark, lay between {min(loads, default=0):.1f} and {max(loads, default=0):.1f} (a benchmark's own "
        "thread counts 1), so single figures carry noise; the ratios less, as both sides of each run in the same "
        "process, one after the other."
        if loads
        else "* The cores may be shared with other jobs.",
        "* No GPU machine was lent to this work, so there are no GPU figures (vllm backend, fp16 embeddings, "
        "DeepSpeed / FSDP training); all figures are CPU figures (small random Llamas, MiniLM, synthetic vectors).",
        "",
    ]
    PAGE.write_text("\n".join(lines))
    log(f"wrote {PAGE}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=list(BENCHMARKS), help="rerun one benchmark, keep the others' results")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    state_file = OUT / "state.json"
    state = json.loads(state_file.read_text()) if args.only and state_file.exists() else {}
    start = time.perf_counter()
    for name in [args.only] if args.only else BENCHMARKS:
        state[name] = run_one(name)
        state_file.write_text(json.dumps(state, indent=1))
    if not args.only:
        state["_total_seconds"] = time.perf_counter() - start
        state["_date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        state_file.write_text(json.dumps(state, indent=1))
    log(f"done in {(time.perf_counter() - start) / 60:.1f} minutes")
    write_page(state)


if __name__ == "__main__":
    main()
