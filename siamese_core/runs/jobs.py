"""Start a training job in a process of its own, which outlives the dashboard that launched it.

The launcher takes the one-job lock (:mod:`.lock`) before the process starts and hands it over, so two launches
at once cannot both start; the job then runs ``python -m siamese_core _job RUN_ID`` (:mod:`siamese_core.cli`).
"""

from __future__ import annotations

import os

from ..core.config import RunConfig, workspace_dir
from .liveness import process_start
from .lock import acquire_train_lock
from .registry import create_run, new_run_id, open_run
from .run import Run


def launch_background(cfg: RunConfig, workspace=None, run_id: str | None = None, resume: bool = False) -> Run:
    """Start training in a separate process that outlives the caller; returns the run.

    The lock is taken here, before the process starts, and handed to it, so two launches at once
    cannot both start: the second gets a RunError naming the running job.
    """
    import subprocess
    import sys

    ws = workspace_dir(workspace)
    rid = run_id or new_run_id(cfg.model.preset, ws)
    fd = acquire_train_lock(rid, ws)
    try:
        run = open_run(rid, ws) if resume else create_run(cfg, ws, rid)
        run.clear_stop()
        run.write_status("queued", reset=True, pid=None, pid_start=None, error=None)
        log = open(run.log_path, "ab")
        cmd = [sys.executable, "-m", "siamese_core", "--workspace", str(ws), "_job", rid] + (["--resume"] if resume else [])
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                pass_fds=(fd,), env={**os.environ, "SIAMESE_LOCK_FD": str(fd)},
                                start_new_session=True, cwd=os.getcwd())
        log.close()
        run.write_status("queued", pid=proc.pid, pid_start=process_start(proc.pid))
        return run
    finally:
        os.close(fd)  # the child holds its own copy of the lock


__all__ = ["launch_background"]
