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


class HFBackend(GenerationBackend):
    """Greedy (or sampled) decoding with `transformers` models.

    Args:
        model: a causal LM.
        tokenizer: its tokenizer; padding is done on the left here.
        max_batch_size: sequences per forward pass; larger inputs are split internally.
    """

    def __init__(self, model: Any, tokenizer: Any, max_batch_size: int = 16) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.device = next(model.parameters()).device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise BackendError("the tokenizer has neither a pad nor an eos token; set one before decoding")
        self.pad_id = pad
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        self.eos_ids = eos_token_ids(tokenizer, eos)

    @classmethod
    def from_pretrained(
        cls, model_name_or_path: str, dtype: str = "auto", device: str | None = None, max_batch_size: int = 16
    ) -> HFBackend:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
            model = AutoModelForCausalLM.from_pretrained(model_name_or_path, dtype=resolve_dtype(dtype, device))
        except OSError as err:
            raise BackendError(f"cannot load model {model_name_or_path!r} with transformers: {err}") from err
        return cls(model.to(device), tokenizer, max_batch_size=max_batch_size)

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
        # Sort by length so each forward pass pads little; results go back in the callers' order.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        results: list[Generation | None] = [None] * len(encoded)
        generator = torch.Generator(device=self.device).manual_seed(params.seed)
        for start in range(0, len(order), self.max_batch_size):
            chunk = order[start : start + self.max_batch_size]
            for i, gen in zip(chunk, self._generate_batch([encoded[i] for i in chunk], params, generator)):
                results[i] = gen
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def _generate_batch(
        self, prompt_ids: list[list[int]], params: GenParams, generator: torch.Generator
    ) -> list[Generation]:
        batch, width = len(prompt_ids), max(len(ids) for ids in prompt_ids)
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((batch, width), dtype=torch.long)
        for row, ids in enumerate(prompt_ids):  # left padding
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        watch = torch.tensor(params.watch_token_ids, dtype=torch.long, device=self.device)

        out = self.model(
            input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True, logits_to_keep=1
        )
        next_pos = positions[:, -1:] + 1
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
