"""The one-job lock: only one training job runs per workspace.

The job holds an ``flock`` on ``<workspace>/train.lock`` for its lifetime, which the kernel releases when the
process dies, so a stale lock never blocks anyone; the file also names the job holding it, for messages.
:func:`no_launch` holds it for a moment, so that no job starts while a dataset or a run is deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

from ..core.config import workspace_dir
from ..core.errors import RunError
from ..core.locks import open_lock_file
from ..core.procs import pid_exists, process_start, same_process


def _lock_path(workspace=None) -> Path:
    d = workspace_dir(workspace)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # e.g. a path under a regular file, or a read-only disk
        raise RunError(f"cannot write to workspace {d}: {e.strerror or e}") from None
    return d / "train.lock"


PROBE_GRACE_S = 0.5


def _flock_patiently(fd: int) -> None:
    """Exclusive lock, retried for PROBE_GRACE_S: :func:`active_job` probes take the shared lock for a
    moment, and a launch that meets one of those probes must not read it as a running job."""
    deadline = time.monotonic() + PROBE_GRACE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


def _holder(path: Path) -> str:
    """The run id written in the lock file by the job holding it. A job writes it just after taking the
    lock, so for a moment the file may still name the previous (ended) job: wait for a live pid."""
    deadline = time.monotonic() + 0.5
    while True:
        try:
            info = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        pid = info.get("pid")
        alive = bool(pid) and (same_process(pid, info["start"]) if info.get("start") is not None else pid_exists(pid))
        if alive or time.monotonic() > deadline:
            return info.get("run_id", "another job") if alive else "another job"
        time.sleep(0.01)


def acquire_train_lock(run_id: str, workspace=None) -> int:
    """Take the workspace's training lock; returns its fd (keep it open while training).

    Raises RunError naming the job that holds it. The lock dies with the process holding it.
    """
    path = _lock_path(workspace)
    fd = open_lock_file(path)
    try:
        _flock_patiently(fd)
    except BlockingIOError:
        holder = _holder(path)
        os.close(fd)
        raise RunError(f"a training job is already running ({holder}); wait for it to finish or stop it first") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"run_id": run_id, "pid": os.getpid(), "start": process_start(os.getpid()),
                             "since": time.time()}).encode())
    os.set_inheritable(fd, True)
    return fd


def active_job(workspace=None) -> str | None:
    """The run id of the training job holding the lock, or None when no job runs."""
    path = _lock_path(workspace)
    fd = open_lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        try:
            return json.loads(path.read_text() or "{}").get("run_id", "?")
        except ValueError:
            return "?"
    finally:
        os.close(fd)


@contextlib.contextmanager
def no_launch(workspace=None):
    """While inside, no training job can start in the workspace. Yields None when the training lock was free
    (it is held here until the block ends), else the id of the job holding it (which, while it holds it, keeps
    any other job from starting)."""
    path = _lock_path(workspace)
    fd = open_lock_file(path)
    try:
        try:
            _flock_patiently(fd)
        except BlockingIOError:
            yield _holder(path)
        else:
            yield None
    finally:
        os.close(fd)


__all__ = ["acquire_train_lock", "active_job", "no_launch", "PROBE_GRACE_S"]
