"""Batch encoded examples: pad only (masking was done by `selfrag.training.encode`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from selfrag.training.encode import IGNORE_INDEX


@dataclass(frozen=True)
class PaddingCollator:
    """Pad `input_ids` with `pad_token_id`, `labels` with -100 and `attention_mask` with 0, to the longest example.

    Same effect as the original's `DataCollatorForSeq2Seq(padding="longest")` (finetune.py) for decoder-only models.
    Keys other than these three are ignored. `pad_to_multiple_of` rounds the length up (useful on GPUs).

    Example:
    >>> collate = PaddingCollator(pad_token_id=0)
    >>> batch = collate([
    ...     {"input_ids": [1, 5, 6, 7], "labels": [-100, -100, 6, 7], "attention_mask": [1, 1, 1, 1]},
    ...     {"input_ids": [1, 8], "labels": [-100, 8], "attention_mask": [1, 1]},
    ... ])
    >>> batch["input_ids"]
    tensor([[1, 5, 6, 7],
            [1, 8, 0, 0]])
    >>> batch["labels"]
    tensor([[-100, -100,    6,    7],
            [-100,    8, -100, -100]])
    >>> batch["attention_mask"]
    tensor([[1, 1, 1, 1],
            [1, 1, 0, 0]])
    >>> PaddingCollator(pad_token_id=0, padding_side="left")([{"input_ids": [1, 2], "labels": [-100, 2]},
    ...                                                      {"input_ids": [3], "labels": [3]}])["labels"]
    tensor([[-100,    2],
            [-100,    3]])
    """

    pad_token_id: int
    label_pad_token_id: int = IGNORE_INDEX
    pad_to_multiple_of: int | None = None
    padding_side: Literal["right", "left"] = "right"

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        if self.pad_token_id is None:
            raise ValueError("PaddingCollator needs a pad_token_id (the tokenizer has no pad token)")
        length = max(len(ex["input_ids"]) for ex in examples)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of

        def pad(values: Sequence[int], value: int) -> list[int]:
            filler = [value] * (length - len(values))
            return list(values) + filler if self.padding_side == "right" else filler + list(values)

        return {
            "input_ids": torch.tensor([pad(ex["input_ids"], self.pad_token_id) for ex in examples]),
            "labels": torch.tensor([pad(ex["labels"], self.label_pad_token_id) for ex in examples]),
            "attention_mask": torch.tensor(
                [pad(ex.get("attention_mask") or [1] * len(ex["input_ids"]), 0) for ex in examples]
            ),
        }
