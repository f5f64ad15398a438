"""Multi-process training without accelerate: DeepSpeed ZeRO-2/3 (`deepspeed.initialize`) and FSDP2 (`fully_shard`).

`--strategy deepspeed|fsdp` route `selfrag.training.loop.train` here. The same code runs

* on CPU, under `torchrun --nproc_per_node N` (gloo; DeepSpeed with `DS_ACCELERATOR=cpu`, set here when no GPU), where
  accelerate's DeepSpeed / FSDP modes are broken or silently not distributed (shared `machine_notes.md` §3), and
* on GPUs, under `torchrun` or the `deepspeed` launcher (nccl), one process per GPU.

Run without a launcher, it trains in one process (world size 1).

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

import contextlib
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
from selfrag.training.collator import PaddingCollator
from selfrag.training.config import FinetuneConfig

logger = logging.getLogger(__name__)

SUMMARY = "train_summary.json"
TRAINER_STATE = "trainer_state.json"

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


def setup_rank_logging() -> None:
    """Script logging under a launcher: rank 0 at INFO, the others at WARNING (`SELFRAG_LOG_ALL_RANKS=1`: all at
    INFO); with several processes each line names its rank."""
    from selfrag.cli import setup_logging

    rank = int(os.environ.get("RANK", "0"))
    all_ranks = os.environ.get("SELFRAG_LOG_ALL_RANKS", "") not in ("", "0")
    setup_logging(logging.INFO if rank == 0 or all_ranks else logging.WARNING)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        fmt = f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s"
        for handler in logging.getLogger().handlers:
            handler.setFormatter(logging.Formatter(fmt))


@dataclasses.dataclass
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: Any
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_distributed(strategy: str) -> Dist:
    """Join (or, without a launcher, create) the process group: nccl on GPUs, gloo on CPU."""
    import torch
    import torch.distributed as dist

    if "RANK" not in os.environ:  # plain `python finetune.py`: a group of one
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    cuda = torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if strategy == "deepspeed":
            if not cuda:
                os.environ.setdefault("DS_ACCELERATOR", "cpu")
            import deepspeed

            deepspeed.init_distributed(dist_backend=backend)
        else:
            dist.init_process_group(backend=backend)
    return Dist(rank, world, local, device, backend)


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
    import deepspeed

    from selfrag.training.model import load_model

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


class _Engine:
    """The strategy-specific parts: wrap the model, run one micro-batch, gather the full weights."""

    def __init__(self, config: FinetuneConfig, model: Any, dist_: Dist, max_train_steps: int):
        self.config, self.dist, self.model = config, dist_, model
        self.micro = 0

    def forward_backward(self, batch: dict[str, Any], boundary: bool) -> Any:
        raise NotImplementedError

    def full_state_dict(self) -> dict[str, Any] | None:
        """The full, unsharded weights on rank 0 (None elsewhere); a collective call."""
        raise NotImplementedError

    def lr(self) -> float:
        raise NotImplementedError

    def save_state(self, path: Path) -> None:
        """Write the resumable state (sharded weights, optimizer, scheduler) under `path`; a collective call."""
        raise NotImplementedError

    def load_state(self, path: Path) -> None:
        raise NotImplementedError


class _DeepSpeedEngine(_Engine):
    def __init__(
        self,
        config: FinetuneConfig,
        model: Any,
        dist_: Dist,
        max_train_steps: int,
        ds_config: dict[str, Any] | None = None,
    ):
        super().__init__(config, model, dist_, max_train_steps)
        import deepspeed
        from transformers import get_scheduler

        from selfrag.training.loop import _param_groups

        self.ds_config = ds_config or _fill_ds_config(config, model.config.hidden_size, dist_.world_size)
        self.stage = self.ds_config["zero_optimization"]["stage"]

        def scheduler(optimizer: Any) -> Any:
            return get_scheduler(
                config.lr_scheduler_type,
                optimizer=optimizer,
                num_warmup_steps=int(max_train_steps * config.warmup_ratio),
                num_training_steps=max_train_steps,
            )

        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model,
            model_parameters=_param_groups(model, config.weight_decay),
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


class _FSDPEngine(_Engine):
    def __init__(self, config: FinetuneConfig, model: Any, dist_: Dist, max_train_steps: int):
        super().__init__(config, model, dist_, max_train_steps)
        import torch
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        from transformers import get_scheduler

        from selfrag.training.loop import _param_groups

        kwargs: dict[str, Any] = {}
        if config.mixed_precision != "no":
            dtype = torch.bfloat16 if config.mixed_precision == "bf16" else torch.float16
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
        layer_names = set(getattr(model, "_no_split_modules", None) or ())
        layers = [m for m in model.modules() if type(m).__name__ in layer_names]
        for layer in layers:  # one shard group per decoder layer, then the rest (embeddings, head, norm)
            fully_shard(layer, **kwargs)
        fully_shard(model, **kwargs)
        self.optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.learning_rate)
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


class _Trackers:
    """`--with_tracking --report_to tensorboard|wandb|all` for the direct strategies: rank 0 logs, every rank checks
    the tracker is installed (so all fail alike). `all` takes whichever of the two is installed."""

    KNOWN = ("tensorboard", "wandb")

    def __init__(self, config: FinetuneConfig, d: Dist, output_dir: Path):
        self.writers: list[tuple[str, Any]] = []
        if not config.with_tracking:
            return
        names = self.KNOWN if config.report_to == "all" else tuple(n.strip() for n in config.report_to.split(","))
        unknown = sorted(set(names) - set(self.KNOWN))
        if unknown:
            raise ConfigError(
                f"--report_to {config.report_to}: with --strategy {config.strategy} only tensorboard, wandb or all"
            )
        available = []
        for name in names:
            module = "torch.utils.tensorboard" if name == "tensorboard" else "wandb"
            try:
                __import__(module)
                available.append(name)
            except ImportError:
                if config.report_to != "all":
                    raise ConfigError(
                        f"--report_to {name}: tracker not installed (pip install {name}), or drop --with_tracking"
                    ) from None
        if not available:
            logger.warning("--with_tracking --report_to all: neither tensorboard nor wandb is installed; not tracking")
        if not d.is_main:
            return
        hparams = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in vars(config).items()}
        for name in available:
            if name == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(output_dir / "selfrag_finetune"))
                writer.add_text("config", json.dumps(hparams, sort_keys=True))
                self.writers.append((name, writer))
            else:
                import wandb

                self.writers.append((name, wandb.init(project="selfrag_finetune", config=hparams)))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for name, writer in self.writers:
            if name == "tensorboard":
                for key, value in metrics.items():
                    writer.add_scalar(key, value, step)
            else:
                writer.log(metrics, step=step)

    def close(self) -> None:
        for name, writer in self.writers:
            (writer.close if name == "tensorboard" else writer.finish)()


def _save_model(
    engine: _Engine, tokenizer: Any, path: Path, extra: dict[str, Any] | None = None, lora: Any = None
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
    """`train(config)` for `--strategy deepspeed|fsdp`; returns a `selfrag.training.loop.TrainResult`.

    A process group (and launcher variables) this call had to create are removed again when it returns or fails."""
    import torch.distributed as dist

    created = not dist.is_initialized()
    saved_env = {key: os.environ.get(key) for key in ENV_KEYS}
    try:
        return _train(config, encode_fn, init_distributed(config.strategy))
    finally:
        if created and dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()
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

    from selfrag.training.loop import TrainResult, _resolve_checkpoint, encode_file
    from selfrag.training.model import load_model, load_tokenizer

    if config.seed is not None:
        from transformers import set_seed

        set_seed(config.seed)
    output_dir = Path(config.output_dir)
    trackers = _Trackers(config, d, output_dir)
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
        engine: _Engine = _DeepSpeedEngine(config, model, d, max_train_steps, ds_config)
    else:
        engine = _FSDPEngine(config, model, d, max_train_steps)
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
    if config.resume_from_checkpoint:
        path = _resolve_checkpoint(config)
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
