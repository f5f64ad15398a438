"""`TrainResult`: what `loop.train` returns, from either training loop (`loop.py`, `distributed.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from selfrag.training.encode import EncodeStats


@dataclass
class TrainResult:
    """What a run did: its output folder, updates, the loss of every update (this process), and throughput."""

    output_dir: Path
    completed_steps: int
    losses: list[float] = field(default_factory=list)
    encode_stats: EncodeStats | None = None
    tokens_per_second: float = 0.0
