"""Which checkpoint `--resume_from_checkpoint` names, for both training loops (`loop.py`, `distributed.py`): a
checkpoint is a `step_N/` or `epoch_N/` folder of `--output_dir` whose `trainer_state.json` was written (last)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from selfrag.errors import ConfigError
from selfrag.training.config import FinetuneConfig

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"


def resolve_checkpoint(config: FinetuneConfig) -> Path | None:
    """The checkpoint `--resume_from_checkpoint` names: a folder; `latest` (or `true`, the HF Trainer spelling) the
    complete checkpoint with the most updates in `--output_dir`, which must exist; `auto` the same, or None (train
    from the start) when there is none yet, so that rerunning one command after a crash continues the run. A folder
    without `trainer_state.json` (written last) is a save that was interrupted and is never resumed from."""
    name = config.resume_from_checkpoint or ""
    if name.lower() in ("latest", "true", "auto"):
        found = [p for p in Path(config.output_dir).glob("*_*") if (p / TRAINER_STATE).is_file()]
        if found:
            return max(found, key=lambda p: json.loads((p / TRAINER_STATE).read_text())["completed_steps"])
        if name.lower() == "auto":
            logger.info("--resume_from_checkpoint auto: no checkpoint in %s yet; starting", config.output_dir)
            return None
        raise ConfigError(f"--resume_from_checkpoint {name}: no step_N / epoch_N checkpoint in {config.output_dir}")
    path = Path(name)
    if not (path / TRAINER_STATE).is_file():
        raise ConfigError(f"--resume_from_checkpoint {path}: not a checkpoint folder (no {TRAINER_STATE})")
    return path
