"""The process group the direct strategies (`--strategy deepspeed|fsdp`) run in, and the interface they implement.

`init_distributed` joins the launcher's group (or makes a group of one); `Engine` is what
`selfrag.training.distributed` asks of a strategy (`deepspeed_engine.DeepSpeedEngine`, `fsdp.FSDPEngine`): run one
micro-batch, gather the full weights, save and load the resumable state.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from selfrag.training.config import FinetuneConfig


def setup_rank_logging() -> None:
    """Script logging under a launcher: rank 0 at INFO, the others at WARNING (`SELFRAG_LOG_ALL_RANKS=1`: all at
    INFO); with several processes each line names its rank."""
    from selfrag.cli import setup_logging

    rank = int(os.environ.get("RANK", "0"))
    all_ranks = os.environ.get("SELFRAG_LOG_ALL_RANKS", "") not in ("", "0")
    setup_logging(logging.INFO if rank == 0 or all_ranks else logging.WARNING)
    # DeepSpeed 0.19 calls these renamed torch collectives at every ZeRO step: hundreds of FutureWarnings a run that
    # only DeepSpeed can act on.
    warnings.filterwarnings(
        "ignore",
        message=r"`torch\.distributed\.(reduce_scatter_tensor|all_gather_into_tensor)` is deprecated",
        category=FutureWarning,
    )
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
            from selfrag.torch_extensions import prepare_torch_extensions

            prepare_torch_extensions()  # init_distributed JIT-builds deepspeed_shm_comm on CPU
            import deepspeed

            deepspeed.init_distributed(dist_backend=backend)
        else:
            dist.init_process_group(backend=backend)
    return Dist(rank, world, local, device, backend)


class Engine:
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
