"""Multi-process training without accelerate: DeepSpeed ZeRO-2/3 (`deepspeed.initialize`) and FSDP2 (`fully_shard`).

`--strategy deepspeed|fsdp` route `selfrag.training.loop.train` here. The same code runs

* on CPU, under `torchrun --nproc_per_node N` (gloo; DeepSpeed with `DS_ACCELERATOR=cpu`, set here when no GPU), where
  accelerate's DeepSpeed / FSDP modes are broken or silently not distributed (shared `machine_notes.md` §3), and
* on GPUs, under `torchrun` or the `deepspeed` launcher (nccl), one process per GPU.

Run without a launcher, it trains in one process (world size 1). This module holds the loop and the checkpoints,
shared by both strategies; the strategy-specific parts live in `deepspeed_engine.py` (config, ZeRO-3 `zero.Init`
loading, engine) and `fsdp.py`, the process group and the `Engine` interface in `process_group.py`, and the
trackers in `trackers.py`. The public names of those modules are re-exported here.

Data: a `DistributedSampler` (shuffled with `seed + epoch`, padded so every rank gets the same number of batches).
Loss: as in `loop.py`, the mean over the targets of a micro-batch, averaged over the micro-batches of an update; the
logged loss is also averaged over the ranks.

Outputs (rank 0 writes them, once): the final HF model (full state dict gathered from the shards) and tokenizer;
`step_N/` / `epoch_N/` checkpoints holding the same plus the resumable state (DeepSpeed's own checkpoint, or a
`torch.distributed.checkpoint` of the FSDP2 model and optimizer, and the scheduler), every rank's RNG state and
`trainer_state.json`, for `--resume_from_checkpoint`; `train_summary.json` (world size, per-rank micro-batches /
examples / tokens, update losses, tokens/s). `--with_tracking`: tensorboard or wandb on rank 0. `--use_lora`: the
adapters in `adapter/`, the model merged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from selfrag.data import write_json_atomic
from selfrag.errors import ConfigError
from selfrag.training.checkpoint import TRAINER_STATE, resolve_checkpoint
from selfrag.training.collator import PaddingCollator
from selfrag.training.config import FinetuneConfig
from selfrag.training.deepspeed_engine import (
    DEFAULT_DS_CONFIG,
    DeepSpeedEngine,
    _fill_ds_config,
    _hidden_size,
    load_model_partitioned,
    partition_counts,
    zero3_init,
)
from selfrag.training.encode import encode_file
from selfrag.training.fsdp import FSDPEngine
from selfrag.training.process_group import (
    Dist,
    Engine,
    init_distributed,
    setup_rank_logging,
    shutdown_distributed,
)
from selfrag.training.result import TrainResult
from selfrag.training.trackers import Trackers

__all__ = [
    "DEFAULT_DS_CONFIG",
    "ENV_KEYS",
    "SUMMARY",
    "TRAINER_STATE",
    "DeepSpeedEngine",
    "Dist",
    "Engine",
    "FSDPEngine",
    "Trackers",
    "_fill_ds_config",
    "init_distributed",
    "load_model_partitioned",
    "partition_counts",
    "setup_rank_logging",
    "train_distributed",
    "zero3_init",
]

logger = logging.getLogger(__name__)

SUMMARY = "train_summary.json"


def _save_model(
    engine: Engine, tokenizer: Any, path: Path, extra: dict[str, Any] | None = None, lora: Any = None
) -> None:
    """Gather the weights (all ranks) and write an HF model folder (rank 0 only). With `extra` (a checkpoint), also
    the resumable state, the RNG state of every rank and, last, `trainer_state.json` = `extra`. With `lora` (a
    function building an unwrapped LoRA model), the adapters go to `adapter/` and the merged model to `path`."""
    import torch
    import torch.distributed as dist

    state = engine.full_state_dict()
    if engine.dist.is_main:
        path.mkdir(parents=True, exist_ok=True)
        if lora is None:
            engine.model.save_pretrained(path, state_dict=state)  # the PreTrainedModel under the wrapper
        else:  # a plain copy on rank 0 gets the gathered weights, then saves its adapter and merges
            plain = lora()
            plain.load_state_dict({k: v.to(next(plain.parameters()).dtype) for k, v in state.items()})
            plain.save_pretrained(path / "adapter", save_embedding_layers=True)
            plain.merge_and_unload().save_pretrained(path)
        tokenizer.save_pretrained(path)
    dist.barrier()
    if extra is not None:
        engine.save_state(path)
        torch.save(torch.get_rng_state(), path / f"rng_state_{engine.dist.rank}.pt")
        dist.barrier()
        if engine.dist.is_main:
            write_json_atomic(path / TRAINER_STATE, extra)  # written last: marks the checkpoint complete
    if engine.dist.is_main:
        logger.info("rank %d: saved the model to %s", engine.dist.rank, path)
    dist.barrier()


ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "DS_ACCELERATOR")


def train_distributed(config: FinetuneConfig, encode_fn: Any = None) -> Any:
    """`train(config)` for `--strategy deepspeed|fsdp`; returns a `selfrag.training.result.TrainResult`.

    A process group (and launcher variables) this call had to create are removed again when it returns or fails."""
    import torch.distributed as dist

    created = not dist.is_initialized()
    saved_env = {key: os.environ.get(key) for key in ENV_KEYS}
    clean = False
    try:
        result = _train(config, encode_fn, init_distributed(config.strategy))
        clean = True
        return result
    finally:
        try:
            shutdown_distributed(destroy=created, clean=clean)  # barrier, engines closed, groups destroyed and joined
        finally:
            if created:
                for key, value in saved_env.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value


def _train(config: FinetuneConfig, encode_fn: Any, d: Dist) -> Any:
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader, DistributedSampler
    from tqdm.auto import tqdm

    from selfrag.training.model import load_model, load_tokenizer

    if config.seed is not None:
        from transformers import set_seed

        set_seed(config.seed)
    output_dir = Path(config.output_dir)
    trackers = Trackers(config, d, output_dir)
    if d.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(output_dir / "finetune_config.json", dataclasses.asdict(config))

    tokenizer, added = load_tokenizer(config)
    data, stats = (encode_fn or encode_file)(config, tokenizer)  # every rank encodes the same list (cheap)
    ds_config = None
    if config.strategy == "deepspeed":
        ds_config = _fill_ds_config(config, _hidden_size(config.model_name_or_path), d.world_size)
    # ZeRO-3 full fine-tuning: build and load the model partitioned (zero.Init). Under LoRA the model is still
    # loaded whole on each process and partitioned by deepspeed.initialize: peft's ZeRO-3 initialisation of the
    # trainable token rows is CUDA-only (peft 0.18), and the frozen base is what LoRA users usually quantise anyway.
    zero_init = ds_config is not None and ds_config["zero_optimization"]["stage"] == 3 and not config.use_lora
    if zero_init:
        model = load_model_partitioned(config, tokenizer, added, ds_config)  # type: ignore[arg-type]
    else:
        model = load_model(config, tokenizer, added)
    at_load = partition_counts(model)
    if zero_init:
        logger.info(
            "ZeRO-3 zero.Init: rank %d holds %d of the model's %d parameter elements (%d materialized)",
            d.rank,
            at_load["partition"],
            at_load["full"],
            at_load["materialized"],
        )
    lora = None
    if config.use_lora:
        from selfrag.training.model import apply_lora

        token_ids = added.vocab.all_ids if added.vocab else ()
        model = apply_lora(model, config, token_ids)

        def lora() -> Any:
            return apply_lora(load_model(config, tokenizer, added), config, token_ids)

    model = model.to(d.device)
    sampler = DistributedSampler(data, num_replicas=d.world_size, rank=d.rank, shuffle=True, seed=config.seed or 0)
    loader = DataLoader(
        data,
        batch_size=config.per_device_train_batch_size,
        sampler=sampler,
        collate_fn=PaddingCollator(pad_token_id=tokenizer.pad_token_id),
    )
    accum = config.gradient_accumulation_steps
    updates_per_epoch = math.ceil(len(loader) / accum)
    max_train_steps = config.max_train_steps or config.num_train_epochs * updates_per_epoch
    if config.strategy == "deepspeed":
        engine: Engine = DeepSpeedEngine(config, model, d, max_train_steps, ds_config)
    else:
        engine = FSDPEngine(config, model, d, max_train_steps)
    logger.info(
        "training (%s): %d examples, %d updates of %d x %d x %d examples (%d per epoch)",
        config.strategy,
        len(data),
        max_train_steps,
        config.per_device_train_batch_size,
        accum,
        d.world_size,
        updates_per_epoch,
    )
    position = {"completed_steps": 0, "epoch": 0, "batches_in_epoch": 0}
    rng_state = None  # set again right before the first resumed forward pass (see loop._Run.resume_rng_state)
    path = resolve_checkpoint(config) if config.resume_from_checkpoint else None
    if path is not None:
        position = json.loads((path / TRAINER_STATE).read_text())
        if position.get("strategy") != config.strategy or position.get("world_size") != d.world_size:
            raise ConfigError(
                f"--resume_from_checkpoint {path}: saved by --strategy {position.get('strategy')} on "
                f"{position.get('world_size')} processes; this run is {config.strategy} on {d.world_size}"
            )
        engine.load_state(path)
        rng = path / f"rng_state_{d.rank}.pt"
        if rng.is_file():
            torch.set_rng_state(torch.load(rng, weights_only=True))
            if 0 < position["batches_in_epoch"] < len(loader):  # inside an epoch: set again after the skipping
                rng_state = torch.get_rng_state()
        logger.info("resumed from %s: %s", path, position)
    every = int(config.checkpointing_steps) if (config.checkpointing_steps or "").isdigit() else None
    counts = {"micro_batches": 0, "examples": 0, "tokens": 0, "targets": 0}
    losses: list[float] = []
    window: list[Any] = []
    completed, skip = position["completed_steps"], position["batches_in_epoch"]
    t_start, t_log, tokens_log = time.perf_counter(), time.perf_counter(), 0
    progress = tqdm(total=max_train_steps, initial=completed, disable=not d.is_main)
    model.train()
    for epoch in range(position["epoch"], math.ceil(max_train_steps / updates_per_epoch)):
        if completed >= max_train_steps:
            break
        sampler.set_epoch(epoch)  # the order of epoch e depends on seed + e only
        if skip >= len(loader):  # resumed after this epoch's last batch: no iterator (it would draw from the RNG)
            skip = 0
            continue
        for index, batch in enumerate(loader):
            if index < skip:  # resuming inside an epoch: the batches already trained on
                continue
            if rng_state is not None:
                torch.set_rng_state(rng_state)
                rng_state = None
            boundary = (index + 1) % accum == 0 or index + 1 == len(loader)
            batch = {k: v.to(d.device) for k, v in batch.items()}
            loss = engine.forward_backward(batch, boundary)
            window.append(loss.detach().float())
            n_tokens = int(batch["attention_mask"].sum())
            counts["micro_batches"] += 1
            counts["examples"] += int(batch["input_ids"].shape[0])
            counts["tokens"] += n_tokens
            counts["targets"] += int((batch["labels"] != -100).sum())
            tokens_log += n_tokens
            if not boundary:
                continue
            completed += 1
            update_loss = torch.stack(window).mean().to(d.device)
            window = []
            dist.all_reduce(update_loss, op=dist.ReduceOp.SUM)
            losses.append(update_loss.item() / d.world_size)
            progress.update(1)
            progress.set_postfix(loss=f"{losses[-1]:.4f}")
            if config.logging_steps and completed % config.logging_steps == 0:
                seconds = max(time.perf_counter() - t_log, 1e-9)
                metrics = {
                    "train_loss": sum(losses[-config.logging_steps :]) / config.logging_steps,
                    "learning_rate": engine.lr(),
                    "tokens_per_second": tokens_log * d.world_size / seconds,  # estimated from this rank's tokens
                }
                logger.info(
                    "step %d/%d | loss %.4f | lr %.3g | %.0f tokens/s",
                    completed,
                    max_train_steps,
                    metrics["train_loss"],
                    metrics["learning_rate"],
                    metrics["tokens_per_second"],
                )
                trackers.log(metrics, completed)
                t_log, tokens_log = time.perf_counter(), 0
            if every and completed % every == 0:
                state = _state(config, d, completed, epoch, index + 1)
                _save_model(engine, tokenizer, output_dir / f"step_{completed}", state, lora)
            if completed >= max_train_steps:
                break
        if config.checkpointing_steps == "epoch":
            state = _state(config, d, completed, epoch + 1, 0)
            _save_model(engine, tokenizer, output_dir / f"epoch_{epoch}", state, lora)
        skip = 0
        if completed >= max_train_steps:
            break
    progress.close()
    elapsed = time.perf_counter() - t_start
    per_rank: list[Any] = [None] * d.world_size
    dist.all_gather_object(per_rank, {"rank": d.rank, **counts, "params_at_load": at_load})
    tokens_per_second = sum(r["tokens"] for r in per_rank) / max(elapsed, 1e-9)
    logger.info("trained %d updates in %.1f s (%.0f tokens/s)", completed, elapsed, tokens_per_second)
    _save_model(engine, tokenizer, output_dir, lora=lora)
    trackers.close()
    if d.is_main:
        summary = {
            "strategy": config.strategy,
            "world_size": d.world_size,
            "backend": d.backend,
            "completed_steps": completed,
            "losses": losses,
            "tokens_per_second": tokens_per_second,
            "ranks": per_rank,
        }
        if config.strategy == "deepspeed":
            summary["zero_stage"] = engine.stage  # type: ignore[attr-defined]
            summary["zero_init"] = zero_init
        write_json_atomic(output_dir / SUMMARY, summary)
    return TrainResult(output_dir, completed, losses, stats, tokens_per_second)


def _state(config: FinetuneConfig, d: Dist, completed: int, epoch: int, batches_in_epoch: int) -> dict[str, Any]:
    return {
        "completed_steps": completed,
        "epoch": epoch,
        "batches_in_epoch": batches_in_epoch,
        "strategy": config.strategy,
        "world_size": d.world_size,
    }
