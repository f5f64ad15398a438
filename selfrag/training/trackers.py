"""Metric trackers (tensorboard, wandb) for the direct strategies (`--strategy deepspeed|fsdp`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from selfrag.errors import ConfigError
from selfrag.training.config import FinetuneConfig
from selfrag.training.process_group import Dist

logger = logging.getLogger(__name__)


class Trackers:
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
