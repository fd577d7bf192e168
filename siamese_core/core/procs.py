"""Which process is which: a pid and its start time name one process, and a file's owner tag names the process
that wrote it.

Why this module exists: a pid alone is reused by the kernel, so "the job with pid 4242" may by now be an editor, a
shell, another user's server. Three things need to know for sure whether a process is still the one they recorded:
a run's status (is its job alive?), ``stop`` (may it send SIGTERM?), and the workspace sweep (may it remove a
temporary folder, or is its writer still at work?). All of them ask here.

* :func:`process_start` — when a process started, in clock ticks since boot (``/proc/PID/stat``, field 22): with the
  pid, an identity that is never reused. :func:`same_process` compares the pair.
* :func:`owner_tag` — ``@<machine>-<pid>-<start>``, put into the name of every temporary file and folder the package
  writes (:mod:`.files`); :func:`owner_state` reads it back: ``alive``, ``dead`` or ``unknown`` (written on another
  machine or in another pid namespace, which this process cannot see).

Start times come from ``/proc`` (Linux). Where there is none, a start time is unknown: nothing is ever signalled
then, and a process counts as alive while its pid exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import socket
import threading
from pathlib import Path

OWNER = re.compile(r"@([0-9a-f]{8})-(\d+)-(\d+)")


def process_start(pid) -> int | None:
    """When process ``pid`` started (clock ticks since boot, field 22 of /proc/PID/stat); None if unknown.
    Together with the pid it names one process: a pid can be reused, the pair cannot."""
    try:
        return int(Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError, TypeError):
        return None


def process_started_at(pid) -> float | None:
    """When process ``pid`` started, in seconds since the epoch (boot time + its start ticks); None if unknown."""
    ticks = process_start(pid)
    if ticks is None:
        return None
    try:
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration):
        return None


def pid_exists(pid) -> bool:
    """Whether some process (any user's) has pid ``pid`` now. Sends nothing (signal 0 only checks)."""
    try:
        pid = int(pid)
        if pid <= 0:
            return False
        os.kill(pid, 0)
    except (ProcessLookupError, ValueError, TypeError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def same_process(pid, start) -> bool:
    """Whether process ``pid`` is the one that started at ``start`` (ticks, :func:`process_start`). False when
    either is unknown: identity cannot be confirmed, so nothing may be done to it."""
    if not pid or start is None:
        return False
    now = process_start(pid)
    return now is not None and now == int(start)


def _machine() -> str:
    """8 hex digits naming this machine and pid namespace: a pid means something only where it was taken."""
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        ns = ""
    return hashlib.sha1(f"{socket.gethostname()}|{ns}".encode()).hexdigest()[:8]


_SELF: dict = {}


def _me() -> dict:
    """This process's machine id, pid, start and tag (computed again after a fork)."""
    pid = os.getpid()
    if _SELF.get("pid") != pid:
        machine, start = _machine(), process_start(pid) or 0
        _SELF.update(pid=pid, machine=machine, start=start, tag=f"@{machine}-{pid}-{start}")
    return _SELF


def owner_tag() -> str:
    """``@<machine>-<pid>-<start>`` of this process."""
    return _me()["tag"]


def owner_state(name: str) -> str | None:
    """Whether the process named by the owner tag in ``name`` lives: 'alive', 'dead', 'unknown' (another machine
    or pid namespace), or None when ``name`` carries no tag."""
    m = OWNER.search(name)
    if m is None:
        return None
    machine, pid, start = m.group(1), int(m.group(2)), int(m.group(3))
    me = _me()
    if machine != me["machine"]:
        return "unknown"
    if pid == me["pid"] and start == me["start"]:
        return "alive"
    if start == 0:  # written where start times are unknown: the pid is all there is
        return "alive" if pid_exists(pid) else "dead"
    return "alive" if same_process(pid, start) else "dead"


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception in the main thread (:func:`sigterm_raises`), so that the code unwinds: a
    temporary file is removed, a lock released, a training run recorded as 'stopped'."""


def _raise_terminated(signum, frame):
    raise Terminated("stopped by SIGTERM")


@contextlib.contextmanager
def sigterm_raises():
    """While inside, SIGTERM raises :class:`Terminated` in the main thread (elsewhere: nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


__all__ = ["Terminated", "sigterm_raises", "OWNER", "process_start", "process_started_at", "pid_exists", "same_process",
           "owner_tag", "owner_state"]
