"""`selfrag.torch_extensions`: the folder DeepSpeed's JIT-built ops go to, and the error for a build lock an
interrupted build left behind (which would otherwise make every later run wait forever).

The last two tests run `retrieval_lm/script_finetune_7b.sh` for real (2 CPU processes, DeepSpeed ZeRO-3, 20-60 s):
a stale lock in torch's default folder no longer matters, and one in the folder in use stops the run at once."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
from procs import free_port, group_alive, members, run

from selfrag import torch_extensions as te
from selfrag.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
HOUR = 3600.0


def make_lock(root: Path, op: str = "deepspeed_shm_comm", age: float = HOUR) -> Path:
    lock = root / op / "lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.touch()
    then = time.time() - age
    os.utime(lock, (then, then))
    return lock


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("TORCH_EXTENSIONS_DIR", "SELFRAG_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_build_folder_name_is_torchs(clean_env, tmp_path):
    from torch.utils.cpp_extension import _get_build_directory

    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # torch's default root honours it
    built = Path(_get_build_directory("op", verbose=False))
    assert built.parent == (tmp_path / "xdg" / "torch_extensions" / te._build_folder_name()).resolve()


def test_a_writable_venv_keeps_the_builds(clean_env, tmp_path):
    venv = tmp_path / "venv"
    venv.mkdir()
    clean_env.setattr(sys, "prefix", str(venv))
    clean_env.setattr(sys, "base_prefix", str(tmp_path / "python"))
    root = te.prepare_torch_extensions()
    assert root == venv / "torch_extensions" / te._build_folder_name()
    assert os.environ["TORCH_EXTENSIONS_DIR"] == str(root)


def test_outside_a_venv_the_user_cache_and_xdg(clean_env, tmp_path):
    clean_env.setattr(sys, "prefix", sys.base_prefix)
    name = te._build_folder_name()
    assert te.project_extensions_dir() == tmp_path / "home" / ".cache" / "selfrag" / "torch_extensions" / name
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert te.project_extensions_dir() == tmp_path / "xdg" / "selfrag" / "torch_extensions" / name
    clean_env.setenv("SELFRAG_CACHE", str(tmp_path / "mine"))
    assert te.project_extensions_dir() == tmp_path / "mine" / "torch_extensions" / name


def test_a_read_only_venv_uses_the_user_cache(clean_env, tmp_path):
    venv = tmp_path / "venv"
    venv.mkdir()
    clean_env.setattr(sys, "prefix", str(venv))
    clean_env.setattr(sys, "base_prefix", str(tmp_path / "python"))
    clean_env.setattr(te.os, "access", lambda path, mode: False)
    assert te.project_extensions_dir().parent == tmp_path / "home" / ".cache" / "selfrag" / "torch_extensions"


def test_a_set_torch_extensions_dir_is_kept(clean_env, tmp_path):
    clean_env.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    assert te.prepare_torch_extensions() == tmp_path / "ext"
    assert os.environ["TORCH_EXTENSIONS_DIR"] == str(tmp_path / "ext")


def test_the_folder_choice_is_logged_at_debug(clean_env, tmp_path, caplog):
    clean_env.setenv("SELFRAG_CACHE", str(tmp_path / "mine"))
    clean_env.setattr(sys, "prefix", sys.base_prefix)
    with caplog.at_level("DEBUG", logger="selfrag.torch_extensions"):
        root = te.prepare_torch_extensions()
    lines = [r for r in caplog.records if r.name == "selfrag.torch_extensions"]
    assert len(lines) == 1 and lines[0].levelname == "DEBUG" and str(root) in lines[0].getMessage()


def test_process_start_time_is_this_process():
    started = te.process_start_time()
    assert started is not None and started <= time.time()
    psutil = pytest.importorskip("psutil")
    assert abs(started - psutil.Process().create_time()) < 1.0


def test_a_stale_lock_is_one_line_naming_it_and_the_fix(clean_env, tmp_path):
    clean_env.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    lock = make_lock(tmp_path / "ext", "cpu_adam")
    with pytest.raises(ConfigError) as err:
        te.prepare_torch_extensions()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"stale torch-extensions build lock {lock} (3600 s old, held open by no process)")
    assert message.endswith(f"if no other build is running, remove it: rm {lock}")
    assert lock.exists()  # never removed behind the user's back


def test_a_lock_newer_than_this_process_is_a_live_build(clean_env, tmp_path):
    clean_env.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    make_lock(tmp_path / "ext", age=0)  # e.g. a sibling rank that is building right now
    assert te.prepare_torch_extensions() == tmp_path / "ext"
    assert te.stale_locks(tmp_path / "ext") == []
    # a few seconds older than our start is still a sibling's (ranks start together)
    started = time.time()
    make_lock(tmp_path / "ext", age=te.SLACK_S / 2)
    assert te.stale_locks(tmp_path / "ext", started=started) == []


def test_an_old_lock_a_process_holds_open_is_a_live_build(clean_env, tmp_path):
    clean_env.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    lock = make_lock(tmp_path / "ext")
    fd = os.open(lock, os.O_RDONLY)  # as torch's FileBaton holds it while it builds
    try:
        assert te.holders(lock) == [os.getpid()]
        assert te.prepare_torch_extensions() == tmp_path / "ext"
    finally:
        os.close(fd)
    assert te.holders(lock) == []
    assert te.stale_locks(tmp_path / "ext") == [lock]


def test_no_folder_no_locks(tmp_path):
    assert te.lock_files(tmp_path / "missing") == []
    assert te.stale_locks(tmp_path / "missing") == []


# --- the acceptance tests: the 7B script for real on two CPU processes ------------------------------------------

needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None or shutil.which("bash") is None, reason="needs deepspeed and bash"
)


def script_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    from selfrag.testing import build_tiny_model

    model = build_tiny_model(tmp_path / "model")
    row = {"instruction": "What is the capital of France?", "input": "", "output": "[No Retrieval]Paris.[Utility:5]"}
    train = tmp_path / "train.jsonl"
    train.write_text((json.dumps(row) + "\n") * 8)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_EXTENSIONS_DIR", "SELFRAG_CACHE")}
    env.update(
        MODEL=str(model),
        TRAIN_FILE=str(train),
        OUTPUT_DIR=str(tmp_path / "out"),
        STRATEGY="deepspeed",
        NUM_GPUS="2",
        TOTAL_BATCH_SIZE="4",
        EPOCHS="1",
        USE_FLASH_ATTN="0",
        PREPROCESSING_WORKERS="1",
        REPORT_TO="none",
        OMP_NUM_THREADS="1",
        LAUNCHER_ARGS=f"--master_addr 127.0.0.1 --master_port {port}",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
        **extra,
    )
    return env


SCRIPT = ["bash", str(ROOT / "retrieval_lm" / "script_finetune_7b.sh"), "--use_slow_tokenizer", "False"]


# A stale lock in torch's default folder no longer hangs the 7B script's run:
# tests/test_training_scripts.py::test_7b_script_trains_a_tiny_model_on_two_cpu_processes.


@needs_deepspeed
def test_a_stale_lock_in_the_folder_in_use_stops_the_run_at_once(tmp_path):
    lock = make_lock(tmp_path / "ext")
    env = script_env(tmp_path, TORCH_EXTENSIONS_DIR=str(tmp_path / "ext"))
    start = time.monotonic()
    done = run(SCRIPT, env=env, timeout=180, cwd=tmp_path, check=False)
    elapsed = time.monotonic() - start
    assert done.returncode != 0
    assert f"stale torch-extensions build lock {lock}" in done.output and f"rm {lock}" in done.output
    assert not (tmp_path / "out" / "train_summary.json").exists()
    assert not done.left_behind and not group_alive(done.pgid) and not members(done.token)
    assert elapsed < 120, f"took {elapsed:.0f} s"
