"""tests/procs.py: what a test starts dies with it, even a worker in a session of its own (as torchrun starts them)."""

from __future__ import annotations

import os
import sys
import time

import pytest
from procs import descendants, group_alive, kill_group, members, run, serve

# A launcher that starts a worker in a new session (like torchrun) which writes its pid and sleeps.
LAUNCHER = """
import subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", "import os, time; open(sys.argv[1], 'w').write(str(os.getpid())); "
                           "time.sleep(600)".replace("sys.argv[1]", repr(sys.argv[1]))], start_new_session=True)
print("started", flush=True)
time.sleep(float(sys.argv[2]))
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(path, seconds=30.0) -> int:
    deadline = time.monotonic() + seconds
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"no {path}"
        time.sleep(0.05)
    return int(path.read_text())


def test_a_timeout_kills_workers_in_other_sessions_and_says_so(tmp_path):
    pid_file = tmp_path / "worker.pid"
    with pytest.raises(pytest.fail.Exception) as err:
        run([sys.executable, "-c", LAUNCHER, pid_file, "600"], timeout=15)
    assert "timed out after 15 s" in str(err.value) and "started" in str(err.value)
    assert not alive(wait_for(pid_file))


def test_a_worker_outliving_its_launcher_is_reported_and_killed(tmp_path):
    pid_file = tmp_path / "worker.pid"
    done = run([sys.executable, "-c", LAUNCHER + "\nimport pathlib\nwhile not pathlib.Path(sys.argv[1]).exists(): "
                "time.sleep(0.05)\n", pid_file, "0"], timeout=60)  # fmt: skip
    assert done.returncode == 0 and done.stdout == "started\n"
    assert done.left_behind and not members(done.token) and not group_alive(done.pgid)
    assert not alive(wait_for(pid_file))


def test_check_fails_on_a_non_zero_exit_with_the_output():
    with pytest.raises(pytest.fail.Exception, match="exited 3 .*\n.*boom"):
        run([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], timeout=60)
    done = run([sys.executable, "-c", "import sys; sys.exit(3)"], timeout=60, check=False)
    assert done.returncode == 3 and not done.left_behind


def test_a_stale_torch_extensions_lock_is_named_on_timeout(tmp_path):
    lock = tmp_path / "ext" / "cpu_adam" / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}
    with pytest.raises(pytest.fail.Exception, match=f"locks exist .*{lock}"):
        run([sys.executable, "-c", "import time; time.sleep(600)"], timeout=2, env=env)


def test_serve_and_kill_group_reach_workers_in_other_sessions(tmp_path):
    pid_file = tmp_path / "worker.pid"
    with serve([sys.executable, "-c", LAUNCHER, pid_file, "600"], grace=5) as proc:
        worker = wait_for(pid_file)
        assert worker in descendants(proc.pid)
    assert proc.returncode is not None and not alive(worker)

    import subprocess

    pid_file.unlink()
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, pid_file, "600"], start_new_session=True)
    worker = wait_for(pid_file)
    kill_group(proc)
    assert not alive(worker) and not group_alive(proc.pid)
