"""Critic training (`data_creation/train_special_tokens.py`): the original's flags on the generator's loop.

The original (docs/original_selfrag.md §8.3, §2.6, §3.6) is an HF `Trainer` script run as
`torchrun --nproc_per_node=2 ... --fsdp "full_shard auto_wrap"`. Here its flags map onto a `FinetuneConfig` and
`selfrag.training.loop.train` runs them, so the critic gets the same strategies (accelerate, DeepSpeed ZeRO-2/3,
FSDP2 on CPU and GPUs), checkpoints, logging and clear data errors as the generator. What is the critic's own:

* prompt: `### Instruction:\\n{instruction}\\n\\n### Input:\\n{input}\\n\\n### Response:` (no Alpaca preamble, no
  trailing newline; `prompt_no_input` when `input` is empty); target: `output` + EOS; the whole prompt masked;
* `--use_special_token`: add the 15 reflection tokens (the README command does not pass it, so the released critic
  writes its labels as plain text); a pad token `[PAD]` is added when the tokenizer has none; new rows of the input
  and output embeddings are the mean of the old rows (`smart_tokenizer_and_embedding_resize`);
* `--not_consider_special_tokens`: also drop every reflection token from the loss;
* `--use_chat_template` (not in the original): the tokenizer's chat template instead of the prompt above (user =
  instruction, a blank line and input; assistant = output), the prompt still masked;
* `--use_context_markups`: mask each `<paragraph>...</paragraph>` interior (needs `--use_special_token`). The original
  masks one span from the first `<paragraph>` to the last `</paragraph>`, and with no `</paragraph>` reads an undefined
  or stale end index (train_special_tokens.py:213-224); the generator's per-span rule is used instead
  (`--original_masking`: the one span, and finetune.py's end-of-sequence rule when no `</paragraph>` follows).

Trainer flags map as: `--fsdp "full_shard auto_wrap"` -> `--strategy fsdp` (FSDP2, one shard group per decoder
layer: the model's `_no_split_modules`); `--deepspeed ds.json` -> `--strategy deepspeed`; otherwise accelerate
(one process or DDP). `--bf16 True` -> bf16 mixed precision; `--save_strategy steps|epoch|no` + `--save_steps` ->
`--checkpointing_steps`; `--max_steps`, `--report_to`, `--logging_steps`, `--seed` (default 42, as the Trainer) as
named. Evaluation is not run (the README passes `--evaluation_strategy no`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from selfrag.errors import ConfigError, DataFormatError
from selfrag.training.config import FinetuneConfig, _flag

logger = logging.getLogger(__name__)

# Original train_special_tokens.py:34-41 (literal; differs from the generator's PROMPT_DICT by the trailing newline).
CRITIC_PROMPTS = {
    "prompt_input": "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:",
    "prompt_no_input": "### Instruction:\n{instruction}\n\n### Response:",
}

FSDP_OPTIONS = {"full_shard", "auto_wrap"}
OPTIMIZERS = ("adamw_torch", "adamw_hf", "adamw_torch_fused")


@dataclass
class CriticConfig:
    """The original critic script's flags (ModelArguments, DataArguments, the TrainingArguments it uses)."""

    # ModelArguments
    model_name_or_path: str = _flag("Base model path or hub id.", "facebook/opt-125m")
    tokenizer_path: str | None = _flag("Tokenizer path or id (default: --model_name_or_path).", None)
    use_special_token: bool = _flag("Add the 15 reflection tokens to the vocabulary (mean-initialised rows).", False)
    not_consider_special_tokens: bool = _flag("Exclude the reflection tokens from the loss.", False)
    use_context_markups: bool = _flag(
        "Exclude each <paragraph>...</paragraph> interior from the loss (needs --use_special_token).", False
    )
    use_flash_attn: bool = _flag("FlashAttention-2 with CUDA and flash-attn; else sdpa, with a warning.", False)
    original_masking: bool = _flag(
        "With --use_context_markups: the original's passage mask, ONE span from the first <paragraph> to the last "
        "</paragraph> (segments between passages lost, upstream issue #95); the prompt is masked whole either way.",
        False,
    )
    use_chat_template: bool = _flag(
        "Format examples with the tokenizer's chat template (user = instruction + blank line + input, assistant = "
        "output) instead of the critic's '### Instruction:' prompt; the prompt stays masked.",
        False,
    )
    # DataArguments
    data_path: str = _flag("JSON list (or JSONL) of {instruction, input, output} critic examples.", "")
    separated: bool = _flag("The original's separated-prompt mode; it crashes there (KeyError) and is rejected.", False)
    # TrainingArguments
    output_dir: str = _flag("Where the model, tokenizer and checkpoints go.", "")
    model_max_length: int = _flag("Maximum tokens per example.", 512)
    overflow: Literal["drop", "truncate"] = _flag(
        "Longer examples: drop them (counted) or truncate them (the original's tokenizer truncation).", "drop"
    )
    optim: str = _flag(f"Optimizer; one of {OPTIMIZERS} (all AdamW).", "adamw_torch")
    num_train_epochs: int = _flag("Passes over the data.", 3)
    max_steps: int = _flag("Stop after this many updates (-1: use --num_train_epochs).", -1)
    per_device_train_batch_size: int = _flag("Examples per device and micro-batch.", 8)
    per_device_eval_batch_size: int = _flag("Accepted for compatibility (no evaluation is run).", 8)
    gradient_accumulation_steps: int = _flag("Micro-batches per update.", 1)
    learning_rate: float = _flag("Peak learning rate.", 5e-5)
    weight_decay: float = _flag("AdamW weight decay (not on biases and norms).", 0.0)
    warmup_ratio: float = _flag("Fraction of the updates spent warming up.", 0.0)
    lr_scheduler_type: str = _flag("transformers.get_scheduler name (the README uses cosine).", "linear")
    eval_strategy: str = _flag(
        "Only 'no' (the README's --evaluation_strategy no).", "no", aliases=["--evaluation_strategy"]
    )
    save_strategy: Literal["no", "steps", "epoch"] = _flag("When to checkpoint.", "steps")
    save_steps: int = _flag("Updates between checkpoints under --save_strategy steps.", 500)
    save_total_limit: int | None = _flag("Accepted for compatibility; old checkpoints are kept.", None)
    logging_steps: int = _flag("Log loss, learning rate and tokens/s every N updates.", 500)
    report_to: str = _flag("Trackers (tensorboard, wandb, all) or none.", "none")
    seed: int = _flag("Random seed (the Trainer's default 42).", 42)
    bf16: bool = _flag("bf16 mixed precision.", False)
    tf32: bool = _flag("Allow TF32 matmuls (CUDA only; ignored on CPU).", False)
    gradient_checkpointing: bool = _flag("Recompute activations in the backward pass.", False)
    fsdp: str = _flag("'full_shard auto_wrap' (the README): FSDP2 under torchrun; empty: accelerate.", "")
    fsdp_transformer_layer_cls_to_wrap: str | None = _flag(
        "Accepted for compatibility; FSDP2 wraps the model's decoder layers (_no_split_modules).", None
    )
    deepspeed: str | None = _flag("A DeepSpeed JSON config: train with DeepSpeed called directly.", None)
    resume_from_checkpoint: str | None = _flag(
        "A checkpoint folder; 'latest' / 'True': the newest in --output_dir; 'auto': the same, or start from scratch.",
        None,
    )

    def __post_init__(self) -> None:
        if self.separated:
            raise ConfigError(
                "--separated: the original reads PROMPT_DICT['prompt_no_input_separated'], which does not exist "
                "(KeyError as shipped); no such format is defined, so it is not supported"
            )
        if self.eval_strategy != "no":
            raise ConfigError(f"--eval_strategy {self.eval_strategy}: no evaluation is run; pass 'no'")
        if self.optim not in OPTIMIZERS:
            raise ConfigError(f"--optim {self.optim}: only {', '.join(OPTIMIZERS)} (AdamW) are supported")
        options = set(self.fsdp.split())
        if options - FSDP_OPTIONS or (options and "full_shard" not in options):
            raise ConfigError(f"--fsdp {self.fsdp!r}: only 'full_shard auto_wrap' (FSDP2 fully_shard) is supported")
        if options and self.deepspeed:
            raise ConfigError("--fsdp and --deepspeed are exclusive")
        if self.original_masking and not self.use_context_markups:
            raise ConfigError("--original_masking changes the passage masks of --use_context_markups; pass both")
        if self.use_context_markups and not self.use_special_token:
            raise ConfigError("--use_context_markups needs --use_special_token (<paragraph> must be one token)")
        if not self.data_path:
            raise ConfigError("--data_path is required")
        if not self.output_dir:
            raise ConfigError("--output_dir is required")

    @property
    def strategy(self) -> str:
        return "fsdp" if self.fsdp else "deepspeed" if self.deepspeed else "accelerate"

    def to_finetune_config(self) -> FinetuneConfig:
        """The generator loop's settings for this critic run."""
        strategy = self.strategy
        checkpointing = {"no": None, "steps": str(self.save_steps), "epoch": "epoch"}[self.save_strategy]
        reporting = self.report_to not in ("none", "")
        return FinetuneConfig(
            model_name_or_path=self.model_name_or_path,
            tokenizer_name=self.tokenizer_path,
            use_special_tokens=self.use_special_token,
            pad_token="[PAD]",
            new_token_init="mean",
            use_flash_attn=self.use_flash_attn,
            use_chat_template=self.use_chat_template,
            gradient_checkpointing=self.gradient_checkpointing,
            train_file=self.data_path,
            max_seq_length=self.model_max_length,
            overflow=self.overflow,
            per_device_train_batch_size=self.per_device_train_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            lr_scheduler_type=self.lr_scheduler_type,
            warmup_ratio=self.warmup_ratio,
            num_train_epochs=self.num_train_epochs,
            max_train_steps=self.max_steps if self.max_steps > 0 else None,
            seed=self.seed,
            output_dir=self.output_dir,
            with_tracking=reporting,
            report_to=self.report_to if reporting else "all",
            logging_steps=self.logging_steps,
            checkpointing_steps=checkpointing,
            resume_from_checkpoint=self.resume_from_checkpoint,
            strategy=strategy,
            deepspeed_config=self.deepspeed,
            mixed_precision="bf16" if self.bf16 and strategy != "accelerate" else "no",
        )


def critic_encode_fn(critic: CriticConfig):
    """`encode_fn` for `loop.train`: the critic prompt, and its optional reflection-token / passage masking."""
    from selfrag.data import load_items
    from selfrag.tokens import ALL_TOKENS
    from selfrag.training.encode import encode_dataset, encode_example

    def encode(config: FinetuneConfig, tokenizer: Any):
        mask_ids: tuple[int, ...] = ()
        if critic.not_consider_special_tokens:
            ids = tokenizer.convert_tokens_to_ids(list(ALL_TOKENS))
            mask_ids = tuple(i for i in ids if i is not None and i != tokenizer.unk_token_id)
        fn = partial(
            encode_example,
            tokenizer=tokenizer,
            max_seq_length=config.max_seq_length,
            mask_paragraphs=critic.use_context_markups,
            templates=CRITIC_PROMPTS,
            mask_token_ids=mask_ids,
            chat_template=critic.use_chat_template,
            original_paragraphs=critic.original_masking,
        )
        data, stats = encode_dataset(load_items(config.train_file), fn, overflow=config.overflow)
        if not data:
            raise DataFormatError(f"{config.train_file}: no training example left after encoding ({stats.summary()})")
        return data, stats

    return encode


def train_critic(critic: CriticConfig) -> Any:
    """Train the critic; returns `selfrag.training.result.TrainResult`."""
    from selfrag.training.loop import train

    config = critic.to_finetune_config()
    if critic.bf16 and config.strategy == "accelerate":
        os.environ.setdefault("ACCELERATE_MIXED_PRECISION", "bf16")  # read by accelerate.Accelerator
    if critic.tf32:
        import torch

        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
    if critic.save_total_limit is not None:
        logger.info("--save_total_limit %d: accepted, not applied (checkpoints are kept)", critic.save_total_limit)
    return train(config, encode_fn=critic_encode_fn(critic))
