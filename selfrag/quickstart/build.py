"""Rebuild the quickstart generator: data from the pipeline, LoRA training with finetune.py's code, export, evaluation.

    python -m selfrag.quickstart.build                    # 12-25 minutes on 2 CPU cores
    python -m selfrag.quickstart.build --eval_only        # re-measure the shipped adapter

Steps (all under --work_dir, default .cache/quickstart-build):
1. corpus + retriever (MiniLM, exact FAISS), training instances (`selfrag.quickstart.data`) -> train.jsonl, stats;
2. `selfrag.training.loop.train` (what retrieval_lm/finetune.py runs) on SmolLM2-135M-Instruct with
   `--use_special_tokens --use_lora` and the settings of `world.finetune_config`, bf16 autocast on CPU;
3. the LoRA weights and the reflection-token rows (peft `trainable_token_indices`) are re-saved without the full
   embedding matrix into `selfrag/quickstart/adapter/` (a few MB; the base rows are rebuilt by the same mean
   initialisation at load time);
4. `selfrag.quickstart.evaluate` on the held-out questions and instructions -> `selfrag/quickstart/adapter/eval.json`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from selfrag.cli import flag, parse_config, run_main, setup_logging
from selfrag.data import write_json_atomic
from selfrag.quickstart import world
from selfrag.quickstart.data import training_instances

logger = logging.getLogger(__name__)


@dataclass
class BuildConfig:
    work_dir: str = flag(
        "Scratch folder for the training data and the full training output.", default=".cache/quickstart-build"
    )
    adapter_dir: str = flag("Where the exported adapter goes (shipped in the package).", default=str(world.ADAPTER_DIR))
    num_train_epochs: int = flag("Passes over the training data.", default=3)
    learning_rate: float = flag("Peak learning rate.", default=1e-3)
    max_train_steps: int | None = flag("Stop after this many updates (for a quick check).", default=None)
    mixed_precision: str = flag(
        "Autocast dtype on CPU (bf16 is about 3x faster on CPUs with AVX512-BF16).", default="bf16"
    )
    eval_only: bool = flag("Skip data and training; evaluate the adapter in --adapter_dir.", default=False)


def export_adapter(train_output: Path, adapter_dir: Path) -> None:
    """Re-save the trained adapter without the full embedding matrix (LoRA + reflection-token rows only)."""
    from peft import PeftModel

    from selfrag.training.model import load_model, load_tokenizer

    config = world.finetune_config()
    tokenizer, added = load_tokenizer(config)
    model = PeftModel.from_pretrained(load_model(config, tokenizer, added), str(train_output / "adapter"))
    tmp = adapter_dir.with_name(adapter_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, save_embedding_layers=False)
    (tmp / "README.md").unlink(missing_ok=True)  # peft's empty model card
    for extra in ("eval.json", "build.json"):
        if (adapter_dir / extra).exists():
            shutil.copy(adapter_dir / extra, tmp / extra)
    shutil.rmtree(adapter_dir, ignore_errors=True)
    tmp.rename(adapter_dir)


def main(config: BuildConfig) -> None:
    from selfrag.quickstart.evaluate import evaluate

    work, adapter_dir = Path(config.work_dir), Path(config.adapter_dir)
    if not config.eval_only:
        work.mkdir(parents=True, exist_ok=True)
        started = time.time()
        retriever = world.build_retriever()
        data, stats = training_instances(retriever)
        train_file = work / "train.jsonl"
        with open(train_file, "w") as f:
            f.writelines(json.dumps(d) + "\n" for d in data)
        logger.info("training data: %s", stats)
        os.environ.setdefault("ACCELERATE_MIXED_PRECISION", config.mixed_precision)
        from selfrag.training.loop import train

        output = work / "model"
        ft = world.finetune_config(
            train_file=str(train_file),
            output_dir=str(output),
            num_train_epochs=config.num_train_epochs,
            learning_rate=config.learning_rate,
            max_train_steps=config.max_train_steps,
        )
        result = train(ft)
        export_adapter(output, adapter_dir)
        write_json_atomic(
            adapter_dir / "build.json",
            {
                "data": stats,
                "train": {
                    "completed_steps": result.completed_steps,
                    "tokens_per_second": round(result.tokens_per_second, 1),
                    "first_loss": round(result.losses[0], 4),
                    "last_loss": round(result.losses[-1], 4),
                },
                "minutes": round((time.time() - started) / 60, 1),
                "finetune": vars(ft),
            },
        )
    report = evaluate(adapter_dir)
    write_json_atomic(adapter_dir / "eval.json", report)
    logger.info("held-out evaluation: %s", json.dumps(report["summary"]))


if __name__ == "__main__":
    setup_logging()
    raise SystemExit(run_main(lambda argv: main(parse_config(BuildConfig, argv, __doc__)) or 0, None))
