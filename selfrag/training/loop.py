"""The generator training loop: plain PyTorch (AdamW, `transformers.get_scheduler`, gradient accumulation) driven
through `accelerate`, so the same code runs in one CPU process, under DDP, and on GPUs with
`accelerate launch --use_deepspeed` (the original's setup, docs/original_selfrag.md §7.3-7.5).

`train(config)` is what `retrieval_lm/finetune.py` calls. Outputs in `--output_dir`:
* the final model (`config.json`, `model.safetensors`) and tokenizer with the reflection tokens, loadable by
  `AutoModelForCausalLM` / `AutoTokenizer` and by vllm; under LoRA the adapters are merged into it and also kept,
  unmerged, in `adapter/`;
* `step_N/` or `epoch_N/` (`--checkpointing_steps`): accelerate states (weights, optimizer, scheduler, RNG) plus
  `trainer_state.json`, for `--resume_from_checkpoint`; without LoRA they also hold `config.json` and the
  tokenizer, so HF loads them as models too;
* `finetune_config.json`: the resolved flags.

Loss: the model's mean cross-entropy over the targets of each micro-batch, averaged over the micro-batches of an
update, as the original (so each micro-batch weighs the same whatever its number of targets).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfrag.data import write_json_atomic
from selfrag.errors import ConfigError
from selfrag.training.checkpoint import TRAINER_STATE, resolve_checkpoint
from selfrag.training.collator import PaddingCollator
from selfrag.training.config import FinetuneConfig
from selfrag.training.encode import EncodeFn, encode_file
from selfrag.training.launch import resolve_launch, use_cpu_ddp
from selfrag.training.model import apply_lora, load_model, load_tokenizer
from selfrag.training.param_groups import param_groups
from selfrag.training.result import TrainResult

logger = logging.getLogger(__name__)


def _save_checkpoint(accelerator: Any, model: Any, tokenizer: Any, path: Path, state: dict[str, int], lora: bool):
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        write_json_atomic(path / TRAINER_STATE, state)
        tokenizer.save_pretrained(path)
        if not lora:  # the weights accelerate wrote are a plain HF state dict: make the folder loadable
            accelerator.unwrap_model(model).config.save_pretrained(path)
    logger.info("saved checkpoint %s", path)


def save_final(accelerator: Any, model: Any, tokenizer: Any, output_dir: Path, lora: bool) -> None:
    """Save the model (LoRA merged; adapters in `adapter/`) and the tokenizer in the HF layout vllm loads."""
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    if lora:
        if accelerator.is_main_process:  # embeddings included: the base model lacks the added rows
            unwrapped.save_pretrained(output_dir / "adapter", save_embedding_layers=True)
        unwrapped = unwrapped.merge_and_unload()
        state_dict = unwrapped.state_dict()
    else:
        state_dict = accelerator.get_state_dict(model)
    unwrapped.save_pretrained(
        output_dir, is_main_process=accelerator.is_main_process, save_function=accelerator.save, state_dict=state_dict
    )
    if accelerator.is_main_process:
        tokenizer.save_pretrained(output_dir)
    logger.info("saved the model and tokenizer to %s", output_dir)


def _make_accelerator(config: FinetuneConfig) -> Any:
    from accelerate import Accelerator, DataLoaderConfiguration

    if use_cpu_ddp():
        logger.info("%s processes, no CUDA: accelerate DDP over gloo (ACCELERATE_USE_CPU=1)", os.environ["WORLD_SIZE"])

    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=config.report_to if config.with_tracking else None,
        project_dir=config.output_dir,
        # per-epoch shuffles drawn from `seed + epoch`, so a resumed run sees the same order
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
    )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != world:  # e.g. a launcher accelerate does not recognise: every rank would be main
        raise ConfigError(
            f"the launcher started {world} processes but accelerate sees {accelerator.num_processes} "
            f"({accelerator.distributed_type}); use --strategy deepspeed or fsdp under torchrun"
        )
    if config.with_tracking and config.report_to != "all" and not accelerator.log_with:
        raise ConfigError(
            f"--report_to {config.report_to}: tracker not installed (e.g. pip install tensorboard), "
            "or drop --with_tracking"
        )
    return accelerator


def train(config: FinetuneConfig, encode_fn: EncodeFn | None = None) -> TrainResult:
    """Fine-tune the generator as configured; see the module docstring for the outputs.

    `encode_fn(config, tokenizer) -> (examples, stats)` replaces `encode_file` (the critic's encoding uses this).
    `--strategy deepspeed|fsdp`, and `accelerate launch --use_deepspeed|--use_fsdp` (`selfrag.training.launch`), run
    `selfrag.training.distributed.train_distributed` instead.
    """
    config = resolve_launch(config)
    if config.strategy != "accelerate":
        from selfrag.training.distributed import train_distributed

        return train_distributed(config, encode_fn)
    import torch
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from transformers import get_scheduler

    accelerator = _make_accelerator(config)
    if config.seed is not None:
        set_seed(config.seed)
    output_dir = Path(config.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(output_dir / "finetune_config.json", dataclasses.asdict(config))
    logger.info("config: %s", json.dumps(dataclasses.asdict(config), sort_keys=True))

    tokenizer, added = load_tokenizer(config)
    with accelerator.main_process_first():
        data, stats = (encode_fn or encode_file)(config, tokenizer)
    model = load_model(config, tokenizer, added)
    if config.use_lora:
        model = apply_lora(model, config, added.vocab.all_ids if added.vocab else ())

    collate = PaddingCollator(pad_token_id=tokenizer.pad_token_id)
    dataloader = DataLoader(data, batch_size=config.per_device_train_batch_size, shuffle=True, collate_fn=collate)
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.learning_rate)
    model, optimizer, dataloader = accelerator.prepare(model, optimizer, dataloader)
    # Updates are counted after `prepare`, which splits the batches across processes.
    updates_per_epoch = math.ceil(len(dataloader) / config.gradient_accumulation_steps)
    max_train_steps = config.max_train_steps or config.num_train_epochs * updates_per_epoch
    # Stepped by hand once per update (not `prepare`d: accelerate would step it once per process).
    scheduler = get_scheduler(
        config.lr_scheduler_type,
        optimizer=getattr(optimizer, "optimizer", optimizer),
        num_warmup_steps=int(max_train_steps * config.warmup_ratio),
        num_training_steps=max_train_steps,
    )
    accelerator.register_for_checkpointing(scheduler)
    if config.with_tracking:
        hparams = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in vars(config).items()}
        accelerator.init_trackers("selfrag_finetune", config=hparams)

    position = {"completed_steps": 0, "epoch": 0, "batches_in_epoch": 0}
    rng_state = None
    path = resolve_checkpoint(config) if config.resume_from_checkpoint else None
    if path is not None:
        accelerator.load_state(str(path))  # restores the RNG states too
        position = json.loads((path / TRAINER_STATE).read_text())
        if 0 < position["batches_in_epoch"] < len(dataloader):  # stopped inside an epoch
            rng_state = torch.get_rng_state()
        logger.info("resumed from %s: %s", path, position)
    logger.info(
        "training: %d examples, %d updates of %d x %d x %d examples (%d per epoch)",
        len(data),
        max_train_steps,
        config.per_device_train_batch_size,
        config.gradient_accumulation_steps,
        accelerator.num_processes,
        updates_per_epoch,
    )
    run = _Run(accelerator, model, optimizer, scheduler, tokenizer, config, output_dir, max_train_steps)
    run.resume_rng_state = rng_state
    losses, tokens_per_second = run.fit(
        dataloader, updates_per_epoch, position["completed_steps"], position["epoch"], position["batches_in_epoch"]
    )
    save_final(accelerator, model, tokenizer, output_dir, config.use_lora)
    if config.with_tracking:
        accelerator.end_training()
    return TrainResult(output_dir, run.completed_steps, losses, stats, tokens_per_second)


@dataclass
class _Meter:
    """Sums over micro-batches since the last log line."""

    loss: float = 0.0
    micro: int = 0
    tokens: int = 0
    targets: int = 0
    start: float = field(default_factory=time.perf_counter)


@dataclass
class _Run:
    """The update loop and its bookkeeping (progress bar, logging, checkpoints) for one `train` call."""

    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any
    tokenizer: Any
    config: FinetuneConfig
    output_dir: Path
    max_train_steps: int
    completed_steps: int = 0
    # The CPU RNG state of a checkpoint taken inside an epoch, set again right before the first resumed forward pass:
    # creating the DataLoader iterator (which the resumed run does again to skip the trained batches) draws from the
    # RNG (its base seed); without this, dropout (e.g. LoRA's) would use other masks than the uninterrupted run.
    resume_rng_state: Any = None

    def fit(
        self, dataloader: Any, updates_per_epoch: int, completed_steps: int, start_epoch: int, batches_in_epoch: int
    ) -> tuple[list[float], float]:
        """Train from (`start_epoch`, `batches_in_epoch`) to `max_train_steps`; return update losses, tokens/s."""
        import torch
        from tqdm.auto import tqdm

        acc, config = self.accelerator, self.config
        self.completed_steps = completed_steps
        every = int(config.checkpointing_steps) if (config.checkpointing_steps or "").isdigit() else None
        progress = tqdm(total=self.max_train_steps, initial=completed_steps, disable=not acc.is_local_main_process)
        losses: list[float] = []
        meter, update_loss, all_tokens = _Meter(), [], 0
        t_start = time.perf_counter()
        self.model.train()
        for epoch in range(start_epoch, math.ceil(self.max_train_steps / updates_per_epoch)):
            if self.completed_steps >= self.max_train_steps:
                break
            dataloader.set_epoch(epoch)  # the shuffle of epoch e is drawn from seed + e
            if batches_in_epoch >= len(dataloader):  # resumed after this epoch's last batch: no iterator (no RNG draw)
                batches_in_epoch = 0
                continue
            batches = acc.skip_first_batches(dataloader, batches_in_epoch) if batches_in_epoch else dataloader
            for batch in batches:
                if self.resume_rng_state is not None:
                    torch.set_rng_state(self.resume_rng_state)
                    self.resume_rng_state = None
                with acc.accumulate(self.model):
                    loss = self.model(**batch).loss
                    acc.backward(loss)
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                batches_in_epoch += 1
                update_loss.append(loss.detach().float())
                n_tokens = int(batch["attention_mask"].sum())
                all_tokens += n_tokens
                meter.micro, meter.tokens = meter.micro + 1, meter.tokens + n_tokens
                meter.targets += int((batch["labels"] != -100).sum())
                if not acc.sync_gradients:
                    continue
                self.scheduler.step()
                self.completed_steps += 1
                losses.append(torch.stack(update_loss).mean().item())
                meter.loss += sum(t.item() for t in update_loss)
                update_loss = []
                progress.update(1)
                progress.set_postfix(loss=f"{losses[-1]:.4f}")
                if config.logging_steps and self.completed_steps % config.logging_steps == 0:
                    self._log(meter)
                    meter = _Meter()
                if every and self.completed_steps % every == 0:
                    self._checkpoint(f"step_{self.completed_steps}", epoch, batches_in_epoch)
                if self.completed_steps >= self.max_train_steps:
                    break
            if config.checkpointing_steps == "epoch":
                self._checkpoint(f"epoch_{epoch}", epoch + 1, 0)
            batches_in_epoch = 0
        progress.close()
        elapsed = time.perf_counter() - t_start
        tokens_per_second = all_tokens * acc.num_processes / max(elapsed, 1e-9)
        logger.info("trained %d updates in %.1f s (%.0f tokens/s)", self.completed_steps, elapsed, tokens_per_second)
        return losses, tokens_per_second

    def _checkpoint(self, name: str, epoch: int, batches_in_epoch: int) -> None:
        state = {"completed_steps": self.completed_steps, "epoch": epoch, "batches_in_epoch": batches_in_epoch}
        _save_checkpoint(
            self.accelerator, self.model, self.tokenizer, self.output_dir / name, state, self.config.use_lora
        )

    def _log(self, meter: _Meter) -> None:
        import torch

        acc = self.accelerator
        local = torch.tensor([meter.loss, meter.micro, meter.tokens, meter.targets], dtype=torch.float64)
        loss_sum, micro, tokens, targets = acc.reduce(local.to(acc.device), reduction="sum").tolist()
        seconds = max(time.perf_counter() - meter.start, 1e-9)
        lr = self.scheduler.get_last_lr()[0]
        metrics = {
            "train_loss": loss_sum / max(micro, 1),
            "learning_rate": lr,
            "tokens_per_second": tokens / seconds,
            "target_tokens_per_second": targets / seconds,
        }
        logger.info(
            "step %d/%d | loss %.4f | lr %.3g | %.0f tokens/s (%.0f targets/s)",
            self.completed_steps,
            self.max_train_steps,
            metrics["train_loss"],
            lr,
            metrics["tokens_per_second"],
            metrics["target_tokens_per_second"],
        )
        if acc.trackers:
            acc.log(metrics, step=self.completed_steps)
