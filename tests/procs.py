"""Run the commands tests start (torchrun, a launcher script, a demo, a server) so that nothing of them outlives the test.

`run(cmd, timeout=...)` starts the command in a new session (its own process group) with a marker variable in its
environment that every process it spawns inherits: torchrun starts each worker in a session of its own, so the
process group alone does not reach them, the marker does. On timeout every marked process is killed (SIGKILL) and
the test fails saying why: the timeout, the command, what it was waiting on (a torch-extensions build lock named in
the output or lying in the build folders) and the output's tail. A non-zero exit fails the test with the output's
tail unless `check=False`. Marked processes that outlive the command are killed too; `Done.left_behind` says
whether there were any. `serve(cmd, ...)` is the same for a long-lived server (a context manager).

While either runs, SIGTERM (e.g. from `timeout 900 pytest ...`) raises KeyboardInterrupt in the test process, so
the clean-up still happens before pytest exits.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

TAIL = 6000
MARK = "SELFRAG_TEST_PROCS"


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str
    pgid: int = 0  # the process group the command ran in (its leader's pid)
    token: str = ""  # the value of MARK in the environment of every process of the run
    left_behind: bool = False  # whether processes of the run outlived the command (`run` then killed them)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a launcher's --master_port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(script: str | os.PathLike, *args: str, nproc: int = 2, port: int | None = None) -> list[str]:
    """`python -m torch.distributed.run --nproc_per_node N` of this interpreter on 127.0.0.1 (a free port unless
    given), running `script` with `args`."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1",
        f"--master_port={port or free_port()}",
        str(script),
        *args,
    ]


def _stats() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, state) of every process we can see."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(entry)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` still runs (zombies excluded)."""
    return any(group == pgid and state != "Z" for _, group, state in _stats().values())


def descendants(pid: int) -> list[int]:
    """The live processes below `pid` in the process tree (children, grandchildren, ...), whatever their session."""
    children: dict[int, list[int]] = {}
    for child, (parent, _, state) in _stats().items():
        if state != "Z":
            children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group `proc` leads and every process below it in the tree (torchrun starts each worker
    in a session of its own, out of reach of the group), then reap `proc`."""
    below = descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in below:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    _wait_gone(below)


def _wait_gone(pids: Sequence[int], seconds: float = 10) -> None:
    """Wait until the killed `pids` have exited (SIGKILL takes effect a moment later)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stats = _stats()
        if all(pid not in stats or stats[pid][2] == "Z" for pid in pids):
            return
        time.sleep(0.05)


def members(token: str) -> list[int]:
    """Pids of the live processes whose environment carries `MARK=token` (a zombie's environment reads empty)."""
    needle = f"{MARK}={token}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry))
    return found


def run_alive(done: Done) -> bool:
    """Whether any process of a finished `run` still runs: its process group or anything carrying its marker."""
    return group_alive(done.pgid) or bool(members(done.token))


def _signal_all(proc: subprocess.Popen, token: str, sig: int) -> None:
    below = descendants(proc.pid) if proc.returncode is None else []  # once reaped, its pid may be another's
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    for pid in {*below, *members(token)}:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def kill_all(proc: subprocess.Popen, token: str) -> None:
    """SIGKILL `proc`'s process group, the processes below it and every process carrying `token`, until none is
    left; reap `proc`."""
    below = descendants(proc.pid) if proc.returncode is None else []
    for _ in range(50):  # a process may fork while we kill: go round until nothing marked is left
        _signal_all(proc, token, signal.SIGKILL)
        if not members(token) and not group_alive(proc.pid):
            break
        time.sleep(0.1)
    proc.wait()
    _wait_gone(below)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while the block runs, so `finally` clauses kill what we started."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _marked(env: dict[str, str] | None) -> tuple[dict[str, str], str]:
    token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    return {**(os.environ if env is None else env), MARK: token}, token


def _lock_roots(env: dict[str, str] | None) -> list[Path]:
    """Folders where the command's torch-extensions builds (DeepSpeed's JIT ops) may wait on a `lock` file."""
    env = os.environ if env is None else env
    if env.get("TORCH_EXTENSIONS_DIR"):
        return [Path(env["TORCH_EXTENSIONS_DIR"])]
    cache = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    ours = Path(env["SELFRAG_CACHE"]) if env.get("SELFRAG_CACHE") else cache / "selfrag"
    return [
        *(root / "torch_extensions" for root in (Path(sys.prefix), ours)),
        cache / "torch_extensions",  # torch's default
    ]


def _why(output: str, env: dict[str, str] | None = None) -> str:
    lock = re.search(r"\S*torch_extensions\S*lock", output)
    if lock:
        return f"waiting on the torch-extensions build lock {lock.group(0)}"
    locks = [str(p) for root in _lock_roots(env) if root.is_dir() for p in root.glob("**/lock")]
    if locks:
        return (
            f"torch-extensions build locks exist (a build in progress, or a stale lock to remove): {', '.join(locks)}"
        )
    return "no progress reason in the output"


def _drain(stream, chunks: list[bytes]) -> None:
    """Read a pipe to its end (every writer gone) into `chunks`."""
    fd = stream.fileno()
    with contextlib.suppress(OSError):  # closed under us after a join timed out
        while piece := os.read(fd, 1 << 16):
            chunks.append(piece)


def run(
    cmd: Sequence[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    check: bool = True,
) -> Done:
    """Run `cmd` in its own process group; kill all of it and fail the test on timeout (see the module docstring).

    The command's end is its own exit, not the end of its output: a worker it left behind (which may still hold the
    pipes) is killed then, not waited for."""
    start = time.monotonic()
    env, token = _marked(env)
    chunks: tuple[list[bytes], list[bytes]] = ([], [])

    def text(i: int) -> str:
        return b"".join(chunks[i]).decode(errors="replace")

    with _sigterm_interrupts():
        proc = subprocess.Popen(
            list(map(str, cmd)),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        pipes = (proc.stdout, proc.stderr)
        readers = [threading.Thread(target=_drain, args=(p, c), daemon=True) for p, c in zip(pipes, chunks)]
        for reader in readers:
            reader.start()
        left_behind = timed_out = False
        try:
            proc.wait(timeout=timeout)
            # Workers a launcher left behind are ended too, so a failed run cannot hold the cores for the next test.
            left_behind = bool(members(token)) or group_alive(proc.pid)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            if proc.returncode is None or left_behind:  # timeout, KeyboardInterrupt, SIGTERM, or leftovers
                kill_all(proc, token)
            for reader in readers:  # every marked writer of the pipes is dead now, so they end
                reader.join(timeout=30)
            proc.stdout.close()
            proc.stderr.close()
        output = text(0) + text(1)
        if timed_out:
            pytest.fail(
                f"timed out after {timeout:.0f} s ({_why(output, env)}); killed the run: {' '.join(map(str, cmd))}\n"
                f"{output[-TAIL:]}"
            )
    done = Done(proc.returncode, text(0), text(1), pgid=proc.pid, token=token, left_behind=left_behind)
    if check and done.returncode != 0:
        pytest.fail(
            f"exited {done.returncode} after {time.monotonic() - start:.0f} s: {' '.join(map(str, cmd))}\n"
            f"{done.output[-TAIL:]}"
        )
    return done


@contextlib.contextmanager
def serve(
    cmd: Sequence[str], *, grace: float = 30, env: dict[str, str] | None = None, **popen: object
) -> Iterator[subprocess.Popen]:
    """Start a long-lived `cmd` (a server) in its own session, marked like `run`; on exit SIGTERM all of it, and
    SIGKILL what is left after `grace` seconds. Extra keywords go to Popen (stdout=..., cwd=...)."""
    env, token = _marked(env)
    with _sigterm_interrupts():
        proc = subprocess.Popen(list(map(str, cmd)), env=env, start_new_session=True, **popen)
        try:
            yield proc
        finally:
            _signal_all(proc, token, signal.SIGTERM)  # the server and the engine processes it spawned
            deadline = time.monotonic() + grace
            while (proc.poll() is None or members(token)) and time.monotonic() < deadline:
                time.sleep(0.2)
            kill_all(proc, token)
