"""The process group the direct strategies (`--strategy deepspeed|fsdp`) run in, and the interface they implement.

`init_distributed` joins the launcher's group (or makes a group of one); `Engine` is what
`selfrag.training.distributed` asks of a strategy (`deepspeed_engine.DeepSpeedEngine`, `fsdp.FSDPEngine`): run one
micro-batch, gather the full weights, save and load the resumable state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from selfrag.training.config import FinetuneConfig

logger = logging.getLogger(__name__)


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
        # Its functions take `group=group.WORLD` as a default argument, bound at import: imported after the default
        # group exists (transformers' model classes import it), they would hold that group, and its gloo threads,
        # until interpreter finalization, past destroy_process_group (see shutdown_distributed).
        import torch.distributed.nn.functional  # noqa: F401

        if strategy == "deepspeed":
            if not cuda:
                os.environ.setdefault("DS_ACCELERATOR", "cpu")
            from selfrag.torch_extensions import import_deepspeed

            import_deepspeed().init_distributed(dist_backend=backend)
        else:
            dist.init_process_group(backend=backend)
    return Dist(rank, world, local, device, backend)


def shutdown_distributed(destroy: bool, clean: bool) -> None:
    """End a direct-strategy run's distributed state so that none of it is left for interpreter exit.

    `clean` (training returned on this rank): first a barrier, so no rank tears a group down while a peer still
    uses it. Then the engines built since the last call let go of what their library keeps of them
    (`Engine.close`). `destroy`: destroy every process group, DeepSpeed's included (`deepspeed.comm`'s
    `destroy_process_group` also drops DeepSpeed's own references to them). Last, when `clean`, a collection: a gloo
    group's worker and transport threads stop only when the group's last reference goes, so they are joined here,
    in the main thread with the interpreter whole. Before, both groups of a ZeRO-3 run (and their threads) lived
    on into interpreter finalization, where gloo teardown can abort a process ('terminate called without an active
    exception', exit -6: issue #14's rare abort after the model was saved). After a failure, no barrier and no
    collection: a peer may be gone or still inside a collective."""
    import gc

    import torch.distributed as dist

    if clean and dist.is_initialized():
        dist.barrier()
    while _ENGINES:
        engine = _ENGINES.pop()
        try:
            engine.close()
        except Exception:  # teardown: the run's outcome stands; what stays referenced is freed at exit
            logger.warning("closing the %s engine failed", type(engine).__name__, exc_info=True)
        del engine  # not even this frame may hold it when the groups are collected below
    if destroy and dist.is_initialized():
        ds_comm = sys.modules.get("deepspeed.comm")
        with contextlib.suppress(Exception):
            if ds_comm is not None and ds_comm.is_initialized():
                ds_comm.destroy_process_group()
            else:
                dist.destroy_process_group()
    if clean:
        gc.collect()


class Engine:
    """The strategy-specific parts: wrap the model, run one micro-batch, gather the full weights."""

    def __init__(self, config: FinetuneConfig, model: Any, dist_: Dist, max_train_steps: int):
        self.config, self.dist, self.model = config, dist_, model
        self.micro = 0
        _ENGINES.append(self)

    def close(self) -> None:
        """Training is over: drop what the strategy's library keeps of this engine past its last reference."""

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


_ENGINES: list[Engine] = []  # built since the last shutdown_distributed, which closes them
