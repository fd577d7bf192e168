"""Faults on purpose: training killed at random moments, and launches racing each other.

    python bench/faults.py [--kills 20] [--races 100] [--seed 0] [--out bench/out-faults]

* **Kills**: ``python -m siamese_core train`` (default preset, a 24-tile synthetic dataset at 32 px,
  3 epochs of 3 steps) is SIGKILLed after a random delay drawn over its whole duration (TensorFlow's
  start-up, training, checkpointing, saving). The run must then read ``interrupted`` (or ``finished``
  if the kill came after the end), ``train --resume`` must finish it with the configured number of epochs
  (a run killed before its first checkpoint is refused by ``--resume``, as it should be, and is started
  again under the same id), and its model must load (``safe_mode``). A watcher polls ``status.json``
  every 20 ms in each process and counts any step backwards within it (queued → running → finishing →
  an end).
* **Races**: two processes released by one barrier each do what ``train`` and the dashboard's launcher do
  before training — take the workspace's training lock and create the run — while two more processes
  probe for a running job (``active_job``) as fast as they can, as the dashboard does on every render.
  Exactly one launch must win; the other must fail with one ``RunError`` line naming the running job.

Prints a JSON summary (and writes it to ``--out/faults.json``); exit status 1 if any trial went wrong.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from machine import cpu_model  # bench/ is the script's folder, first on sys.path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RANK = {"queued": 0, "running": 1, "finishing": 2}


def _cli(ws: Path, *args, **kw) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-m", "siamese_core", "--workspace", str(ws), *map(str, args)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


class Watcher(threading.Thread):
    """Polls a run's status.json and records every status it sees, in order."""

    def __init__(self, path: Path, skip_first: bool = False):
        super().__init__(daemon=True)
        self.path, self.stop, self._seen, self.skip_first = path, threading.Event(), [], skip_first

    @property
    def seen(self) -> list[str]:
        return self._seen[1:] if self.skip_first else self._seen

    def run(self):
        while not self.stop.is_set():
            try:
                s = json.loads(self.path.read_text())["status"]
            except (OSError, ValueError, KeyError):
                s = None
            if s and (not self._seen or self._seen[-1] != s):
                self._seen.append(s)
            time.sleep(0.02)


def backwards(seen: list[str]) -> int:
    """Steps backwards within a launch; a new launch (after an end) may start again from 'queued'."""
    n, last = 0, None
    for s in seen:
        if last in RANK and s in RANK and RANK[s] < RANK[last]:
            n += 1
        last = s
    return n


def _count(out: dict, rid: str, seen: list[str]) -> int:
    b = backwards(seen)
    if b:
        out["failures"].append(f"{rid}: status went backwards within one launch: {seen}")
    return b


def kill_trials(ws: Path, n: int, rng: random.Random, epochs: int = 3) -> dict:
    from siamese_core.learn.model import load_model_safe
    from siamese_core.runs.registry import run_path
    from siamese_core.runs.run import Run
    # how long one uninterrupted run takes, to spread the kills over all of it
    t0 = time.time()
    p = _cli(ws, "train", "--dataset", "tiny", "--epochs", epochs, "--steps-per-epoch", 3, "--batch-size", 8,
             "--run-id", "timing", "--verbose", 0)
    p.wait()
    span = time.time() - t0
    out = {"trials": n, "run_seconds": round(span, 1), "interrupted": 0, "finished_before_kill": 0,
           "resumed_and_finished": 0, "model_loads": 0, "epochs_complete": 0, "backwards_steps": 0,
           "killed_before_the_run_existed": 0, "failures": []}
    for k in range(n):
        rid = f"kill{k}"
        run = Run(run_path(rid, ws))
        delay = rng.uniform(0.2, span * 1.05)
        p = _cli(ws, "train", "--dataset", "tiny", "--epochs", epochs, "--steps-per-epoch", 3, "--batch-size", 8,
                 "--run-id", rid, "--verbose", 0)
        w = None
        deadline = time.time() + delay
        while time.time() < deadline and p.poll() is None:
            if w is None and run.status_path.exists():
                w = Watcher(run.status_path)
                w.start()
            time.sleep(0.005)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()
        if w is None and run.status_path.exists():
            w = Watcher(run.status_path)
            w.start()
        if not run.exists():  # killed before the run existed: nothing to resume, nothing lost
            out["killed_before_the_run_existed"] += 1
            continue
        st = run.status()["status"]
        if st == "finished":
            out["finished_before_kill"] += 1
        elif st == "interrupted":
            out["interrupted"] += 1
            if run.checkpoint_epoch() == 0:  # killed in its first epoch: a new run is the way (resume refuses)
                shutil.rmtree(run.path)
                q = _cli(ws, "train", "--dataset", "tiny", "--epochs", epochs, "--steps-per-epoch", 3,
                         "--batch-size", 8, "--run-id", rid, "--verbose", 0)
            else:
                q = _cli(ws, "train", "--resume", rid, "--verbose", 0)
            if w is not None:  # the kill ended that launch; the resume is a new one, watched on its own
                w.stop.set()
                w.join()
                out["backwards_steps"] += _count(out, rid, w.seen)
            w = Watcher(run.status_path, skip_first=True)  # what it sees first is the killed launch's last word
            w.start()
            _, err = q.communicate(timeout=600)
            if q.returncode == 0 and run.status()["status"] == "finished":
                out["resumed_and_finished"] += 1
            else:
                out["failures"].append(f"{rid}: resume exit {q.returncode}: {err.decode()[-300:]}")
        else:
            out["failures"].append(f"{rid}: status {st!r} after SIGKILL at {delay:.2f} s")
        if w is not None:
            w.stop.set()
            w.join()
            out["backwards_steps"] += _count(out, rid, w.seen)
        if run.status()["status"] == "finished":
            if run.checkpoint_epoch() == epochs:
                out["epochs_complete"] += 1
            try:
                load_model_safe(run.model_path)
                out["model_loads"] += 1
            except Exception as e:  # noqa: BLE001 (counted and reported)
                out["failures"].append(f"{rid}: model does not load: {e}")
    return out


def _launch(ws: str, rid: str, barrier, results):
    from siamese_core.core.config import RunConfig
    from siamese_core.core.errors import RunError
    from siamese_core.runs.lock import PROBE_GRACE_S, acquire_train_lock
    from siamese_core.runs.registry import create_run
    barrier.wait()
    try:
        fd = acquire_train_lock(rid, ws)
    except RunError as e:
        results.put((rid, "refused", str(e)))
        return
    try:
        create_run(RunConfig.for_preset("tiny", "default", epochs=1), ws, rid)
        results.put((rid, "won", ""))
        time.sleep(PROBE_GRACE_S + 0.7)  # a job holds the lock while it trains: longer than a launch waits
    finally:
        os.close(fd)


def _probe(ws: str, stop):
    from siamese_core.runs.lock import active_job
    while not stop.is_set():
        active_job(ws)


def race_trials(ws: Path, n: int) -> dict:
    ctx = mp.get_context("fork")
    out = {"trials": n, "exactly_one_won": 0, "loser_one_line_naming_the_job": 0, "failures": []}
    stop = ctx.Event()
    probes = [ctx.Process(target=_probe, args=(str(ws), stop)) for _ in range(2)]
    for p in probes:
        p.start()
    try:
        for k in range(n):
            barrier, results = ctx.Barrier(2), ctx.Queue()
            ids = (f"race{k}a", f"race{k}b")
            procs = [ctx.Process(target=_launch, args=(str(ws), rid, barrier, results)) for rid in ids]
            for p in procs:
                p.start()
            for p in procs:
                p.join(60)
            got = [results.get(timeout=10) for _ in procs]
            won = [g for g in got if g[1] == "won"]
            lost = [g for g in got if g[1] == "refused"]
            if len(won) == 1 and len(lost) == 1:
                out["exactly_one_won"] += 1
                msg = lost[0][2]
                if "\n" not in msg and "already running" in msg and won[0][0] in msg:
                    out["loser_one_line_naming_the_job"] += 1
                else:
                    out["failures"].append(f"trial {k}: loser's message {msg!r}")
            else:
                out["failures"].append(f"trial {k}: {got}")
    finally:
        stop.set()
        for p in probes:
            p.join(10)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--races", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out-faults"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    ws = out / "ws"
    from siamese_core.cli import main as cli
    assert cli(["--workspace", str(ws), "prepare", "--name", "tiny", "--limit", "24", "--size", "32"]) == 0
    t0 = time.time()
    res = {"cpu": cpu_model(), "kills": kill_trials(ws, args.kills, random.Random(args.seed)) if args.kills else None,
           "races": race_trials(ws, args.races) if args.races else None}
    res["seconds"] = round(time.time() - t0, 1)
    (out / "faults.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    k, r = res["kills"] or {}, res["races"] or {}
    runs_made = k.get("trials", 0) - k.get("killed_before_the_run_existed", 0)
    ok = (not k or (k["resumed_and_finished"] + k["finished_before_kill"] == runs_made and not k["backwards_steps"]
                    and k["model_loads"] == runs_made and k["epochs_complete"] == runs_made)) \
        and (not r or r["exactly_one_won"] == r["loser_one_line_naming_the_job"] == r["trials"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
