"""Shared fixtures: a tiny Self-RAG-shaped Llama built in code (no model hub), and its reflection vocabulary.

Run the suite with `python -m pytest -q` from the repository root.
"""

from __future__ import annotations

import os

import pytest

# No model hub is reachable in CI: fail fast instead of retrying the network for a missing local path.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from selfrag.testing import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Path of a saved tiny Llama (2 layers, hidden 64, head_dim 64) whose tokenizer has the reflection tokens."""
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny_selfrag")))


@pytest.fixture(scope="session")
def hf_backend(tiny_model_dir):
    from selfrag.backends.hf import HFBackend

    return HFBackend.from_pretrained(tiny_model_dir, dtype="float32")
