"""The optimizer's parameter groups, the same for every strategy (accelerate in `loop.py`, DeepSpeed in
`deepspeed_engine.py`, FSDP2 in `fsdp.py`)."""

from __future__ import annotations

from typing import Any


def param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """The trainable parameters of `model` in two groups: matrices with `weight_decay`, the rest with none."""
    # Biases and norm weights (the 1-d parameters) get no weight decay. The original meant the same with the names
    # "bias" / "layer_norm.weight", which match no Llama norm (docs/original_selfrag.md §7.3); the scripts use 0.
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for _, p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for _, p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
