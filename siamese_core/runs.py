"""A run is a directory; this module knows its layout, its status, and the one-job lock.

``<workspace>/runs/<run_id>/`` holds ``config.json``, ``status.json``, ``metrics.jsonl`` (appended
live by the training callback), ``checkpoint.keras`` (last completed epoch), ``model.keras``,
``pairs.npz``, ``val_scores.npz``, ``threshold.json`` and ``train.log``. Status moves
queued → running → finishing (saving the model, scoring validation) → finished | failed | stopped; a run whose process died without saying so is
reported as ``interrupted``. Only one training job runs per workspace: the job holds an ``flock`` on
``<workspace>/train.lock`` for its lifetime, which the kernel releases when the process dies, so a
stale lock never blocks anyone.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from .config import RunConfig, workspace_dir
from .errors import RunError
from .store import check_name, write_json_atomic

# The model bundled with the package: a finished, read-only run that every workspace sees under this id
# (a workspace run of the same name takes precedence). See siamese_core/pretrained/MODEL_CARD.md.
PRETRAINED = "pretrained"
BUNDLED_DIR = Path(__file__).resolve().parent / "pretrained"


def runs_dir(workspace=None) -> Path:
    return workspace_dir(workspace) / "runs"


def is_bundled(run_dir: Path) -> bool:
    return Path(run_dir).resolve() == BUNDLED_DIR


def run_path(run_id: str, workspace=None) -> Path:
    check_name(run_id, "run")
    p = runs_dir(workspace) / run_id
    if run_id == PRETRAINED and not (p / "config.json").exists() and (BUNDLED_DIR / "config.json").exists():
        return BUNDLED_DIR
    return p


def open_run(run_id: str, workspace=None) -> Path:
    p = run_path(run_id, workspace)
    if not (p / "config.json").exists():
        have = list_runs(workspace)
        raise RunError(f"run {run_id!r} not found in {runs_dir(workspace)}; "
                       + (f"available: {', '.join(have[-5:])}" if have else "train one with: python -m siamese_core train"))
    return p


def new_run_id(preset: str, workspace=None) -> str:
    base = time.strftime("%Y%m%d-%H%M%S") + f"-{preset}"
    rid, k = base, 1
    while run_path(rid, workspace).exists():
        k += 1
        rid = f"{base}-{k}"
    return rid


def list_runs(workspace=None) -> list[str]:
    """Run ids in the workspace, plus the bundled ``pretrained`` run."""
    d = runs_dir(workspace)
    have = {p.name for p in d.iterdir() if (p / "config.json").exists()} if d.is_dir() else set()
    if (BUNDLED_DIR / "config.json").exists():
        have.add(PRETRAINED)
    return sorted(have)


def read_config(run_dir: Path) -> RunConfig:
    return RunConfig.from_dict(json.loads((Path(run_dir) / "config.json").read_text()))


def process_start(pid) -> int | None:
    """When process ``pid`` started (clock ticks since boot, field 22 of /proc/PID/stat); None if unknown.
    Together with the pid it names one process: a pid can be reused, the pair cannot."""
    try:
        return int(Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError, TypeError):
        return None


def _job_alive(st: dict) -> bool:
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


def read_status(run_dir: Path) -> dict:
    """The run's status dict; a 'running'/'queued' run whose process is gone reads as 'interrupted'."""
    p = Path(run_dir) / "status.json"
    try:
        st = json.loads(p.read_text())
    except (OSError, ValueError):
        return {"status": "unknown"}
    if st.get("status") in ("running", "queued", "finishing") and not _job_alive(st):
        if st.get("status") == "queued" and time.time() - st.get("updated", 0) < 30:
            return st  # just launched, child not yet reporting
        st = {**st, "status": "interrupted",
              "error": "the training process ended without finishing (killed?); resume it to continue"}
    return st


_LIVE_RANK = {"queued": 0, "running": 1, "finishing": 2}


def write_status(run_dir: Path, status: str, reset: bool = False, **fields) -> dict:
    """Merge ``fields`` into status.json and set ``status``, under the run's status lock.

    Within one launch a status never goes backwards (queued → running → finishing → an end): the
    launcher's late 'queued' cannot undo the job's 'running'. ``reset`` marks the first write of a new
    launch or process (a run being created or resumed), which may start again from 'queued'/'running'."""
    p = Path(run_dir) / "status.json"
    fd = os.open(Path(run_dir) / "status.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held for a read and an atomic rename: microseconds
        try:
            old = json.loads(p.read_text())
        except (OSError, ValueError):
            old = {}
        prev = old.get("status")
        if not reset and prev in _LIVE_RANK and status in _LIVE_RANK and _LIVE_RANK[status] < _LIVE_RANK[prev]:
            status = prev
        st = {**old, **fields, "status": status, "updated": time.time()}
        write_json_atomic(p, st)
        return st
    finally:
        os.close(fd)


def request_stop(run_dir: Path) -> None:
    """Ask a running job to stop after its current batch (it keeps its last checkpoint)."""
    (Path(run_dir) / "stop").touch()


def stop_requested(run_dir: Path) -> bool:
    return (Path(run_dir) / "stop").exists()


def read_metrics(run_dir: Path) -> list[dict]:
    """All complete lines of metrics.jsonl (a line being written is skipped)."""
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def read_threshold(run_dir: Path) -> float:
    return float(json.loads((Path(run_dir) / "threshold.json").read_text())["threshold"])


def save_threshold(run_dir: Path, threshold: float, source: str = "user") -> None:
    if is_bundled(run_dir):
        raise RunError(f"the bundled run {PRETRAINED!r} is read-only; calibrate a copy for your imagery: "
                       f"python -m siamese_core calibrate --run {PRETRAINED} --pairs LABELLED.csv --as NAME")
    write_json_atomic(Path(run_dir) / "threshold.json", {"threshold": float(threshold), "source": source,
                                                         "saved": time.strftime("%Y-%m-%dT%H:%M:%S")})


# --- the one-job lock -------------------------------------------------------------------------

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
        alive = False
        if pid:
            try:
                os.kill(int(pid), 0)
                alive = True
            except (ProcessLookupError, ValueError, TypeError):
                pass
            except PermissionError:
                alive = True
        if alive or time.monotonic() > deadline:
            return info.get("run_id", "another job") if alive else "another job"
        time.sleep(0.01)


def acquire_train_lock(run_id: str, workspace=None) -> int:
    """Take the workspace's training lock; returns its fd (keep it open while training).

    Raises RunError naming the job that holds it. The lock dies with the process holding it.
    """
    path = _lock_path(workspace)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _flock_patiently(fd)
    except BlockingIOError:
        holder = _holder(path)
        os.close(fd)
        raise RunError(f"a training job is already running ({holder}); wait for it to finish or stop it first") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"run_id": run_id, "pid": os.getpid(), "since": time.time()}).encode())
    os.set_inheritable(fd, True)
    return fd


def active_job(workspace=None) -> str | None:
    """The run id of the training job holding the lock, or None when no job runs."""
    path = _lock_path(workspace)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
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


def create_run(cfg: RunConfig, workspace=None, run_id: str | None = None) -> Path:
    """Make the run directory with its config.json and a 'queued' status; refuse an existing id."""
    from .store import open_dataset
    open_dataset(cfg.dataset, workspace)  # fail early, with the list of datasets
    run_id = run_id or new_run_id(cfg.model.preset, workspace)
    path = run_path(run_id, workspace)
    if path.exists():
        raise RunError(f"run {run_id!r} already exists; choose another --run-id or resume it with --resume")
    path.mkdir(parents=True)
    write_json_atomic(path / "config.json", cfg.to_dict())
    write_status(path, "queued", reset=True, pid=None)
    return path


def launch_background(cfg: RunConfig, workspace=None, run_id: str | None = None, resume: bool = False) -> Path:
    """Start training in a separate process that outlives the caller; returns the run directory.

    The lock is taken here, before the process starts, and handed to it, so two launches at once
    cannot both start: the second gets a RunError naming the running job.
    """
    import subprocess
    import sys

    ws = workspace_dir(workspace)
    rid = run_id or new_run_id(cfg.model.preset, ws)
    fd = acquire_train_lock(rid, ws)
    try:
        path = open_run(rid, ws) if resume else create_run(cfg, ws, rid)
        (path / "stop").unlink(missing_ok=True)
        write_status(path, "queued", reset=True, pid=None, pid_start=None, error=None)
        log = open(path / "train.log", "ab")
        cmd = [sys.executable, "-m", "siamese_core", "--workspace", str(ws), "_job", rid] + (["--resume"] if resume else [])
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                pass_fds=(fd,), env={**os.environ, "SIAMESE_LOCK_FD": str(fd)},
                                start_new_session=True, cwd=os.getcwd())
        log.close()
        write_status(path, "queued", pid=proc.pid, pid_start=process_start(proc.pid))
        return path
    finally:
        os.close(fd)  # the child holds its own copy of the lock


def stop_run(run_dir: Path, wait_s: float = 0.0) -> dict:
    """Request a stop; if the process is still training after ``wait_s`` seconds, terminate it.

    A job that is already saving its model ('finishing') is left to finish."""
    import signal
    request_stop(run_dir)
    deadline = time.time() + wait_s
    st = read_status(run_dir)
    while wait_s and time.time() < deadline and st.get("status") in ("running", "queued", "finishing"):
        time.sleep(0.2)
        st = read_status(run_dir)
    if wait_s and st.get("status") in ("running", "queued") and _job_alive(st):
        os.kill(int(st["pid"]), signal.SIGTERM)
    return st


CHECKPOINT_FILES = ("checkpoint.keras", "checkpoint.b.keras")  # written in turn; checkpoint.json names the latest


def checkpoint_path(run_dir: Path) -> Path | None:
    """The run's latest complete checkpoint (named by ``checkpoint.json``), or None."""
    try:
        info = json.loads((Path(run_dir) / "checkpoint.json").read_text())
    except (OSError, ValueError):
        return None
    name = info.get("file", CHECKPOINT_FILES[0]) if isinstance(info, dict) else CHECKPOINT_FILES[0]
    p = Path(run_dir) / name
    return p if name in CHECKPOINT_FILES and p.exists() else None


def checkpoint_epoch(run_dir: Path) -> int:
    try:
        return int(json.loads((Path(run_dir) / "checkpoint.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def resume_check(run_dir: Path) -> None:
    """Refuse, in one line, to resume a run that is live, finished, or has no checkpoint to continue from."""
    st = read_status(run_dir)
    if st.get("status") in ("running", "queued", "finishing"):
        raise RunError(f"run {run_dir.name} is still {st['status']}; stop it before resuming")
    if st.get("status") == "finished":
        raise RunError(f"run {run_dir.name} already finished; start a new run to train more")
    if checkpoint_path(run_dir) is None:
        raise RunError(f"run {run_dir.name} has no checkpoint yet (it stopped during its first epoch); "
                       f"launch a new run instead")
