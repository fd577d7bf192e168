"""Faults on purpose: every command that writes results killed at random moments, a full disk, stop requests aimed
at other processes, training killed at random moments, and launches racing each other.

    python bench/faults.py [--op-kills 20] [--kills 20] [--races 100] [--decoys 20] [--seed 0] [--quick]
                           [--out bench/out-faults]

* **Commands killed** (:mod:`fault_trials`, :mod:`fault_ops`): ``calibrate``, ``prepare --overwrite``, an upload
  (``build_from_zip``, what the dashboard runs), ``index``, and ``embed`` / ``score --engine ray`` (alternately,
  against one local Ray cluster) are each SIGKILLed ``--op-kills`` times at a random moment of their run; after each
  kill the next command starts (it sweeps) and the workspace is checked: stale results served, datasets and runs
  lost or half-visible, orphans left, signals sent to processes that are not ours — all must be 0.
* **Full disk**: seven commands against a full 12 MB tmpfs (or, without the right to mount one, every file limited
  to 512 bytes): each ends with exit code 2 and one ``error:`` line, and nothing that was there is lost or changed.
* **Decoys**: ``Run.stop`` on ``--decoys`` runs whose status names another program (another start time, or none):
  it must receive no signal.

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

Prints a JSON summary (and writes it to ``--out/faults.json``), then one table; exit status 1 if any trial went wrong.
``--quick`` is a smoke run (3 kills of each command, 2 training kills, 10 races, 4 decoys) that a slow test calls.
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

import fault_trials  # noqa: E402  (bench/ is the script's folder, first on sys.path)
from machine import cpu_model

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


def _warm_imports() -> None:
    """Import once what the forked commands need (TensorFlow, the package, Ray): a trial then costs its command, not
    a start-up. No TensorFlow op runs in this process, so forking it stays safe."""
    import faiss  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import siamese_core.cli  # noqa: F401
    import siamese_core.judge.calibration  # noqa: F401
    import siamese_core.learn.model  # noqa: F401
    import siamese_core.scale.jobs  # noqa: F401
    import siamese_core.scale.search  # noqa: F401
    import siamese_core.scale.shard_index  # noqa: F401
    from siamese_core.core import backend  # noqa: F401


OPS = ("calibrate", "prepare", "upload", "index", "ray", "disk", "decoys")


def ops(out: Path, n: int, decoys: int, seed: int, only=OPS) -> dict:
    """The commands killed ``n`` times each, the full disk and the decoys (see the module docstring); ``only`` names
    the ones to run (all by default)."""
    ws, logs = out / "ops-ws", out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    _warm_imports()
    inputs = fault_trials.setup(ws)
    res = {}
    if "calibrate" in only:
        res["calibrate"] = fault_trials.calibrate_trials(ws, logs, n, rng, inputs)
    if "prepare" in only:
        res["prepare --overwrite"] = fault_trials.prepare_trials(ws, logs, n, rng)
    if "upload" in only:
        res["upload"] = fault_trials.upload_trials(ws, logs, n, rng)
    if "index" in only:
        res["index"] = fault_trials.index_trials(ws, logs, n, rng)
    if "ray" in only:
        try:
            os.environ.setdefault("RAY_AUTH_MODE", "token")  # read when ray is imported: see fault_ops.RayCluster
            import ray  # noqa: F401
            res["embed / score --engine ray"] = fault_trials.ray_trials(ws, logs, n, rng)
        except ImportError:
            res["embed / score --engine ray"] = {"skipped": "Ray is not installed: "
                                                            "pip install -r requirements-scale.txt"}
    if "disk" in only:
        res["full disk"] = fault_trials.disk_trial(ws, logs, inputs)
    if "decoys" in only:
        res["decoys"] = fault_trials.decoy_trials(out, decoys)
    return res


COUNTS = ("stale_served", "lost_or_half_visible", "orphans_after_next_start", "foreign_signals")


def table(res: dict) -> str:
    """The report as a Markdown table: one row per command killed, then the full disk and the decoys."""
    lines = ["| operation | SIGKILLs | stale results served | datasets/runs lost or half-visible | orphans after "
             "the next start | signals to processes not ours | complete runs checked |",
             "|---|---|---|---|---|---|---|"]
    for op, r in res["ops"].items():
        if op in ("full disk", "decoys") or "skipped" in r:
            continue
        lines.append(f"| {op} | {r['sigkills']} | {r['stale_served']} | {r['lost_or_half_visible']} | "
                     f"{r['orphans_after_next_start']} | {r['foreign_signals']} | {r['complete_runs_checked']} |")
    k = res.get("kills") or {}
    if k:  # a kill drawn after the end of a training run lands nowhere: those runs are only checked
        landed = k["trials"] - k["finished_before_kill"]
        lost = k["trials"] - k["model_loads"]
        lines.append(f"| train, then `--resume` ({k['trials']} trials) | {landed} | 0 | {lost} | - | 0 | "
                     f"{k['resumed_and_finished']} |")
    d, dec = res["ops"].get("full disk"), res["ops"].get("decoys")
    if d:
        lines.append(f"\nFull disk ({d['method']}): {d['one_error_line']} of {len(d['commands'])} commands ended with "
                     f"exit code 2 and one error line; files lost or changed: {d['lost_or_changed']}; "
                     f"half-written files left: {d['half_written_left']}.")
    if dec:
        lines.append(f"Decoys: {dec['stops_aimed_at_decoys']} stop requests aimed at runs whose status names another "
                     f"process; signals it received: {dec['foreign_signals']}.")
    return "\n".join(lines)


def ok_ops(res: dict, n: int) -> bool:
    good = True
    for op, r in res.items():
        if op == "full disk":
            good &= (r["one_error_line"] == len(r["commands"]) and not r["lost_or_changed"]
                     and not r["half_written_left"] and r["dataset_intact"])
        elif op == "decoys":
            good &= r["foreign_signals"] == 0
        elif "skipped" not in r:
            good &= r["sigkills"] >= n and not any(r[c] for c in COUNTS)
    return good


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--op-kills", type=int, help="SIGKILLs of each command that writes results (default 20)")
    ap.add_argument("--kills", type=int, help="SIGKILLs of training (default 20)")
    ap.add_argument("--races", type=int, help="racing launches (default 100)")
    ap.add_argument("--decoys", type=int, help="stop requests aimed at decoys (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a smoke run: 3 / 2 / 10 / 4 of the above, unless given")
    ap.add_argument("--only", default=",".join(OPS), help=f"which of {', '.join(OPS)} to run (default: all)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out-faults"))
    args = ap.parse_args(argv)
    for name, full, quick in (("op_kills", 20, 3), ("kills", 20, 2), ("races", 100, 10), ("decoys", 20, 4)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    given = argv if argv is not None else sys.argv[1:]
    res = {"cpu": cpu_model(), "command": " ".join(["python bench/faults.py", *given])}
    only = [o.strip() for o in args.only.split(",") if o.strip()]
    unknown = sorted(set(only) - set(OPS))
    if unknown:
        ap.error(f"--only: unknown {unknown}; choose from {', '.join(OPS)}")
    res["ops"] = ops(out, args.op_kills, args.decoys, args.seed, only) if args.op_kills else {}
    ws = out / "ws"
    from siamese_core.cli import main as cli
    assert cli(["--workspace", str(ws), "prepare", "--name", "tiny", "--limit", "24", "--size", "32"]) == 0
    res["kills"] = kill_trials(ws, args.kills, random.Random(args.seed)) if args.kills else None
    res["races"] = race_trials(ws, args.races) if args.races else None
    res["seconds"] = round(time.time() - t0, 1)
    (out / "faults.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    if res["ops"]:
        print("\n" + table(res))
    k, r = res["kills"] or {}, res["races"] or {}
    runs_made = k.get("trials", 0) - k.get("killed_before_the_run_existed", 0)
    ok = (not k or (k["resumed_and_finished"] + k["finished_before_kill"] == runs_made and not k["backwards_steps"]
                    and k["model_loads"] == runs_made and k["epochs_complete"] == runs_made)) \
        and (not r or r["exactly_one_won"] == r["loser_one_line_naming_the_job"] == r["trials"]) \
        and (not res["ops"] or ok_ops(res["ops"], args.op_kills))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
