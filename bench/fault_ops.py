"""SIGKILL at random moments of every command that writes results, then check what the next command finds.

Part of ``bench/faults.py`` (which runs these and the training kills and launch races, and prints the report).

Each trial starts one operation as a process of its own and SIGKILLs it after a delay drawn uniformly over that
operation's whole duration (measured once, uninterrupted). The processes are forked from this one, which has
imported TensorFlow and the package once but never runs a TensorFlow op (so forking is safe): a trial costs the
operation, not a TensorFlow start-up. The Ray jobs run as ``python -m siamese_core`` drivers against one local Ray
cluster started here. After every kill the next command (``list``, which sweeps first) runs, and then the workspace
is checked:

* **lost or half-visible**: every dataset that should exist opens, and its images, groups, manifest and fingerprint
  agree; every listed run has its config and a whole model; an index or shard folder is whole or absent;
* **stale served**: results a later complete run returns equal the ground truth for the inputs as they are now (an
  image replaced under the same name, a recalibrated fusion), computed beforehand by the single-process path;
  calibration scores are served only with the fusion they belong to; a verdict never pairs a fusion with a
  threshold that is not its own;
* **orphans**: temporary files and folders whose writer is dead, after the next start's sweep;
* **foreign signals**: every signal sent goes to a process started here, checked by pid and start time; and
  ``Run.stop`` on runs whose status names a decoy process (another start time, or none) sends it nothing.
"""

from __future__ import annotations

import csv
import io
import os
import random
import signal
import subprocess
import sys
import time
import traceback
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from siamese_core.core.procs import owner_state, process_start, same_process  # noqa: E402
from siamese_core.core.sweep import PREFIXES, TEMP_FILE  # noqa: E402


class Tally:
    """What the trials of one operation found."""

    def __init__(self, op: str):
        self.op = op
        self.d = {"sigkills": 0, "finished_before_kill": 0, "complete_runs_checked": 0, "stale_served": 0,
                  "lost_or_half_visible": 0, "orphans_after_next_start": 0, "foreign_signals": 0, "failures": []}

    def bad(self, key: str, why: str) -> None:
        self.d[key] += 1
        if len(self.d["failures"]) < 20:
            self.d["failures"].append(f"{self.op}: {why}")


# --- processes ------------------------------------------------------------------------------------------------------

def fork(fn, log: Path) -> tuple[int, int | None]:
    """Run ``fn()`` (returning an exit code) in a forked child whose stdout and stderr go to ``log``; returns its pid
    and start time."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 99
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            for s in (signal.SIGTERM, signal.SIGINT):
                signal.signal(s, signal.SIG_DFL)
            code = int(fn() or 0)
        except BaseException:  # noqa: BLE001 (reported in the log)
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    return pid, process_start(pid)


def cli_fn(*args):
    def run():
        from siamese_core.cli import main
        return main([str(a) for a in args])
    return run


def kill_ours(pid: int, start) -> bool:
    """SIGKILL process ``pid`` only if it is still the child started here (pid and start time); True when sent.
    Every signal this benchmark sends goes through here, so none reaches a process that is not its own."""
    if not same_process(pid, start):
        return False
    os.kill(pid, signal.SIGKILL)
    return True


def wait_exit(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def run_to_end(fn, log: Path, timeout: float = 600) -> tuple[int, float]:
    t0 = time.time()
    pid, start = fork(fn, log)
    end = t0 + timeout
    while time.time() < end:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got:
            return os.waitstatus_to_exitcode(status), time.time() - t0
        time.sleep(0.02)
    kill_ours(pid, start)
    wait_exit(pid)
    raise RuntimeError(f"{log.name}: still running after {timeout:.0f} s")


def killed_trial(fn, log: Path, span: float, rng: random.Random, tally: Tally) -> bool:
    """Start ``fn`` and SIGKILL it after a delay drawn over 0 … 1.05 × ``span``; True when the kill landed."""
    delay = rng.uniform(0.0, span * 1.05)
    pid, start = fork(fn, log)
    end = time.time() + delay
    while time.time() < end:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got:
            tally.d["finished_before_kill"] += 1
            return False
        time.sleep(0.005)
    sent = kill_ours(pid, start)
    wait_exit(pid)
    if sent:
        tally.d["sigkills"] += 1
    return sent


def next_start(ws: Path, log: Path) -> None:
    """The next command: ``list``, which sweeps the workspace first."""
    code, _ = run_to_end(cli_fn("--workspace", ws, "list"), log)
    if code != 0:
        raise RuntimeError(f"`list` after a kill exited {code}: {log.read_text()[-400:]}")


# --- what the workspace must look like --------------------------------------------------------------------------------

def orphans(root: Path, depth: int = 4) -> list[str]:
    """Temporary files and folders under ``root`` whose writer is not alive (what the sweep should have removed)."""
    out, level = [], [root]
    for d in range(depth + 1):
        nxt = []
        for folder in level:
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for e in entries:
                temp = e.name.startswith(".") and (e.name.startswith(PREFIXES) or TEMP_FILE.match(e.name))
                if temp and owner_state(e.name) != "alive":
                    out.append(str(Path(e.path).relative_to(root)))
                elif e.is_dir(follow_symlinks=False) and (not e.name.startswith(".") or e.name == ".uploads"):
                    nxt.append(Path(e.path))
        level = nxt
    return out


def dataset_whole(ws: Path, name: str) -> str | None:
    """None when dataset ``name`` is listed and whole; else why not."""
    from siamese_core.data.store import images_fingerprint, list_datasets, open_dataset
    if name not in list_datasets(ws):
        return f"dataset {name!r} is not listed"
    try:
        ds = open_dataset(name, ws)
        n = int(ds.info["images"])
        if len(ds) != n or len(ds.groups) != n or len(ds.manifest) != n:
            return f"dataset {name!r}: {len(ds)} images, {len(ds.groups)} groups, {len(ds.manifest)} rows, not {n}"
        if images_fingerprint(ds.path / "images.npy", ds.groups) != ds.info["fingerprint"]:
            return f"dataset {name!r}: its images do not match its fingerprint"
    except Exception as e:  # noqa: BLE001 (what the check reports)
        return f"dataset {name!r} does not open: {type(e).__name__}: {e}"
    return None


def run_whole(ws: Path, rid: str) -> str | None:
    """None when run ``rid`` is listed, its config reads, its model is a whole zip and its verdict is whole."""
    from siamese_core.runs.registry import list_runs, run_path
    from siamese_core.runs.run import Run
    if rid not in list_runs(ws):
        return f"run {rid!r} is not listed"
    run = Run(run_path(rid, ws))
    try:
        run.config
        with zipfile.ZipFile(run.model_path) as z:
            if z.testzip() is not None:
                return f"run {rid!r}: model.keras is damaged"
    except Exception as e:  # noqa: BLE001
        return f"run {rid!r} does not open: {type(e).__name__}: {e}"
    v = run.verdict()
    t = v["threshold"]
    if v["fusion"] is not None and (t is None or (
            t.get("source") != "user" and abs(t["threshold"] - v["fusion"]["threshold"]) > 1e-9)):
        return f"run {rid!r}: mixed verdict (fusion threshold {v['fusion']['threshold']}, saved {v['threshold']})"
    if v["fusion"] is None and v["threshold"] is not None and v["threshold"].get("source") == "calibrated (fusion)":
        return f"run {rid!r}: a fused threshold without its fusion"
    return None


def calibration_scores_fresh(ws: Path, rid: str) -> str | None:
    """The run's calibration scores are refused, or belong to its present fusion."""
    from siamese_core.core.errors import RunError
    from siamese_core.core.keys import digest
    from siamese_core.runs.registry import run_path
    from siamese_core.runs.run import Run
    run = Run(run_path(rid, ws))
    if not run.has_calibration_scores():
        return None
    try:
        run.calibration_scores()
    except RunError:
        return None  # not served
    with np.load(run.calibration_scores_path) as z:
        key = str(z["fusion_key"]) if "fusion_key" in z.files else None
    return None if key in (None, digest(run.fusion_dict())) else "calibration scores of another fusion were served"


def check_workspace(ws: Path, tally: Tally, datasets=(), runs=()) -> None:
    left = orphans(ws)
    if left:
        tally.bad("orphans_after_next_start", f"left after the next start: {left[:3]}")
    for name in datasets:
        why = dataset_whole(ws, name)
        if why:
            tally.bad("lost_or_half_visible", why)
    for rid in runs:
        why = run_whole(ws, rid)
        if why:
            tally.bad("lost_or_half_visible", why)


# --- inputs -----------------------------------------------------------------------------------------------------------

def write_tiles(ws: Path, folder: Path, dataset: str, rows) -> list[str]:
    """PNG files of some rows of a dataset; returns their names."""
    from siamese_core.data.images import encode_png
    from siamese_core.data.store import open_dataset
    ds = open_dataset(dataset, ws)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in rows:
        name = f"t{int(i):04d}.png"
        (folder / name).write_bytes(encode_png(np.asarray(ds.images[int(i)])))
        names.append(name)
    return names


def labelled_csv(ws: Path, dataset: str, folder: Path, name: str, seed: int, n: int = 8) -> Path:
    """``n`` same-place and ``n`` different-place pairs of a dataset's tiles, as PNG files and a labelled CSV."""
    from siamese_core.data.store import open_dataset
    g = np.asarray(open_dataset(dataset, ws).groups)
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        i = int(rng.integers(len(g)))
        same = rng.choice(np.flatnonzero((g == g[i]) & (np.arange(len(g)) != i)))
        other = rng.choice(np.flatnonzero(g != g[i]))
        rows += [(i, int(same), 0), (i, int(other), 1)]
    write_tiles(ws, folder, dataset, sorted({x for r in rows for x in r[:2]}))
    path = folder / name
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_a", "image_b", "label"])
        w.writerows([(f"t{a:04d}.png", f"t{b:04d}.png", y) for a, b, y in rows])
    return path


def zip_of(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for p in sorted(folder.glob("*.png")):
            z.write(p, p.name)
    return buf.getvalue()


# --- the Ray cluster --------------------------------------------------------------------------------------------------

RAY_HEAD = """
import sys, logging, ray
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
ray.shutdown()
"""


class RayCluster:
    """A local Ray cluster, started by a helper process that shuts it down when its stdin closes. Ray (2.59+) guards a
    local cluster with a token that ``ray.init`` writes to ``~/.ray/auth_token``; the drivers started here read it
    (``RAY_AUTH_MODE=token``, set in this process's environment, which they inherit)."""

    def __init__(self, log: Path):
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # also set before this process imported ray (faults.py)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(x for x in (str(ROOT), os.environ.get("PYTHONPATH")) if x)}
        self.log = open(log, "wb")
        self.proc = subprocess.Popen([sys.executable, "-c", RAY_HEAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, env=env)
        self.address = self.proc.stdout.readline().decode().strip()
        if not self.address:
            raise RuntimeError(f"the Ray cluster did not start: see {log}")

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


__all__ = ["Tally", "fork", "cli_fn", "kill_ours", "wait_exit", "run_to_end", "killed_trial", "next_start", "orphans",
           "dataset_whole", "run_whole", "calibration_scores_fresh", "check_workspace", "write_tiles", "labelled_csv",
           "zip_of", "RayCluster"]
