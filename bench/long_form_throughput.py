"""Long-form throughput: `run_long_form_static.py`'s run at several `--batch_size`s against `--batch_size 1`.

The workload of issue #18: ASQA-style items (the ASQA instruction, a question and 5 passages each, from the PopQA
sample, cycled to `--items`), beam width 2, depth 3, 40 tokens a segment, IsSup and IsUse scoring, the HF backend on
one thread, model loading excluded, CPU time; always retrieving (`--mode default`: the script's adaptive retrieval).
Every batch size must give the same answers as `--batch_size 1`. The batched run is also timed with prefix reuse
off (`HFBackend(prefix_reuse=False)`: each passage prompt prefilled in full), and its ceiling is measured: the CPU
time spent inside the model's forward passes of the batched run, i.e. the same passes with no Python around them.

    python bench/long_form_throughput.py                        # random Llama-2-shaped small model
    python bench/long_form_throughput.py --model_name PATH      # any Self-RAG checkpoint

With a random model, segments seldom ask for another retrieval, so trees are mostly one level deep; a trained
checkpoint gives deeper trees. Prints a table and writes bench/results/long_form_throughput.json.
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
from selfrag.eval.long_form import LongFormConfig, run_long_form

ROOT = Path(__file__).resolve().parent.parent


class ForwardTimer:
    """Adds up the CPU time spent inside `model.forward`."""

    def __init__(self, model) -> None:
        self.seconds, self.model, self.inner = 0.0, model, model.forward

        def timed(*args, **kwargs):
            start = time.process_time()
            try:
                return self.inner(*args, **kwargs)
            finally:
                self.seconds += time.process_time() - start

        model.forward = timed


def run(backend, model_name: str, input_file: str, out: Path, batch_size: int, args) -> tuple[float, list[str]]:
    config = LongFormConfig(
        model_name=model_name,
        input_file=input_file,
        output_file=str(out),
        task="asqa",
        mode=args.mode,
        ndocs=args.ndocs,
        beam_width=args.beam_width,
        max_depth=args.max_depth,
        max_new_tokens=args.max_new_tokens,
        use_groundness=True,
        use_utility=True,
        batch_size=batch_size,
    )
    start = time.process_time()
    outputs = run_long_form(config, backend=backend)
    return time.process_time() - start, [o["output"] for o in outputs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name", default=None)
    parser.add_argument(
        "--input_file", default=str(ROOT / "eval_data" / "popqa_longtail_w_gs.jsonl"), help="items with ctxs or docs"
    )
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--ndocs", type=int, default=5)
    parser.add_argument("--max_new_tokens", type=int, default=40)
    parser.add_argument("--beam_width", type=int, default=2)
    parser.add_argument("--max_depth", type=int, default=3)
    parser.add_argument("--max_batch_size", type=int, default=64, help="the HF backend's sequences per forward pass")
    parser.add_argument(
        "--mode",
        default="always_retrieve",
        choices=["always_retrieve", "default"],
        help="default: the script's adaptive retrieval (a first pass decides per question; with a random model about "
        "half retrieve)",
    )
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "long_form_throughput.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    source = load_items(args.input_file)
    items = [
        {"question": it["question"], "docs": (it.get("docs") or get_ctxs(it))[: args.ndocs], "answer": ""}
        for it in (source * (args.items // len(source) + 1))[: args.items]
    ]
    tmp = Path(tempfile.mkdtemp())
    input_file = tmp / "asqa.json"
    input_file.write_text(json.dumps(items))
    model_name, model_desc = args.model_name, args.model_name
    if model_name is None:
        from selfrag.testing import BENCH_MODEL, build_bench_model

        corpus = "\n".join(c["text"] for it in items for c in it["docs"])
        model_name = str(build_bench_model(tmp / "small", corpus))
        model_desc = BENCH_MODEL
    backend = HFBackend.from_pretrained(model_name, dtype="float32", max_batch_size=args.max_batch_size)
    default = LongFormConfig.__dataclass_fields__["batch_size"].default

    rows, answers = {}, {}
    for batch_size in [1, *args.batch_sizes]:
        rows[batch_size], answers[batch_size] = run(
            backend, model_name, str(input_file), tmp / f"b{batch_size}.json", batch_size, args
        )
        print(f"--batch_size {batch_size}: {rows[batch_size]:.2f} s CPU", flush=True)
    timer = ForwardTimer(backend.model)
    with_timer, _ = run(backend, model_name, str(input_file), tmp / "ceiling.json", default, args)
    ceiling = timer.seconds
    backend.model.forward = timer.inner
    backend.prefix_reuse = False
    no_reuse, no_reuse_answers = run(backend, model_name, str(input_file), tmp / "noreuse.json", default, args)

    single = rows[1]
    print(
        f"\nmodel: {model_desc}; mode {args.mode}; {len(items)} items x {args.ndocs} passages, beam "
        f"{args.beam_width}, max_depth {args.max_depth}, {args.max_new_tokens} tokens/segment, 1 thread, CPU seconds "
        "(model loading excluded)"
    )
    print(f"| {'run':<48} | {'CPU s':>7} | {'vs --batch_size 1':>17} | {'same answers':>12} |")
    print(f"|{'-' * 50}|{'-' * 9}|{'-' * 19}|{'-' * 14}|")
    table = []
    for batch_size, seconds in rows.items():
        same = answers[batch_size] == answers[1]
        name = f"--batch_size {batch_size}" + (" (the default)" if batch_size == default else "")
        table.append({"run": name, "cpu_seconds": seconds, "speedup": single / seconds, "same_answers": same})
    table.append(
        {
            "run": f"--batch_size {default}, prefix reuse off",
            "cpu_seconds": no_reuse,
            "speedup": single / no_reuse,
            "same_answers": no_reuse_answers == answers[1],
        }
    )
    table.append(
        {
            "run": f"ceiling: the forward passes of --batch_size {default}",
            "cpu_seconds": ceiling,
            "speedup": single / ceiling,
            "same_answers": True,
        }
    )
    for row in table:
        print(
            f"| {row['run']:<48} | {row['cpu_seconds']:>7.2f} | {row['speedup']:>16.1f}x "
            f"| {str(row['same_answers']):>12} |"
        )
    result = {
        "model": model_desc,
        "mode": args.mode,
        "items": len(items),
        "ndocs": args.ndocs,
        "beam_width": args.beam_width,
        "max_depth": args.max_depth,
        "max_new_tokens": args.max_new_tokens,
        "default_batch_size": default,
        "rows": table,
        "seconds_single": single,
        "seconds_batched": rows.get(default, with_timer),
        "speedup": single / rows.get(default, with_timer),
        "ceiling_seconds": ceiling,
        "identical_answers": all(row["same_answers"] for row in table),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
