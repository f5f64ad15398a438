"""What the launcher asked for: the strategy a run takes when `finetune.py` is started by `accelerate launch`.

The original trains with `accelerate launch --use_deepspeed --deepspeed_config_file ds.conf finetune.py ...`
(docs/original_selfrag.md §7.5). accelerate's launcher is kept, but its DeepSpeed and FSDP integrations are not used
as engines: on CPU they do not distribute (accelerate counts one process, so DeepSpeed asserts
`train_batch_size 2 != 1 * 2 * 2` and every rank acts as the main one), and with ZeRO-3 a scheduler cannot be built
on the optimizer it returns. Instead the run goes to the same direct engines as `torchrun ... --strategy
deepspeed|fsdp` (`selfrag.training.distributed`), configured from what the launcher put in the environment:

* `accelerate launch --use_deepspeed [--deepspeed_config_file F] [--zero_stage N]` (`ACCELERATE_USE_DEEPSPEED`,
  `ACCELERATE_DEEPSPEED_CONFIG_FILE`, `ACCELERATE_DEEPSPEED_ZERO_STAGE`): `--strategy deepspeed --deepspeed_config F`
  (or `--zero_stage N`);
* `accelerate launch --use_fsdp` (`ACCELERATE_USE_FSDP`): `--strategy fsdp`;
* either, with `--mixed_precision bf16|fp16` (`ACCELERATE_MIXED_PRECISION`): `--mixed_precision bf16|fp16`;
* `accelerate launch --num_processes N` (DDP) on a machine without CUDA (`WORLD_SIZE` > 1): accelerate itself, with
  `ACCELERATE_USE_CPU=1` (DDP over gloo).

Flags given to `finetune.py` itself (`--strategy deepspeed|fsdp`, `--deepspeed_config`, `--zero_stage`,
`--mixed_precision`) win over the launcher's.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping

from selfrag.errors import ConfigError
from selfrag.training.config import FinetuneConfig

logger = logging.getLogger(__name__)


def _true(env: Mapping[str, str], key: str) -> bool:
    return env.get(key, "").strip().lower() in ("1", "true", "yes")


def resolve_launch(config: FinetuneConfig, env: Mapping[str, str] | None = None) -> FinetuneConfig:
    """`config` with the strategy the launcher asked for (see the module docstring); unchanged when `--strategy`
    is not the default `accelerate` or no accelerate DeepSpeed / FSDP launch is seen."""
    env = os.environ if env is None else env
    if config.strategy != "accelerate":
        return config
    deepspeed, fsdp = _true(env, "ACCELERATE_USE_DEEPSPEED"), _true(env, "ACCELERATE_USE_FSDP")
    if not (deepspeed or fsdp):
        return config
    changes: dict[str, object] = {"strategy": "deepspeed" if deepspeed else "fsdp"}
    precision = env.get("ACCELERATE_MIXED_PRECISION", "no").strip().lower()
    if precision not in ("no", "bf16", "fp16"):
        raise ConfigError(f"accelerate launch --mixed_precision {precision}: only no, bf16 and fp16 are supported")
    changes["mixed_precision"] = precision
    if deepspeed:
        if env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"):
            changes["deepspeed_config"] = env["ACCELERATE_DEEPSPEED_CONFIG_FILE"]
        if env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE"):
            stage = int(env["ACCELERATE_DEEPSPEED_ZERO_STAGE"])
            if stage not in (2, 3):
                raise ConfigError(f"accelerate launch --zero_stage {stage}: only ZeRO stages 2 and 3 are supported")
            changes["zero_stage"] = stage
    resolved = dataclasses.replace(config, **changes)
    logger.info(
        "accelerate launch with %s: training with %s called directly (%s)",
        "DeepSpeed" if deepspeed else "FSDP",
        "DeepSpeed" if deepspeed else "FSDP2",
        ", ".join(f"--{k} {v}" for k, v in changes.items()),
    )
    return resolved


def use_cpu_ddp() -> bool:
    """Under a multi-process launch on a machine without CUDA, ask accelerate for DDP over gloo
    (`ACCELERATE_USE_CPU=1`): without it `accelerate launch --num_processes N` runs N independent copies, each
    its own main process. Returns whether it was set."""
    import torch

    env = os.environ
    if int(env.get("WORLD_SIZE", "1")) <= 1 or torch.cuda.is_available() or _true(env, "ACCELERATE_USE_CPU"):
        return False
    os.environ["ACCELERATE_USE_CPU"] = "1"
    return True
