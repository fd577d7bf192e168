"""File locks that give up: wait a bounded time, then say in one line who holds the lock.

Why this module exists: an ``flock`` that blocks forever turns a slow or stuck process into a hang somewhere else (a
second ``index`` on the same dataset, a dashboard page), with nothing on the screen. :func:`file_lock` waits at most
``wait_s`` seconds, then raises a :class:`LockTimeout` naming the lock, the holder (pid, command, since when) and the
fix. The kernel releases an ``flock`` when its process dies, so a lock is never stale; the holder's description is
written into the lock file just after the lock is taken.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from pathlib import Path

from .errors import SiameseError
from .procs import process_start, same_process

POLL_S = 0.02


class LockTimeout(SiameseError):
    """A lock stayed held longer than the caller would wait."""


def _command() -> str:
    argv = [os.path.basename(sys.argv[0]) if sys.argv else "python"] + sys.argv[1:]
    text = " ".join(argv)
    return text if len(text) <= 120 else text[:117] + "..."


def holder(path) -> str:
    """Who holds the lock at ``path``, as words: 'pid 4242 (siamese_core index --dataset d) since 12:01:07'."""
    try:
        info = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    pid = info.get("pid")
    if not pid:
        return "another process"
    since = time.strftime("%H:%M:%S", time.localtime(info["since"])) if info.get("since") else "?"
    who = f"pid {pid}" + (f" ({info['cmd']})" if info.get("cmd") else "") + f" since {since}"
    return who if same_process(pid, info.get("start")) or info.get("start") is None else f"{who}, or its successor"


def try_lock(fd: int, shared: bool = False) -> bool:
    """Take the lock on ``fd`` now if it is free (True), else False."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def open_lock_file(path) -> int:
    """The lock file's descriptor (created with the user's umask; readable by everyone who may read the folder)."""
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)


def note_holder(fd: int) -> None:
    """Write this process into the lock file it holds, for :func:`holder`."""
    info = {"pid": os.getpid(), "start": process_start(os.getpid()), "cmd": _command(), "since": time.time()}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
    except OSError:
        pass  # a full disk: the lock still works, only the message names nobody


@contextlib.contextmanager
def file_lock(path, what: str, wait_s: float, fix: str = "wait for it to finish, or stop it", shared: bool = False,
              note: bool = True):
    """``with file_lock(path, "the search index of ...", 60):`` — exclusive (or ``shared``) while inside; waits at
    most ``wait_s`` seconds, then raises :class:`LockTimeout`: '<what> is busy: locked by <holder> (lock file
    <path>); waited 60 s; <fix>'. ``note`` False leaves the lock file as it is (a lock held for microseconds, many
    times a second, need not say who holds it)."""
    path = Path(path)
    try:
        fd = open_lock_file(path)
    except OSError as e:
        raise SiameseError(f"cannot open the lock file {path} ({e.strerror or e})") from None
    try:
        deadline = time.monotonic() + max(0.0, wait_s)
        while not try_lock(fd, shared):
            if time.monotonic() >= deadline:
                raise LockTimeout(f"{what} is busy: locked by {holder(path)} (lock file {path}); waited {wait_s:g} s; "
                                  f"{fix}")
            time.sleep(POLL_S)
        if note and not shared:
            note_holder(fd)
        yield fd
    finally:
        os.close(fd)


__all__ = ["file_lock", "holder", "try_lock", "open_lock_file", "note_holder", "LockTimeout"]
