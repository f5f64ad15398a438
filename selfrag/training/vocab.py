"""Add the reflection tokens (and a pad token) to any tokenizer, and give the model rows for them.

The original generator (finetune.py:446-476, docs/original_selfrag.md §2.2) adds the tokens only to Llama
tokenizers, and crashes with a NameError otherwise; new rows keep HF's default initialisation. The original critic
(train_special_tokens.py:143-164, §2.6) sets the new input and output rows to the mean of the old rows. Here both
work for any tokenizer (SentencePiece Llama-2 / Mistral, byte-level BPE Llama-3 / Qwen2.5 / GPT-2), and mean
initialisation is the default.

Order: the 15 reflection tokens in `selfrag.tokens.ALL_TOKENS` order, THEN the pad token when the tokenizer has
none, which reproduces the released Llama-2 ids (32000..32014, `<pad>` 32015).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from selfrag.errors import VocabError
from selfrag.tokens import ALL_TOKENS, ReflectionVocab

logger = logging.getLogger(__name__)

DEFAULT_PAD_TOKEN = "<pad>"  # the original generator's; the critic uses "[PAD]"


@dataclass(frozen=True)
class AddedTokens:
    """What `add_reflection_tokens` did: the reflection ids (None if not added), the new ids, the old length."""

    vocab: ReflectionVocab | None
    new_token_ids: tuple[int, ...]
    old_len: int
    pad_added: bool


def _add_special(tokenizer: Any, tokens: Sequence[str]) -> int:
    # transformers 5 renamed `replace_additional_special_tokens` to `replace_extra_special_tokens`; either way keep
    # the tokenizer's own extra special tokens (Llama-3 and Qwen2.5 have many).
    params = inspect.signature(tokenizer.add_special_tokens).parameters
    kwargs = {
        name: False for name in ("replace_extra_special_tokens", "replace_additional_special_tokens") if name in params
    }
    return tokenizer.add_special_tokens({"additional_special_tokens": list(tokens)}, **kwargs)


def add_reflection_tokens(
    tokenizer: Any, pad_token: str = DEFAULT_PAD_TOKEN, source: str | None = None, reflection: bool = True
) -> AddedTokens:
    """Add the 15 reflection tokens as special tokens (skipping those already present) and a pad token if none.

    Idempotent: on a tokenizer that already has them (a Self-RAG checkpoint) it adds nothing. Checks afterwards that
    every reflection token encodes to exactly one id of its own (`ReflectionVocab.from_tokenizer` plus an
    `encode` round trip), and raises `VocabError` otherwise. `reflection=False` only adds the pad token.
    """
    old_len = len(tokenizer)
    missing = [tok for tok in ALL_TOKENS if tok not in tokenizer.get_vocab()] if reflection else []
    if missing:
        _add_special(tokenizer, missing)
    pad_added = tokenizer.pad_token is None
    if pad_added:
        # The original generator adds "<pad>"; a tokenizer that has that string but no pad token just reuses it.
        tokenizer.add_special_tokens({"pad_token": pad_token})
    new_ids = tuple(range(old_len, len(tokenizer)))
    reflection_vocab = None
    if reflection:
        reflection_vocab = ReflectionVocab.from_tokenizer(tokenizer, source=source)
        for tok, tok_id in reflection_vocab.ids.items():
            encoded = tokenizer.encode(tok, add_special_tokens=False)
            if encoded != [tok_id]:
                raise VocabError(f"{tok!r} encodes to {encoded}, not to its own id {tok_id}: the tokenizer splits it")
        if tokenizer.pad_token_id in reflection_vocab.all_ids:
            raise VocabError(f"the pad token {tokenizer.pad_token!r} is a reflection token; set another pad token")
    logger.info(
        "tokenizer: %d tokens added (%d reflection%s)%s; %d tokens in all",
        len(new_ids),
        len(missing),
        f", pad {tokenizer.pad_token!r}" if pad_added else "",
        f", ids {new_ids[0]}..{new_ids[-1]}" if new_ids else "",
        len(tokenizer),
    )
    return AddedTokens(vocab=reflection_vocab, new_token_ids=new_ids, old_len=old_len, pad_added=pad_added)


def _full_rows(param: Any) -> int:
    """Rows of a weight; under DeepSpeed ZeRO-3 the local tensor is empty and `ds_shape` holds the real shape."""
    return int(getattr(param, "ds_shape", param.shape)[0])


def _gathered(params: Sequence[Any]) -> Any:
    """Context giving every rank the full ZeRO-3 partitioned `params`; rank 0's changes are kept on exit."""
    if any(hasattr(p, "ds_id") for p in params):
        from selfrag.torch_extensions import import_deepspeed

        return import_deepspeed().zero.GatheredParameters(list(params), modifier_rank=0)
    return contextlib.nullcontext()


def resize_and_init_embeddings(
    model: Any,
    tokenizer_len: int,
    new_token_ids: Sequence[int],
    old_len: int,
    init: Literal["mean", "default"] = "mean",
    pad_to_multiple_of: int | None = None,
) -> None:
    """Grow the embeddings to `tokenizer_len` rows if needed, then set the rows of `new_token_ids` to the mean.

    The mean is taken over the rows of the tokens that existed before (`< old_len`), for the input embeddings and,
    when untied, the output head. Rows are set for every new id, including ids that fit in an already padded
    vocabulary (Qwen2.5 has more rows than tokens), which `resize_token_embeddings` alone would leave untrained.
    `init="default"` keeps transformers' initialisation of new rows (the original generator's behaviour).

    Works on a model partitioned by DeepSpeed ZeRO-3 `zero.Init` (loaded under `selfrag.training.distributed.
    zero3_init`): transformers resizes inside `GatheredParameters`, and the mean rows are written inside
    `GatheredParameters(..., modifier_rank=0)`, so the full matrices exist only for the time of the update.
    """
    import torch

    rows = _full_rows(model.get_input_embeddings().weight)
    if tokenizer_len > rows:
        model.resize_token_embeddings(tokenizer_len, pad_to_multiple_of=pad_to_multiple_of, mean_resizing=False)
    if init == "default" or not new_token_ids:
        return
    if init != "mean":
        raise VocabError(f"unknown embedding init {init!r}; use 'mean' or 'default'")
    ids = torch.tensor(list(new_token_ids), dtype=torch.long)
    n_old = min(old_len, rows)
    weights = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and not _same_weight(output.weight, weights[0]):
        weights.append(output.weight)
    with _gathered(weights), torch.no_grad():
        for weight in weights:
            mean = weight[:n_old].float().mean(dim=0)
            weight[ids] = mean.to(weight.dtype)
    logger.info(
        "embeddings: %d rows; the %d new rows set to the mean of the first %d%s",
        _full_rows(model.get_input_embeddings().weight),
        len(ids),
        n_old,
        " (gathered from the ZeRO-3 partitions)" if any(hasattr(w, "ds_id") for w in weights) else "",
    )


def _same_weight(a: Any, b: Any) -> bool:
    """Tied embeddings: the same parameter (or, unpartitioned, the same storage)."""
    return a is b or (a.numel() > 0 and a.data_ptr() == b.data_ptr())
