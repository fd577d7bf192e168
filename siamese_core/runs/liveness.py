"""Is a job's process still there, and is it ours? A pid and its start time name one process; a pid alone may have
been reused by another program.

Why this module exists: a run's status file says 'running' until its job writes otherwise, and a killed job never
does; :meth:`Run.status <siamese_core.runs.run.Run.status>` asks here whether the process it records lives, and
reports the run as ``interrupted`` when it does not. :meth:`Run.stop <siamese_core.runs.run.Run.stop>` asks
:func:`job_is_ours` before it sends a signal: only a process whose pid *and* start time match the record is ever
signalled. The identity itself lives in :mod:`siamese_core.core.procs`.
"""

from __future__ import annotations

from ..core.procs import pid_exists, process_start, process_started_at, same_process

# a process created this long after the status recorded its pid cannot be the process that status names
_SLACK_S = 1.0


def job_is_ours(st: dict) -> bool:
    """Whether the process ``st`` records (``pid`` and ``pid_start``) is certainly the job: both match a live process.
    A record without a start time is never certain: nothing may be sent to it."""
    return same_process(st.get("pid"), st.get("pid_start"))


def job_alive(st: dict) -> bool:
    """Is the job process that ``st`` records (``pid``, started at ``pid_start``) still there?

    With a start time: the live process with that pid must have started then. Without one (a status written before
    start times were recorded): a process with that pid counts only if it already existed when the status was last
    written (``updated``) — a process started later has merely been given the same pid. Where start times cannot be
    read at all (no ``/proc``), a live pid counts."""
    pid, started = st.get("pid"), st.get("pid_start")
    if not pid or not pid_exists(pid):
        return False
    if started is not None:
        now = process_start(pid)
        return now is None or now == started
    born, updated = process_started_at(pid), st.get("updated")
    if born is None or updated is None:
        return born is None
    return born <= float(updated) + _SLACK_S


__all__ = ["process_start", "job_alive", "job_is_ours"]
