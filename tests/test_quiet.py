"""`selfrag.quiet` (through `selfrag.cli.setup_logging`): faiss's SIMD probing and DeepSpeed's no-GPU notice are
not printed, other warnings of the same loggers are. Imports run in fresh interpreters: both libraries decide once
per process."""

from __future__ import annotations

import importlib.util
import logging
import sys

import pytest
from procs import run

from selfrag import quiet

CHILD = """
import logging, sys
if sys.argv[1] == "ours":
    from selfrag.cli import setup_logging
    setup_logging()
else:
    logging.basicConfig(level=logging.INFO)
import faiss
if sys.argv[2] == "deepspeed":
    import deepspeed
logging.getLogger("faiss.loader").warning("a faiss warning")
logging.getLogger("DeepSpeed").warning("a DeepSpeed warning")
"""


def imports_output(setup: str) -> str:
    pytest.importorskip("faiss")
    with_ds = "deepspeed" if importlib.util.find_spec("deepspeed") else "no"
    return run([sys.executable, "-c", CHILD, setup, with_ds], timeout=120).output


def test_setup_logging_silences_faiss_probing_and_deepspeeds_no_gpu_notice():
    output = imports_output("ours")
    assert "a faiss warning" in output and "a DeepSpeed warning" in output  # warnings stay
    assert "Loading faiss" not in output and "Could not load library" not in output
    if not quiet.has_gpu_device():
        assert "unable to detect" not in output
    assert output.count("\n") == 2, output


def test_without_it_the_lines_are_there():
    """The control: plain INFO logging shows faiss's probing (and DeepSpeed's notice where deepspeed is installed)."""
    output = imports_output("plain")
    assert "INFO:faiss.loader:Loading faiss" in output
    if importlib.util.find_spec("deepspeed") and not quiet.has_gpu_device():
        assert quiet.DEEPSPEED_NO_ACCELERATOR in output


def test_the_deepspeed_notice_stays_where_a_gpu_device_exists(monkeypatch):
    notice = logging.LogRecord("DeepSpeed", logging.WARNING, __file__, 1, quiet.DEEPSPEED_NO_ACCELERATOR, None, None)
    other = logging.LogRecord("DeepSpeed", logging.WARNING, __file__, 1, "something else", None, None)
    rule = quiet._DropNoAcceleratorWarning()
    monkeypatch.setattr(quiet, "has_gpu_device", lambda: False)
    assert not rule.filter(notice) and rule.filter(other)
    monkeypatch.setattr(quiet, "has_gpu_device", lambda: True)
    assert rule.filter(notice) and rule.filter(other)


def test_quiet_is_idempotent_and_keeps_a_level_set_on_purpose():
    faiss, deepspeed = logging.getLogger(quiet.FAISS_LOGGER), logging.getLogger(quiet.DEEPSPEED_LOGGER)
    old_level, old_filters = faiss.level, list(deepspeed.filters)
    try:
        faiss.setLevel(logging.DEBUG)
        quiet.quiet_third_party()
        quiet.quiet_third_party()
        assert faiss.level == logging.DEBUG
        assert sum(isinstance(f, quiet._DropNoAcceleratorWarning) for f in deepspeed.filters) == 1
    finally:
        faiss.setLevel(old_level)
        deepspeed.filters[:] = old_filters
