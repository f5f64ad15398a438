"""Flags of `retrieval_lm/finetune.py`: the original's names and defaults (finetune.py:50-229), plus a few additions.

Additions: `--original_masking` (the original's two masking bugs, for ablations), `--overflow` (what to do with
sequences longer than `--max_seq_length`), `--use_chat_template`, `--new_token_init`, `--lora_new_token_rows`,
`--torch_dtype`, `--pad_token`, `--strategy` (with `--zero_stage`, `--deepspeed_config`, `--mixed_precision`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from selfrag.errors import ConfigError

SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")


def _flag(help: str, default: Any, **metadata: Any) -> Any:  # noqa: A002 - argparse's keyword
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class FinetuneConfig:
    """Generator fine-tuning settings; `selfrag.training.loop.train(config)` runs them."""

    # Model and tokenizer
    model_name_or_path: str = _flag("Local path or hub id of the base model (e.g. meta-llama/Llama-2-7b-hf).", "")
    tokenizer_name: str | None = _flag("Tokenizer path or id (default: --model_name_or_path).", None)
    use_slow_tokenizer: bool = _flag("Ask for the slow (SentencePiece) tokenizer, as the original scripts do.", False)
    use_special_tokens: bool = _flag(
        "Add the 15 reflection tokens and mask the <paragraph>...</paragraph> passages from the loss.", False
    )
    pad_token: str = _flag("Pad token added when the tokenizer has none (the original's <pad>).", "<pad>")
    new_token_init: Literal["mean", "default"] = _flag(
        "Rows of added tokens: the mean of the old rows (input and output), or transformers' default (original).",
        "mean",
    )
    torch_dtype: Literal["float32", "bfloat16", "float16", "auto"] = _flag(
        "dtype the weights are loaded in; keep float32 and use `accelerate launch --mixed_precision bf16` to train.",
        "float32",
    )
    use_flash_attn: bool = _flag("FlashAttention-2 with CUDA and flash-attn; else sdpa, with a warning.", False)
    low_cpu_mem_usage: bool = _flag("Passed to from_pretrained (transformers 5 always loads lazily).", False)
    gradient_checkpointing: bool = _flag("Recompute activations in the backward pass to save memory.", False)
    # Data
    train_file: str = _flag("json / jsonl file of {instruction, input (optional), output} records.", "")
    max_seq_length: int = _flag("Maximum tokens per example (prompt + output + EOS).", 512)
    overflow: Literal["drop", "truncate"] = _flag(
        "Examples longer than --max_seq_length: drop them (counted and logged) or truncate them (the original).",
        "drop",
    )
    original_masking: bool = _flag(
        "The original's masks: the last prompt token stays a target, and ONE span from the first <paragraph> to the "
        "last </paragraph> is masked, segments in between included (upstream issue #95).",
        False,
    )
    use_chat_template: bool = _flag(
        "Format examples with the tokenizer's chat template (modern instruction models): user = instruction "
        "(+ blank line + input), assistant = output; instead of the Alpaca '### Instruction:' prompt. The prompt "
        "stays masked, and the passages inside the assistant turn. Inference must then use the same template.",
        False,
    )
    preprocessing_num_workers: int | None = _flag("Processes used to tokenize the training file.", None)
    # Optimisation
    per_device_train_batch_size: int = _flag("Examples per device and micro-batch.", 8)
    gradient_accumulation_steps: int = _flag("Micro-batches per optimizer update.", 1)
    learning_rate: float = _flag("Peak learning rate of AdamW.", 5e-5)
    weight_decay: float = _flag("AdamW weight decay (not applied to biases and norms).", 0.0)
    lr_scheduler_type: Literal[SCHEDULERS] = _flag("transformers.get_scheduler name.", "linear")  # type: ignore[valid-type]
    warmup_ratio: float = _flag("Fraction of the updates spent warming up.", 0.0)
    num_train_epochs: int = _flag("Passes over the training data.", 3)
    max_train_steps: int | None = _flag("Stop after this many updates (overrides --num_train_epochs).", None)
    seed: int | None = _flag("Random seed (weights of new LoRA layers, data order).", None)
    # LoRA
    use_lora: bool = _flag("Train LoRA adapters (peft) instead of all weights.", False)
    lora_rank: int = _flag("LoRA rank.", 64)
    lora_alpha: float = _flag("LoRA alpha.", 16)
    lora_dropout: float = _flag("LoRA dropout.", 0.1)
    lora_new_token_rows: Literal["trainable_tokens", "modules_to_save", "none"] = _flag(
        "Under LoRA, how the reflection-token rows of the embeddings and the output head are trained: only those "
        "rows (peft trainable_token_indices), the whole matrices (modules_to_save), or not at all (the original, "
        "which leaves them at their initialisation).",
        "trainable_tokens",
    )
    # Outputs, logging, checkpoints
    output_dir: str = _flag("Where the final model, tokenizer and checkpoints go.", "")
    with_tracking: bool = _flag("Log metrics to the trackers of --report_to.", False)
    report_to: str = _flag("accelerate trackers: all, tensorboard, wandb, comet_ml, ...", "all")
    logging_steps: int | None = _flag("Log loss, learning rate and tokens/s every N updates.", None)
    checkpointing_steps: str | None = _flag("Save a resumable state every N updates, or 'epoch'.", None)
    resume_from_checkpoint: str | None = _flag(
        "A step_N / epoch_N folder to resume from; 'latest': the newest complete one in --output_dir; 'auto': the "
        "same, or start from scratch when there is none (rerun the same command after a crash).",
        None,
    )
    strategy: Literal["accelerate", "deepspeed", "fsdp"] = _flag(
        "Distribution backend. accelerate: one process, DDP (`ACCELERATE_USE_CPU=1 torchrun` on CPU), and on GPUs "
        "`accelerate launch --use_deepspeed` / FSDP. deepspeed: `deepspeed.initialize` (ZeRO-2/3) and fsdp: FSDP2 "
        "`fully_shard`, both called directly, under torchrun or the deepspeed launcher, on GPUs and on CPU (gloo).",
        "accelerate",
    )
    zero_stage: int | None = _flag(
        "--strategy deepspeed: ZeRO stage (2 or 3); default: the config file's, else 3.", None
    )
    deepspeed_config: str | None = _flag(
        "--strategy deepspeed: a DeepSpeed JSON config ('auto' values are filled from the flags); default: a "
        "built-in ZeRO-3 config like the original's stage3_no_offloading_accelerate.conf.",
        None,
    )
    mixed_precision: Literal["no", "bf16", "fp16"] = _flag(
        "--strategy deepspeed|fsdp: compute dtype (with accelerate use `accelerate launch --mixed_precision`).", "no"
    )

    def __post_init__(self) -> None:
        if not self.model_name_or_path:
            raise ConfigError("--model_name_or_path is required")
        if not self.train_file:
            raise ConfigError("--train_file is required")
        if not self.train_file.endswith((".json", ".jsonl")):
            raise ConfigError(f"--train_file must be a .json or .jsonl file, got {self.train_file}")
        if not self.output_dir:
            raise ConfigError("--output_dir is required")
        for name in (
            "max_seq_length",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "num_train_epochs",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ConfigError(f"--warmup_ratio must be in [0, 1], got {self.warmup_ratio}")
        if self.max_train_steps is not None and self.max_train_steps < 1:
            raise ConfigError(f"--max_train_steps must be at least 1, got {self.max_train_steps}")
        if self.logging_steps is not None and self.logging_steps < 1:
            raise ConfigError(f"--logging_steps must be at least 1, got {self.logging_steps}")
        if self.checkpointing_steps is not None and not (
            self.checkpointing_steps == "epoch" or self.checkpointing_steps.isdigit() and int(self.checkpointing_steps)
        ):
            raise ConfigError(
                f"--checkpointing_steps must be a positive integer or 'epoch', got {self.checkpointing_steps}"
            )
        if self.zero_stage is not None and self.zero_stage not in (2, 3):
            raise ConfigError(f"--zero_stage must be 2 or 3, got {self.zero_stage}")
        if self.strategy != "deepspeed" and (self.zero_stage is not None or self.deepspeed_config):
            raise ConfigError("--zero_stage / --deepspeed_config need --strategy deepspeed")
        if self.strategy == "accelerate" and self.mixed_precision != "no":
            raise ConfigError(
                "--mixed_precision is for --strategy deepspeed|fsdp; use accelerate launch --mixed_precision"
            )
        if self.use_lora and self.lora_rank < 1:
            raise ConfigError(f"--lora_rank must be at least 1, got {self.lora_rank}")
