"""Where DeepSpeed's just-in-time built C++ ops live, and a clear error instead of an endless wait on a dead build.

On a machine without prebuilt DeepSpeed ops (every CPU install: the sdist builds none), `deepspeed.init_distributed`
compiles `deepspeed_shm_comm` and an offloaded optimizer compiles `cpu_adam`, both with
`torch.utils.cpp_extension.load`. That function guards each build folder with a file `<folder>/lock`: whoever creates
it builds, everyone else polls until it disappears. A build killed hard (SIGKILL, a timeout that kills the process
group, a crash) leaves the file behind, and from then on every run polls forever without a word.

`prepare_torch_extensions()`, called right before `import deepspeed` (`import_deepspeed()` does both):

* gives the builds a folder of the project's own when `TORCH_EXTENSIONS_DIR` is unset:
  `<venv>/torch_extensions/<py>_<acc>` in a writable virtual environment (it goes with the venv), else
  `<cache>/torch_extensions/<py>_<acc>` with `<cache>` = `$SELFRAG_CACHE`, or `$XDG_CACHE_HOME/selfrag`, or
  `~/.cache/selfrag` (`<py>_<acc>` is torch's own subfolder name, e.g. `py311_cpu`);
* raises `ConfigError` for a lock that is older than this process and that no process holds open (the builder keeps
  its lock file open for the whole build). A lock created after this process started is a sibling rank's build and
  is waited on as usual; so is an older one that a live process holds open (another run building right now).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from selfrag.errors import ConfigError

logger = logging.getLogger(__name__)

ENV = "TORCH_EXTENSIONS_DIR"
# A lock at most this many seconds older than our own start may still be a sibling's: launchers start all ranks
# within a fraction of a second, and a rank reaches its first build only after importing torch (seconds).
SLACK_S = 5.0


def _build_folder_name() -> str:
    """torch's per-build subfolder of its default root (`py311_cpu`, `py311_cu121`, ...)."""
    import torch

    if torch.version.hip is not None:
        accelerator = "rocm" + torch.version.hip.replace(".", "")
    elif torch.version.cuda is not None:
        accelerator = "cu" + torch.version.cuda.replace(".", "")
    else:
        accelerator = "cpu"
    return f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}_{accelerator}"


def in_writable_venv() -> bool:
    return sys.prefix != sys.base_prefix and os.access(sys.prefix, os.W_OK)


def user_cache_root() -> Path:
    """The project's cache outside a venv: `$SELFRAG_CACHE`, else `$XDG_CACHE_HOME/selfrag`, else `~/.cache/selfrag`."""
    if os.environ.get("SELFRAG_CACHE"):
        return Path(os.environ["SELFRAG_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "selfrag"


def project_extensions_dir() -> Path:
    """The folder `prepare_torch_extensions` picks when `TORCH_EXTENSIONS_DIR` is unset."""
    root = Path(sys.prefix) if in_writable_venv() else user_cache_root()
    return root / "torch_extensions" / _build_folder_name()


def process_start_time(pid: int | str = "self") -> float | None:
    """When process `pid` started (seconds since the epoch), from /proc or psutil; None where neither answers."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            ticks = int(handle.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks after boot
        with open("/proc/stat") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    try:
        import psutil

        return psutil.Process(None if pid == "self" else int(pid)).create_time()
    except Exception:  # noqa: BLE001 - psutil missing or the process gone: no start time
        return None


def lock_files(root: Path) -> list[Path]:
    """The build locks under an extensions root (one folder per op: `<root>/<op>/lock`)."""
    return sorted(root.glob("*/lock")) if root.is_dir() else []


def holders(path: Path) -> list[int]:
    """Ids of the processes (of those whose open files we may read) that hold `path` open; Linux only, else []."""
    target = os.path.realpath(path)
    found = []
    try:
        pids = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    found.append(int(pid))
                    break
            except OSError:
                continue
    return found


def stale_locks(root: Path, started: float | None = None) -> list[Path]:
    """Locks under `root` left by a dead build: older than `started` (default: this process's start) minus
    `SLACK_S`, and held open by no process."""
    started = process_start_time() if started is None else started
    if started is None:  # no start time to compare with: never call a lock stale
        return []
    stale = []
    for lock in lock_files(root):
        try:
            mtime = lock.stat().st_mtime
        except FileNotFoundError:  # released while we looked
            continue
        if mtime < started - SLACK_S and not holders(lock):
            stale.append(lock)
    return stale


def prepare_torch_extensions() -> Path:
    """Point `TORCH_EXTENSIONS_DIR` at the project's folder unless it is set, and refuse to start on a stale build
    lock there (see the module docstring). Returns the folder. Call it before `import deepspeed`."""
    if os.environ.get(ENV):
        root = Path(os.environ[ENV])
    else:
        root = project_extensions_dir()
        os.environ[ENV] = str(root)
        logger.debug("torch extensions (DeepSpeed's JIT-built ops) go to %s", root)
    for lock in stale_locks(root):
        try:
            age = f"{time.time() - lock.stat().st_mtime:.0f} s old, "
        except FileNotFoundError:  # removed meanwhile
            continue
        raise ConfigError(
            f"stale torch-extensions build lock {lock} ({age}held open by no process): an interrupted build left it "
            f"and every run would wait on it forever; if no other build is running, remove it: rm {lock}"
        )
    return root


def import_deepspeed() -> Any:
    """`import deepspeed`, after `prepare_torch_extensions()`: the JIT builds it may start (`deepspeed_shm_comm` at
    `init_distributed`, `cpu_adam` for an offloaded optimizer) go to the project's folder, never wait on a dead lock."""
    prepare_torch_extensions()
    import deepspeed

    return deepspeed
