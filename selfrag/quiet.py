"""Third-party log lines that are not the user's business, silenced where they are emitted (`quiet_third_party`,
called by `selfrag.cli.setup_logging`). Each rule names the exact source; warnings a user can act on stay.

* faiss (`faiss/loader.py`, logger `faiss.loader`) logs at INFO how it picks its SIMD build: with the root logger at
  INFO a pip `faiss-cpu` wheel, which ships only the generic build, prints eight lines such as
  `Could not load library with AVX512 support due to: ModuleNotFoundError("No module named
  'faiss.swigfaiss_avx512'")`. All of it is INFO or DEBUG (a failed load raises ImportError), so the logger is set
  to WARNING.
* DeepSpeed (`deepspeed/accelerator/real_accelerator.py`, `get_accelerator`, run at `import deepspeed`) warns
  `Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it.` whenever it finds
  no accelerator, on its own stdout handler of the logger `DeepSpeed`. On a machine without a GPU there is nothing
  to detect, so the line is dropped there; where a GPU device node exists (/dev/nvidia0, /dev/kfd) it stays: that
  user's GPU is going unused. Its other accelerator lines are INFO, below DeepSpeed's own WARNING level.
"""

from __future__ import annotations

import logging
import os

FAISS_LOGGER = "faiss.loader"
DEEPSPEED_LOGGER = "DeepSpeed"
DEEPSPEED_NO_ACCELERATOR = (
    "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it."
)
GPU_DEVICE_NODES = ("/dev/nvidia0", "/dev/kfd")


def has_gpu_device() -> bool:
    """Whether the OS shows an NVIDIA or AMD GPU (its device node), whatever torch makes of it."""
    return any(os.path.exists(node) for node in GPU_DEVICE_NODES)


class _DropNoAcceleratorWarning(logging.Filter):
    """Drops DeepSpeed's "unable to detect" accelerator warning on machines without a GPU."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != DEEPSPEED_NO_ACCELERATOR or has_gpu_device()


def quiet_third_party() -> None:
    """Install the rules of the module docstring; idempotent, and effective whether or not faiss and DeepSpeed are
    imported yet (the loggers are configured by name)."""
    faiss = logging.getLogger(FAISS_LOGGER)
    if faiss.level == logging.NOTSET:  # a level set on purpose is kept
        faiss.setLevel(logging.WARNING)
    deepspeed = logging.getLogger(DEEPSPEED_LOGGER)
    if not any(isinstance(f, _DropNoAcceleratorWarning) for f in deepspeed.filters):
        deepspeed.addFilter(_DropNoAcceleratorWarning())
