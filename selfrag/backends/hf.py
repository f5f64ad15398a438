"""HF transformers backend: batched decoding with a KV cache, on CPU or GPU.

Runs where vllm does not (no GPU, laptops, CI). Decoding is an explicit loop rather than `model.generate` so
that the log-probabilities of the watched reflection tokens are read from the raw next-token distribution at
every step, without materialising the full-vocabulary scores of all steps.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from selfrag.backends.base import Generation, GenerationBackend, GenParams, decode_completion, eos_token_ids
from selfrag.errors import BackendError

logger = logging.getLogger(__name__)

DTYPES = {
    "half": torch.float16,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float": torch.float32,
    "float32": torch.float32,
}


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """Map a vllm-style dtype name to torch; `half` on CPU becomes float32 (fp16 matmuls are slow there)."""
    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    if dtype not in DTYPES:
        raise BackendError(f"unknown --dtype {dtype!r}; choose one of {sorted(DTYPES)} or 'auto'")
    if device == "cpu" and DTYPES[dtype] == torch.float16:
        logger.warning("--dtype %s on CPU: using float32 instead (fp16 on CPU is slow and imprecise)", dtype)
        return torch.float32
    return DTYPES[dtype]


MIN_SHARED_PREFIX = 16  # tokens: a shorter common prefix is not worth a pass of its own


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    return next((k for k in range(n) if a[k] != b[k]), n)


def shared_prefix_groups(encoded: Sequence[Sequence[int]]) -> list[list[int]]:
    """Indices of `encoded` grouped into runs of consecutive prompts sharing at least `MIN_SHARED_PREFIX` tokens."""
    groups: list[list[int]] = []
    shared = 0
    for i, ids in enumerate(encoded):
        if groups:
            common = min(shared, _common_length(encoded[groups[-1][0]], ids))
            if common >= MIN_SHARED_PREFIX:
                groups[-1].append(i)
                shared = common
                continue
        groups.append([i])
        shared = len(ids)
    return groups


def _shared_length(group: Sequence[Sequence[int]]) -> int:
    """Tokens the members of `group` run together: their common prefix, leaving each at least one token of its own."""
    common = min(len(ids) for ids in group) - 1
    for ids in group[1:]:
        common = min(common, _common_length(group[0], ids))
    return common


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention[row, width - len(ids) :] = 1
    return input_ids.to(device), attention.to(device)


def _chunks(groups: list[list[int]], size: int) -> list[list[list[int]]]:
    """Groups packed in order into chunks of at most `size` prompts (a larger group is split)."""
    chunks: list[list[list[int]]] = [[]]
    for group in groups:
        for start in range(0, len(group), size):
            piece = group[start : start + size]
            if sum(map(len, chunks[-1])) + len(piece) > size:
                chunks.append([])
            chunks[-1].append(piece)
    return [chunk for chunk in chunks if chunk]


class HFBackend(GenerationBackend):
    """Greedy (or sampled) decoding with `transformers` models.

    Args:
        model: a causal LM.
        tokenizer: its tokenizer; padding is done on the left here.
        max_batch_size: sequences per forward pass; larger inputs are split internally.
        prefix_reuse: prompts that follow each other and share a prefix of at least `MIN_SHARED_PREFIX` tokens
            (a question's prompt with each of its passages; a beam node's context with each passage) run the
            prefix once, and its KV cache is copied to each (`shared_prefix_groups`).
    """

    def __init__(self, model: Any, tokenizer: Any, max_batch_size: int = 16, prefix_reuse: bool = True) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.prefix_reuse = prefix_reuse
        self.device = next(model.parameters()).device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise BackendError("the tokenizer has neither a pad nor an eos token; set one before decoding")
        self.pad_id = pad
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        self.eos_ids = eos_token_ids(tokenizer, eos)

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str,
        dtype: str = "auto",
        device: str | None = None,
        max_batch_size: int = 16,
        prefix_reuse: bool = True,
    ) -> HFBackend:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
            model = AutoModelForCausalLM.from_pretrained(model_name_or_path, dtype=resolve_dtype(dtype, device))
        except OSError as err:
            raise BackendError(f"cannot load model {model_name_or_path!r} with transformers: {err}") from err
        return cls(model.to(device), tokenizer, max_batch_size=max_batch_size, prefix_reuse=prefix_reuse)

    @property
    def context_length(self) -> int | None:
        """The model's position limit from its config (`max_position_embeddings`, or GPT-2's `n_positions`)."""
        config = self.model.config
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def generate(self, prompts: Sequence[str], params: GenParams) -> list[Generation]:
        special = params.add_special_tokens
        encoded = [self.tokenizer(p, add_special_tokens=special)["input_ids"] for p in prompts]
        groups = shared_prefix_groups(encoded) if self.prefix_reuse else [[i] for i in range(len(encoded))]
        # Sort by length so each forward pass pads little; results go back in the callers' order.
        groups.sort(key=lambda g: max(len(encoded[i]) for i in g))
        results: list[Generation | None] = [None] * len(encoded)
        generator = torch.Generator(device=self.device).manual_seed(params.seed)
        for chunk in _chunks(groups, self.max_batch_size):
            members = [i for group in chunk for i in group]
            for i, gen in zip(members, self._generate_batch([encoded[i] for i in members], params, generator)):
                results[i] = gen
        return results  # type: ignore[return-value]

    def _forward(self, rows: list[list[int]]) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """Prefill left-padded `rows`; (model output with its KV cache, attention mask, next positions)."""
        input_ids, attention = _left_pad(rows, self.pad_id, self.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True, logits_to_keep=1
        )
        return out, attention, positions[:, -1:] + 1

    def _prefill(self, rows: list[list[int]]) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """Prefill `rows`; consecutive rows sharing a prefix run it once (its KV cache is copied to each), then only
        their own suffixes. Without a prefix worth sharing (or with `prefix_reuse` off), one plain padded pass."""
        if not self.prefix_reuse:
            return self._forward(rows)
        groups = [[rows[i] for i in group] for group in shared_prefix_groups(rows)]
        shared = [_shared_length(group) for group in groups]
        worth = any(len(g) > 1 and n >= MIN_SHARED_PREFIX for g, n in zip(groups, shared))
        if not worth or min(shared) < 1:
            return self._forward(rows)
        out, prefix_attention, _ = self._forward([group[0][:n] for group, n in zip(groups, shared)])
        owner = torch.tensor([k for k, group in enumerate(groups) for _ in group], device=self.device)
        cache = out.past_key_values
        cache.batch_select_indices(owner)
        suffix_ids, suffix_attention = _left_pad(
            [ids[n:] for group, n in zip(groups, shared) for ids in group], self.pad_id, self.device
        )
        offsets = torch.tensor([n for group, n in zip(groups, shared) for _ in group], device=self.device)
        positions = (suffix_attention.cumsum(-1) - 1).clamp(min=0) + offsets[:, None]
        attention = torch.cat([prefix_attention[owner], suffix_attention], dim=1)
        out = self.model(
            input_ids=suffix_ids,
            attention_mask=attention,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out, attention, positions[:, -1:] + 1

    @torch.inference_mode()
    def _generate_batch(
        self, prompt_ids: list[list[int]], params: GenParams, generator: torch.Generator
    ) -> list[Generation]:
        batch = len(prompt_ids)
        watch = torch.tensor(params.watch_token_ids, dtype=torch.long, device=self.device)
        out, attention, next_pos = self._prefill(prompt_ids)
        tokens: list[list[int]] = [[] for _ in range(batch)]
        steps: list[list[dict[int, float]]] = [[] for _ in range(batch)]
        cumulative = [0.0] * batch
        rows = list(range(batch))  # original row of each sequence still being decoded
        for step in range(params.max_tokens):
            logprobs = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)  # (active, V)
            chosen = self._choose(logprobs, params, generator)  # (active,)
            chosen_lp = logprobs.gather(1, chosen[:, None]).squeeze(1).tolist()
            watched = logprobs[:, watch].tolist() if len(watch) else [[] for _ in rows]
            keep = []
            for k, (row, token) in enumerate(zip(rows, chosen.tolist())):
                tokens[row].append(token)
                cumulative[row] += chosen_lp[k]
                steps[row].append(dict(zip(params.watch_token_ids, watched[k])))
                if token not in self.eos_ids:
                    keep.append(k)
            if not keep or step == params.max_tokens - 1:
                break
            cache = out.past_key_values
            if len(keep) < len(rows):  # drop finished sequences from the batch and the KV cache
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                attention, next_pos, chosen = attention[index], next_pos[index], chosen[index]
                rows = [rows[k] for k in keep]
            attention = torch.cat([attention, attention.new_ones((len(rows), 1))], dim=1)
            out = self.model(
                input_ids=chosen[:, None],
                attention_mask=attention,
                position_ids=next_pos,
                past_key_values=cache,
                use_cache=True,
            )
            next_pos = next_pos + 1
        return [self._to_generation(t, c, s) for t, c, s in zip(tokens, cumulative, steps)]

    @staticmethod
    def _choose(logprobs: torch.Tensor, params: GenParams, generator: torch.Generator) -> torch.Tensor:
        if params.temperature == 0.0:
            return logprobs.argmax(dim=-1)
        probs = torch.softmax(logprobs / params.temperature, dim=-1)
        if params.top_p < 1.0:  # nucleus: keep the smallest prefix of sorted tokens whose mass reaches top_p
            sorted_probs, sorted_idx = probs.sort(dim=-1, descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs > params.top_p
            sorted_probs[outside] = 0.0
            probs = torch.zeros_like(probs).scatter(1, sorted_idx, sorted_probs)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    def _to_generation(self, token_ids: list[int], cumulative: float, steps: list[dict[int, float]]) -> Generation:
        text = decode_completion(self.tokenizer, token_ids, self.eos_ids)
        return Generation(text=text, token_ids=token_ids, cumulative_logprob=cumulative, step_logprobs=steps)
