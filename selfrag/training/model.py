"""Load the tokenizer and the model for fine-tuning, give them the reflection tokens, and wrap the model in LoRA."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from selfrag.errors import ConfigError, VocabError
from selfrag.training.config import FinetuneConfig
from selfrag.training.vocab import AddedTokens, add_reflection_tokens, resize_and_init_embeddings

logger = logging.getLogger(__name__)


def load_tokenizer(config: FinetuneConfig) -> tuple[Any, AddedTokens]:
    """The tokenizer with a pad token, and with the reflection tokens under `--use_special_tokens`."""
    from transformers import AutoTokenizer

    name = config.tokenizer_name or config.model_name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, use_fast=not config.use_slow_tokenizer)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load the tokenizer {name!r}: {err}") from err
    if tokenizer.eos_token is None:
        raise ConfigError(f"the tokenizer {name!r} has no eos_token; the completion must end with one")
    if getattr(config, "use_chat_template", False):
        from selfrag.training.encode import _require_chat_template

        try:
            _require_chat_template(tokenizer)
        except VocabError as err:
            raise ConfigError(str(err)) from None
    added = add_reflection_tokens(tokenizer, config.pad_token, source=name, reflection=config.use_special_tokens)
    return tokenizer, added


def load_model(config: FinetuneConfig, tokenizer: Any, added: AddedTokens) -> Any:
    """`AutoModelForCausalLM` with room (and mean-initialised rows) for the added tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"low_cpu_mem_usage": config.low_cpu_mem_usage}
    kwargs["dtype"] = "auto" if config.torch_dtype == "auto" else getattr(torch, config.torch_dtype)
    if config.use_flash_attn:
        kwargs["attn_implementation"] = flash_attention_or_sdpa()
    try:
        model = AutoModelForCausalLM.from_pretrained(config.model_name_or_path, **kwargs)
    except OSError as err:
        raise ConfigError(f"cannot load the model {config.model_name_or_path!r}: {err}") from err
    resize_and_init_embeddings(model, len(tokenizer), added.new_token_ids, added.old_len, init=config.new_token_init)
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    return model


def flash_attention_or_sdpa() -> str:
    """`--use_flash_attn`: FlashAttention-2 where it can run (CUDA and the flash-attn package), else PyTorch's sdpa
    with one warning, so the released scripts (which pass the flag) also train on machines without either."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        missing = "no CUDA GPU"
    elif importlib.util.find_spec("flash_attn") is None:
        missing = "the flash-attn package is not installed (pip install flash-attn)"
    else:
        return "flash_attention_2"
    level = logging.WARNING if os.environ.get("RANK", "0") == "0" else logging.DEBUG  # said once, not per process
    logger.log(level, "--use_flash_attn: %s; using PyTorch's scaled-dot-product attention (sdpa) instead", missing)
    return "sdpa"


def _module_name(model: Any, module: Any) -> str:
    return next(name for name, mod in model.named_modules() if mod is module).rsplit(".", 1)[-1]


def apply_lora(model: Any, config: FinetuneConfig, token_ids: Sequence[int]) -> Any:
    """Wrap `model` in LoRA (r, alpha, dropout as flags; peft's default target modules, as the original).

    The rows of `token_ids` (the reflection tokens) in the input embeddings and the output head are trained too,
    unless `--lora_new_token_rows none`: only those rows with peft's `trainable_token_indices`, or the whole
    matrices with `modules_to_save`. The original trains neither (finetune.py:485 has `modules_to_save` commented
    out), so the new rows keep their initialisation (upstream issue #38 / anchors row 12).
    """
    try:
        from peft import LoraConfig, TaskType, get_peft_model
    except ImportError as err:
        raise ConfigError("--use_lora needs peft: pip install 'selfrag[train]' (or pip install peft)") from err

    names = [_module_name(model, model.get_input_embeddings())]
    output = model.get_output_embeddings()
    tied = output is not None and output.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    if output is not None and not tied:
        names.append(_module_name(model, output))
    extra: dict[str, Any] = {}
    if token_ids and config.lora_new_token_rows == "trainable_tokens":
        extra["trainable_token_indices"] = {name: list(token_ids) for name in names}
    elif token_ids and config.lora_new_token_rows == "modules_to_save":
        extra["modules_to_save"] = names
    lora_config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        **extra,
    )
    model = get_peft_model(model, lora_config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info(
        "LoRA r=%d alpha=%s: %d of %d parameters trainable; reflection-token rows: %s",
        config.lora_rank,
        config.lora_alpha,
        trainable,
        total,
        config.lora_new_token_rows if token_ids else "none added",
    )
    return model
