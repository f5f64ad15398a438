"""FSDP2 (`fully_shard`) for `--strategy fsdp`: one shard group per decoder layer, torch's AdamW, and the resumable
state as a `torch.distributed.checkpoint` of the model and optimizer plus the scheduler.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from selfrag.errors import ConfigError
from selfrag.training.config import FinetuneConfig
from selfrag.training.param_groups import param_groups
from selfrag.training.process_group import Dist, Engine

logger = logging.getLogger(__name__)


class FSDPEngine(Engine):
    def __init__(self, config: FinetuneConfig, model: Any, dist_: Dist, max_train_steps: int):
        super().__init__(config, model, dist_, max_train_steps)
        import torch
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        from transformers import get_scheduler

        kwargs: dict[str, Any] = {}
        if config.mixed_precision != "no":
            dtype = torch.bfloat16 if config.mixed_precision == "bf16" else torch.float16
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
        layer_names = set(getattr(model, "_no_split_modules", None) or ())
        layers = [m for m in model.modules() if type(m).__name__ in layer_names]
        for layer in layers:  # one shard group per decoder layer, then the rest (embeddings, head, norm)
            fully_shard(layer, **kwargs)
        fully_shard(model, **kwargs)
        self.optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.learning_rate)
        self.scheduler = get_scheduler(
            config.lr_scheduler_type,
            optimizer=self.optimizer,
            num_warmup_steps=int(max_train_steps * config.warmup_ratio),
            num_training_steps=max_train_steps,
        )
        logger.info("FSDP2: %d decoder layers sharded over %d processes", len(layers), dist_.world_size)

    def forward_backward(self, batch: dict[str, Any], boundary: bool) -> Any:
        self.model.set_requires_gradient_sync(boundary)  # reduce-scatter once per update
        loss = self.model(**batch).loss
        (loss / self.config.gradient_accumulation_steps).backward()
        if boundary:
            self.optimizer.step()
            self.optimizer.zero_grad()
            self.scheduler.step()
        return loss

    def full_state_dict(self) -> dict[str, Any] | None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(self.model, options=options)  # collective; full on rank 0
        return state if self.dist.is_main else None

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def save_state(self, path: Path) -> None:
        import torch
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(path / "fsdp"))
        if self.dist.is_main:
            torch.save(self.scheduler.state_dict(), path / "fsdp" / "scheduler.pt")

    def load_state(self, path: Path) -> None:
        import torch
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        if not (path / "fsdp" / "scheduler.pt").is_file():
            raise ConfigError(f"--resume_from_checkpoint {path}: no FSDP state in it")
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        state = {"model": model_state, "optim": optim_state}
        dcp.load(state, checkpoint_id=str(path / "fsdp"))
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        self.scheduler.load_state_dict(torch.load(path / "fsdp" / "scheduler.pt", weights_only=True))
