"""DeepSpeed ZeRO-2/3 for `--strategy deepspeed`: the config ("auto" values filled as accelerate does), ZeRO-3
`zero.Init` loading (no process holds the full model) and the engine the shared loop drives.

On CPU, DeepSpeed runs with `DS_ACCELERATOR=cpu` (set by `process_group.init_distributed` when no GPU) and torch's
AdamW (`torch_adam`), over gloo.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from selfrag.errors import ConfigError
from selfrag.training.config import FinetuneConfig
from selfrag.training.param_groups import param_groups
from selfrag.training.process_group import Dist, Engine

logger = logging.getLogger(__name__)

# The original's `stage3_no_offloading_accelerate.conf`, in our settings ("auto" values are filled from the flags
# and the model, as accelerate does). Overridden by `--deepspeed_config FILE`.
DEFAULT_DS_CONFIG: dict[str, Any] = {
    "bf16": {"enabled": "auto"},
    "fp16": {"enabled": "auto"},
    "zero_optimization": {
        "stage": "auto",
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
        "stage3_prefetch_bucket_size": "auto",
        "stage3_param_persistence_threshold": "auto",
        "stage3_max_live_parameters": 1e9,
        "stage3_max_reuse_distance": 1e9,
        "stage3_gather_16bit_weights_on_model_save": True,
    },
    "gradient_clipping": "auto",
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "steps_per_print": 1e6,
    "wall_clock_breakdown": False,
}


def _fill_ds_config(config: FinetuneConfig, hidden_size: int, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config: `--deepspeed_config` (or the default), "auto" values filled from the flags."""
    if config.deepspeed_config:
        try:
            ds = json.loads(Path(config.deepspeed_config).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"--deepspeed_config {config.deepspeed_config}: {err}") from err
    else:
        ds = json.loads(json.dumps(DEFAULT_DS_CONFIG))
    if "scheduler" in ds:
        raise ConfigError("--deepspeed_config: drop the 'scheduler' section; --lr_scheduler_type sets the schedule")
    micro, accum = config.per_device_train_batch_size, config.gradient_accumulation_steps
    auto = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "train_batch_size": micro * accum * world_size,
    }
    for key, value in auto.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
        elif ds[key] != value:
            raise ConfigError(f"--deepspeed_config sets {key}={ds[key]}, but the flags give {value}")
    for kind in ("bf16", "fp16"):
        section = ds.setdefault(kind, {})
        if section.get("enabled", "auto") == "auto":
            section["enabled"] = config.mixed_precision == kind
    zero = ds.setdefault("zero_optimization", {})
    if zero.get("stage", "auto") == "auto" or config.zero_stage is not None:
        zero["stage"] = config.zero_stage if config.zero_stage is not None else 3
    fills = {  # accelerate's rules (accelerator.py, deepspeed_config_process)
        "reduce_bucket_size": hidden_size * hidden_size,
        "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
        "stage3_param_persistence_threshold": 10 * hidden_size,
    }
    for key, value in fills.items():
        if zero.get(key) == "auto":
            zero[key] = value
    if zero["stage"] == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True  # the final save gathers the weights
    optimizer = ds.setdefault("optimizer", {"type": "AdamW", "params": {}})
    params = optimizer.setdefault("params", {})
    for key, value in (("lr", config.learning_rate), ("weight_decay", config.weight_decay)):
        if params.get(key, "auto") == "auto":
            params[key] = value
    import torch

    if not torch.cuda.is_available() and optimizer["type"].lower() in ("adam", "adamw"):
        # FusedAdam needs CUDA; the CPU build of DeepSpeed falls back to torch's AdamW with this
        params.setdefault("torch_adam", True)
    if ds.get("gradient_clipping") == "auto":
        ds["gradient_clipping"] = 0.0  # no clipping, as the accelerate and FSDP paths (and the original loop)
    left = [k for k, v in _walk(ds) if v == "auto"]
    if left:
        raise ConfigError(f"--deepspeed_config: cannot fill the 'auto' values of {left}")
    return ds


def _walk(tree: Any, prefix: str = ""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _walk(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), tree


def _hidden_size(model_name_or_path: str) -> int:
    from transformers import AutoConfig

    try:
        model_config = AutoConfig.from_pretrained(model_name_or_path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load the model config of {model_name_or_path!r}: {err}") from err
    return int(model_config.get_text_config().hidden_size)


@contextlib.contextmanager
def zero3_init(ds_config: dict[str, Any]):
    """Load models partitioned: `from_pretrained` inside this block builds the model under `deepspeed.zero.Init`
    (transformers' `HfDeepSpeedConfig`) and loads each weight into its ZeRO-3 partitions, so no process ever holds
    the full model; `resize_token_embeddings` and the mean rows of `resize_and_init_embeddings` gather the matrices
    they change. Needs an initialised process group and a stage-3 config. On exit transformers no longer sees
    ZeRO-3 (later `from_pretrained` calls, e.g. rank 0's plain LoRA copy at save time, load whole models)."""
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    if ds_config.get("zero_optimization", {}).get("stage") != 3:
        raise ConfigError("zero3_init needs a DeepSpeed config with zero_optimization.stage 3")
    hf_config = HfDeepSpeedConfig(ds_config)  # transformers keeps a weak reference: alive while this block runs
    try:
        yield
    finally:
        del hf_config
        unset_hf_deepspeed_config()


def load_model_partitioned(config: FinetuneConfig, tokenizer: Any, added: Any, ds_config: dict[str, Any]) -> Any:
    """`selfrag.training.model.load_model` under ZeRO-3 `zero.Init`: every parameter ends partitioned over the
    ranks (a collective call: every rank must make it).

    transformers builds the resized embedding matrices as ordinary tensors on every rank (a zero.Init shape of 0
    would break its modelling code); their rows are identical on all ranks once the new rows are mean-initialised
    (or drawn from the same seed), so they are partitioned right after, with `zero.Init(module=model)`."""
    from selfrag.torch_extensions import import_deepspeed
    from selfrag.training.model import load_model

    deepspeed = import_deepspeed()
    with zero3_init(ds_config):
        model = load_model(config, tokenizer, added)
        deepspeed.zero.Init(module=model, config_dict_or_path=ds_config)  # partitions what is not yet partitioned
    return model


def partition_counts(model: Any) -> dict[str, int]:
    """Parameter elements this process holds: `materialized` (ordinary tensors; 0 for a fully ZeRO-3-partitioned
    model), `partition` (its ZeRO-3 shards) and `full` (the model's size)."""
    materialized = partition = full = 0
    for param in model.parameters():
        materialized += param.numel()
        if hasattr(param, "ds_numel"):
            partition += param.ds_tensor.numel()
            full += param.ds_numel
        else:
            full += param.numel()
    return {"materialized": materialized, "partition": partition, "full": full}


class DeepSpeedEngine(Engine):
    def __init__(
        self,
        config: FinetuneConfig,
        model: Any,
        dist_: Dist,
        max_train_steps: int,
        ds_config: dict[str, Any] | None = None,
    ):
        super().__init__(config, model, dist_, max_train_steps)
        from transformers import get_scheduler

        from selfrag.torch_extensions import import_deepspeed

        self.ds_config = ds_config or _fill_ds_config(config, model.config.hidden_size, dist_.world_size)
        self.stage = self.ds_config["zero_optimization"]["stage"]

        def scheduler(optimizer: Any) -> Any:
            return get_scheduler(
                config.lr_scheduler_type,
                optimizer=optimizer,
                num_warmup_steps=int(max_train_steps * config.warmup_ratio),
                num_training_steps=max_train_steps,
            )

        self.engine, _, _, self.scheduler = import_deepspeed().initialize(
            model=model,
            model_parameters=param_groups(model, config.weight_decay),
            config=self.ds_config,
            lr_scheduler=scheduler,
        )
        logger.info("DeepSpeed ZeRO-%d engine on %d processes", self.stage, dist_.world_size)

    def forward_backward(self, batch: dict[str, Any], boundary: bool) -> Any:
        # Our boundaries, not DeepSpeed's global micro-step count: an epoch's last, partial accumulation is an update.
        self.engine.set_gradient_accumulation_boundary(boundary)
        loss = self.engine(**batch).loss
        self.engine.backward(loss)  # scaled by 1/gradient_accumulation_steps inside
        self.engine.step()  # a no-op except at accumulation boundaries (then it steps the scheduler too)
        return loss

    def full_state_dict(self) -> dict[str, Any] | None:
        if self.stage == 3:
            state = self.engine._zero3_consolidated_16bit_state_dict()  # collective; full on rank 0
        else:
            state = self.engine.module.state_dict()
        return {k: v.detach().cpu() for k, v in state.items()} if self.dist.is_main else None

    def lr(self) -> float:
        return self.engine.get_lr()[0]

    def save_state(self, path: Path) -> None:
        self.engine.save_checkpoint(str(path), tag="deepspeed")  # module, optimizer, scheduler (per-rank shards)

    def load_state(self, path: Path) -> None:
        loaded, _ = self.engine.load_checkpoint(str(path), tag="deepspeed")
        if loaded is None:
            raise ConfigError(f"--resume_from_checkpoint {path}: no DeepSpeed state in it")

    def close(self) -> None:
        """After `deepspeed.initialize`, DeepSpeed itself keeps the model: ZeRO-3 leaves the top module on
        `parameter_offload.FWD_MODULE_STACK`, and the modules (with the parameter coordinator) as keys of the
        coordinator's class-level `lru_cache`. Through the model's hooks that keeps the engine and the optimizer, and
        through all three the process groups (each ZeRO-3 parameter's `ds_process_group`, the engine's data-parallel
        group) alive until interpreter exit. Remove the hooks (`destroy`) and those references."""
        if getattr(self, "engine", None) is None:  # deepspeed.initialize failed
            return
        self.engine.destroy()
        from deepspeed.runtime.zero import parameter_offload, partitioned_param_coordinator

        ours = {id(m) for m in self.engine.module.modules()}
        stack = getattr(parameter_offload, "FWD_MODULE_STACK", None)
        if isinstance(stack, list):
            stack[:] = [m for m in stack if id(m) not in ours]
        coordinator = getattr(partitioned_param_coordinator, "PartitionedParameterCoordinator", object)
        for attr in vars(coordinator).values():  # memoised methods, maybe under DeepSpeed's instrument_w_nvtx
            for fn in (attr, *(cell.cell_contents for cell in getattr(attr, "__closure__", None) or ())):
                if callable(getattr(fn, "cache_clear", None)):
                    fn.cache_clear()  # only a cache: refilled on use
