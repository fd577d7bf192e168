"""Is a job's process still there? A pid and its start time (from ``/proc``) name one process; a pid alone may
have been reused by another program.

Why this module exists: a run's status file says 'running' until its job writes otherwise, and a killed job never
does; :meth:`Run.status <siamese_core.runs.run.Run.status>` asks here whether the process it records lives, and
reports the run as ``interrupted`` when it does not.
"""

from __future__ import annotations

import os
from pathlib import Path


def process_start(pid) -> int | None:
    """When process ``pid`` started (clock ticks since boot, field 22 of /proc/PID/stat); None if unknown.
    Together with the pid it names one process: a pid can be reused, the pair cannot."""
    try:
        return int(Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError, TypeError):
        return None


def job_alive(st: dict) -> bool:
    """Is the job process that ``st`` records still there (``pid``, started at ``pid_start``)?"""
    pid, started = st.get("pid"), st.get("pid_start")
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    now = process_start(pid)
    if started is not None and now is not None:
        return now == started  # otherwise the pid was reused by another process
    try:  # no start time recorded (or no /proc): a recycled pid most likely belongs to another program
        cmd = Path(f"/proc/{int(pid)}/cmdline").read_bytes()
        return b"siamese_core" in cmd or b"python" in cmd
    except OSError:
        return True


__all__ = ["process_start", "job_alive"]
