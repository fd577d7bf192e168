"""Work is never lost: killed, stopped and competing training jobs, with real processes.

Three jobs start together in three workspaces, so their TensorFlow start-ups overlap (each is a tiny
'seed' run: 12 synthetic tiles of 32 px, batch 8, 2 steps per epoch):

* A: ``python -m siamese_core train`` in a subprocess, SIGKILLed once its first checkpoint exists (by whichever
  test needs it first, :func:`_killed`), then resumed with ``train --resume`` in a copy of its workspace, so that
  no test depends on another having run, or not run, before it;
* B: two ``launch_background`` calls at the same instant (exactly one may win), then ``Run.stop``;
* C: ``launch_background`` and a stop request while the job is still queued (starting up).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from siamese_core.core.config import DataConfig, RunConfig
from siamese_core.core.errors import RunError
from siamese_core.data.store import build_dataset
from siamese_core.runs.jobs import launch_background
from siamese_core.runs.liveness import process_start
from siamese_core.runs.lock import active_job
from siamese_core.runs.registry import list_runs
from siamese_core.runs.run import PRETRAINED, Run

pytestmark = pytest.mark.slow  # real training processes, killed, stopped and resumed

ROOT = Path(__file__).resolve().parents[1]
EPOCHS_A = 8
FINAL = ("finished", "stopped", "failed", "interrupted")


def cli(*args) -> int:
    from siamese_core.cli import main
    return main([str(a) for a in args])


def _cfg(epochs: int) -> RunConfig:
    return RunConfig.for_preset("d", "seed", epochs=epochs, batch_size=8, steps_per_epoch=2)


def _gone(pid) -> bool:
    """The process has exited (a zombie not yet reaped by its parent counts as exited)."""
    try:
        return Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, ValueError, IndexError):
        return True


def _wait(cond, timeout: float, what: str, log: Path | None = None):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    base = tmp_path_factory.mktemp("jobs")
    ws = SimpleNamespace(a=base / "a", b=base / "b", c=base / "c")
    for w in vars(ws).values():
        build_dataset(DataConfig(limit=12, size=32), "d", w)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    mp = pytest.MonkeyPatch()
    mp.chdir(ROOT)  # launch_background starts `python -m siamese_core` in the current directory
    mp.setenv("PYTHONPATH", str(ROOT))
    pids = []
    try:
        log_a = base / "a.log"
        with open(log_a, "wb") as log:
            proc_a = subprocess.Popen(
                [sys.executable, "-m", "siamese_core", "--workspace", str(ws.a), "train", "--dataset", "d",
                 "--preset", "seed", "--epochs", str(EPOCHS_A), "--batch-size", "8", "--steps-per-epoch", "2",
                 "--run-id", "killed", "--verbose", "0"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        pids.append(proc_a.pid)

        launched: dict[str, object] = {}
        barrier = threading.Barrier(2)

        def launch(rid):
            barrier.wait()
            try:
                launched[rid] = launch_background(_cfg(500), ws.b, run_id=rid).path  # stopped long before the end
            except RunError as e:
                launched[rid] = e
        threads = [threading.Thread(target=launch, args=(rid,)) for rid in ("left", "right")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)

        run_c = launch_background(_cfg(60), ws.c, run_id="early").path
        Run(run_c).stop()  # wait_s=0: only the request, while the job is still starting
        for d in [p for p in launched.values() if isinstance(p, Path)] + [run_c]:
            pids.append(Run(d).status().get("pid"))
        yield SimpleNamespace(ws=ws, proc_a=proc_a, log_a=log_a, launched=launched, run_c=run_c)
    finally:
        mp.undo()
        for pid in pids:  # only the processes started here
            if pid and not _gone(pid):
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.waitpid(int(pid), os.WNOHANG)  # reap our children
            except (ChildProcessError, TypeError, ValueError):
                pass


def test_two_launches_at_once_only_one_runs(jobs):
    wins = {rid: v for rid, v in jobs.launched.items() if isinstance(v, Path)}
    losses = {rid: v for rid, v in jobs.launched.items() if isinstance(v, RunError)}
    assert len(wins) == 1 and len(losses) == 1, jobs.launched
    (winner,), (loser, err) = wins, next(iter(losses.items()))
    assert "a training job is already running" in str(err) and "\n" not in str(err)
    assert not (jobs.ws.b / "runs" / loser).exists()  # the refused launch left nothing behind
    assert active_job(jobs.ws.b) == winner
    with pytest.raises(RunError, match="already running"):
        launch_background(_cfg(1), jobs.ws.b, run_id="third")
    assert cli("--workspace", jobs.ws.b, "train", "--dataset", "d", "--epochs", 1, "--run-id", "fourth") == 2
    assert [r for r in list_runs(jobs.ws.b) if r != PRETRAINED] == [winner]


def _killed(jobs) -> Path:
    """Job A's run, SIGKILLed once its first checkpoint exists (the first call waits for it and kills the job)."""
    run = jobs.ws.a / "runs" / "killed"
    if jobs.proc_a.poll() is None:
        _wait(lambda: (run / "checkpoint.json").exists() or jobs.proc_a.poll() is not None, 300,
              "the first checkpoint of job A", jobs.log_a)
        jobs.proc_a.send_signal(signal.SIGKILL)
    assert jobs.proc_a.wait(30) == -signal.SIGKILL, "job A ended before it was killed"
    return run


def test_sigkill_leaves_an_interrupted_run_with_a_loadable_checkpoint(jobs):
    from siamese_core.learn.model import load_model_safe
    run = _killed(jobs)
    epoch = json.loads((run / "checkpoint.json").read_text())["epoch"]
    assert 1 <= epoch < EPOCHS_A, "the job was not killed mid-way"
    assert json.loads((run / "status.json").read_text())["status"] == "running"  # what the dead job left
    st = Run(run).status()
    assert st["status"] == "interrupted" and "resume" in st["error"]
    model = load_model_safe(Run(run).checkpoint_path())
    assert len(model.inputs) == 2
    # the lock file is still there, naming the dead job, but no longer held by anyone
    assert json.loads((jobs.ws.a / "train.lock").read_text())["run_id"] == "killed"
    assert active_job(jobs.ws.a) is None


def test_stop_run_ends_a_background_job_within_seconds(jobs):
    from siamese_core.learn.model import load_model_safe
    (run,) = [p for p in jobs.launched.values() if isinstance(p, Path)]
    _wait(lambda: (run / "checkpoint.json").exists() or Run(run).status()["status"] in FINAL, 300,
          "the first checkpoint of job B", run / "train.log")
    pid = Run(run).status()["pid"]
    t0 = time.time()
    st = Run(run).stop(wait_s=10)
    stopped_after = time.time() - t0
    _wait(lambda: _gone(pid), 20, "job B to exit", run / "train.log")
    # 'stopped' is only ever written by the job itself, so the SIGTERM fallback did not fire
    # (≈ 1.5 s on an idle 2-core machine; the margin is for loaded CI runners)
    assert st["status"] == "stopped" and Run(run).status()["status"] == "stopped", (st, stopped_after)
    assert stopped_after < 10
    epoch = json.loads((run / "checkpoint.json").read_text())["epoch"]
    assert epoch < 500
    assert len(load_model_safe(Run(run).checkpoint_path()).inputs) == 2
    assert active_job(jobs.ws.b) is None


def test_stop_requested_while_queued_is_not_lost(jobs):
    from siamese_core.learn.model import load_model_safe
    run = jobs.run_c
    st = _wait(lambda: (s := Run(run).status())["status"] in FINAL and s, 300, "job C to end",
               run / "train.log")
    assert st["status"] == "stopped", st
    assert json.loads((run / "checkpoint.json").read_text())["epoch"] == 1  # stopped in its first epoch
    assert len(load_model_safe(Run(run).checkpoint_path()).inputs) == 2


def test_resume_continues_after_the_checkpointed_epoch(jobs, tmp_path):
    _killed(jobs)
    ws = tmp_path / "a"  # a copy of the killed run's workspace: the run in jobs.ws.a stays as the kill left it
    shutil.copytree(jobs.ws.a, ws)
    run = ws / "runs" / "killed"
    ck = json.loads((run / "checkpoint.json").read_text())["epoch"]
    with open(run / "metrics.jsonl", "a") as f:  # as if the kill had landed in the middle of a line
        f.write('{"kind": "batch", "epoch": ')
    assert cli("--workspace", ws, "train", "--resume", "killed", "--verbose", 0) == 0
    assert Run(run).status()["status"] == "finished"
    m = Run(run).metrics()
    epochs = [r["epoch"] for r in m if r["kind"] == "epoch"]
    resumed = list(range(ck + 1, EPOCHS_A + 1))
    assert epochs[-len(resumed):] == resumed, epochs
    assert epochs.count(1) == 1  # not restarted from scratch
    # the first batch after the resume is recorded, although the killed job left a half line
    assert {"epoch": ck + 1, "step": 1} in [{"epoch": r["epoch"], "step": r["step"]} for r in m if r["kind"] == "batch"]
    assert json.loads((run / "checkpoint.json").read_text())["epoch"] == EPOCHS_A
    assert (run / "model.keras").exists() and active_job(ws) is None


def test_a_reused_pid_does_not_keep_a_dead_run_running(tmp_path):
    """status.json names the job by pid and start time: a live Python process that merely has the
    recorded pid (this test's own) is not the job, so the run reads as interrupted."""
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    me, started = os.getpid(), process_start(os.getpid())
    assert isinstance(started, int)
    Run(run).write_status("running", pid=me, pid_start=started)
    assert Run(run).status()["status"] == "running"
    Run(run).write_status("running", pid=me, pid_start=started - 1)  # the job that had this pid
    assert Run(run).status()["status"] == "interrupted"
