"""The trials of ``bench/faults.py`` for the commands that write results: calibrate, prepare --overwrite, an upload,
index, embed / score --engine ray; a run against a full disk; and stop requests aimed at decoy processes.

The machinery (forking, killing, checking a workspace) is :mod:`fault_ops`; each function here sets up one
operation's inputs, measures its duration once, then runs trials until ``n`` SIGKILLs have landed, checking the
workspace after the next start each time. Every function returns its :class:`fault_ops.Tally` as a dict.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fault_ops import (RayCluster, Tally, calibration_scores_fresh, check_workspace, cli_fn, dataset_whole,
                       killed_trial, labelled_csv, next_start, orphans, run_to_end, write_tiles, zip_of)


def _until(n: int, tally: Tally, one_trial) -> None:
    """Run trials until ``n`` SIGKILLs landed (at most 10n trials: a kill drawn after the end lands nowhere, and on
    a busy machine, such as the test suite's two workers, the timing run can be slower than the trials after it:
    with 3n, 7 of 9 `index` trials once finished before their kill)."""
    k = 0
    while tally.d["sigkills"] < n and k < 10 * n:
        one_trial(k)
        k += 1


def setup(ws: Path) -> dict:
    """The shared workspace: dataset 'base', run 'cal' (a copy of the bundled model) and two labelled pair sets."""
    from siamese_core.core.config import DataConfig
    from siamese_core.data.store import build_dataset
    from siamese_core.runs.run import BUNDLED_DIR, Run
    build_dataset(DataConfig(limit=24, size=32), "base", ws)
    cal = ws / "runs" / "cal"
    shutil.copytree(BUNDLED_DIR, cal, ignore=shutil.ignore_patterns(Run.MODEL_CARD, Run.BUILD, "__pycache__"))
    pairs = ws.parent / "labelled"
    return {"csv": [labelled_csv(ws, "base", pairs, "a.csv", 1), labelled_csv(ws, "base", pairs, "b.csv", 2)]}


# --- calibrate ------------------------------------------------------------------------------------------------------

def calibrate_trials(ws: Path, logs: Path, n: int, rng: random.Random, inputs: dict) -> dict:
    tally = Tally("calibrate")
    code, span = run_to_end(cli_fn("--workspace", ws, "calibrate", "--run", "cal", "--pairs", inputs["csv"][0]),
                            logs / "calibrate-timing.log")
    assert code == 0, (logs / "calibrate-timing.log").read_text()[-500:]

    def trial(k):
        csv_path = inputs["csv"][k % 2]  # each complete calibration changes the fusion
        killed_trial(cli_fn("--workspace", ws, "calibrate", "--run", "cal", "--pairs", csv_path),
                     logs / f"calibrate-{k}.log", span, rng, tally)
        next_start(ws, logs / "next.log")
        check_workspace(ws, tally, datasets=["base"], runs=["cal"])
        why = calibration_scores_fresh(ws, "cal")
        if why:
            tally.bad("stale_served", why)
    _until(n, tally, trial)
    return {**tally.d, "seconds_uninterrupted": round(span, 2)}


# --- prepare --overwrite --------------------------------------------------------------------------------------------

def prepare_trials(ws: Path, logs: Path, n: int, rng: random.Random) -> dict:
    tally = Tally("prepare --overwrite")
    args = ["--workspace", ws, "prepare", "--name", "ow", "--limit", 24, "--size", 32]
    code, span = run_to_end(cli_fn(*args, "--seed", 0), logs / "prepare-timing.log")
    assert code == 0, (logs / "prepare-timing.log").read_text()[-500:]

    def trial(k):
        from siamese_core.data.store import open_dataset
        before = open_dataset("ow", ws).info["config"]["seed"]
        killed_trial(cli_fn(*args, "--seed", k + 1, "--overwrite"), logs / f"prepare-{k}.log", span, rng, tally)
        next_start(ws, logs / "next.log")
        check_workspace(ws, tally, datasets=["base", "ow"], runs=["cal"])
        if dataset_whole(ws, "ow") is None and open_dataset("ow", ws).info["config"]["seed"] not in (before, k + 1):
            tally.bad("lost_or_half_visible", "dataset 'ow' holds neither the old nor the new images")
    _until(n, tally, trial)
    return {**tally.d, "seconds_uninterrupted": round(span, 2)}


# --- an upload ------------------------------------------------------------------------------------------------------

def upload_trials(ws: Path, logs: Path, n: int, rng: random.Random) -> dict:
    from siamese_core.data.store import list_datasets, open_dataset
    tally = Tally("upload")
    folder = ws.parent / "upload-tiles"
    write_tiles(ws, folder, "base", range(0, 72, 2))
    data = zip_of(folder)

    def upload(name):
        def run():
            from siamese_core.data.uploads import build_from_zip
            build_from_zip(data, name, ws, zip_name="tiles.zip", size=32, variants=1)
            return 0
        return run
    code, span = run_to_end(upload("up-timing"), logs / "upload-timing.log")
    assert code == 0, (logs / "upload-timing.log").read_text()[-500:]
    made = ["up-timing"]

    def trial(k):
        name = f"up{k}"
        killed_trial(upload(name), logs / f"upload-{k}.log", span, rng, tally)
        next_start(ws, logs / "next.log")
        if name in list_datasets(ws):
            made.append(name)
        check_workspace(ws, tally, datasets=["base"] + made)
        for d in made:  # an upload records the archive, never its temporary folder
            if dataset_whole(ws, d) is None and open_dataset(d, ws).info["config"]["path"] != "upload:tiles.zip":
                tally.bad("lost_or_half_visible", f"dataset {d!r} records a temporary path")
    _until(n, tally, trial)
    return {**tally.d, "seconds_uninterrupted": round(span, 2), "datasets_made": len(made) - 1}


# --- index ----------------------------------------------------------------------------------------------------------

def _index_state(ws: Path) -> tuple[str | None, dict | None]:
    """(why the index of run 'cal' on dataset 'idx' is not whole, its meta), or (None, None) when it is absent."""
    from siamese_core.scale.search import index_path, load_faiss
    path = index_path("cal", "idx", ws)
    if not path.exists():
        return None, None
    try:
        meta = json.loads((path / "meta.json").read_text())
        emb = np.load(path / "embeddings.npy", mmap_mode="r")
        idx = load_faiss().read_index(str(path / "index.faiss"))
        if emb.shape != (meta["count"], meta["dim"]) or idx.ntotal != meta["count"]:
            return "index files disagree with its meta.json", meta
    except Exception as e:  # noqa: BLE001
        return f"index does not open: {type(e).__name__}: {e}", None
    return None, meta


def index_trials(ws: Path, logs: Path, n: int, rng: random.Random) -> dict:
    from siamese_core.core.config import DataConfig
    from siamese_core.core.keys import file_stamp
    from siamese_core.data.store import build_dataset
    tally = Tally("index")
    build_dataset(DataConfig(limit=24, size=32), "idx", ws)
    cmd = cli_fn("--workspace", ws, "index", "--dataset", "idx", "--run", "cal")
    code, span = run_to_end(cmd, logs / "index-timing.log")
    assert code == 0, (logs / "index-timing.log").read_text()[-500:]

    def trial(k):
        if k % 3 == 2:  # the dataset is replaced: the index must be rebuilt, never reused
            build_dataset(DataConfig(limit=24, size=32, seed=k), "idx", ws, overwrite=True)
        killed_trial(cmd, logs / f"index-{k}.log", span, rng, tally)
        next_start(ws, logs / "next.log")
        check_workspace(ws, tally, datasets=["base", "idx"], runs=["cal"])
        why, _ = _index_state(ws)
        if why:
            tally.bad("lost_or_half_visible", why)
        if k % 4 == 3:  # a complete run: what it serves must be of the dataset and model as they are now
            code, _ = run_to_end(cmd, logs / f"index-{k}-full.log")
            tally.d["complete_runs_checked"] += 1
            why, meta = _index_state(ws)
            images = ws / "datasets" / "idx" / "images.npy"
            now = {"mtime_ns": images.stat().st_mtime_ns, "size": images.stat().st_size}
            model = file_stamp(ws / "runs" / "cal" / "model.keras")
            if code != 0 or why or meta is None:
                tally.bad("lost_or_half_visible", f"index after a complete run: exit {code}, {why}")
            elif {k2: meta["images"][k2] for k2 in now} != now or [meta["model"]["size"], meta["model"]["mtime_ns"]] \
                    != model:
                tally.bad("stale_served", "the index served was built from other images or another model")
    _until(n, tally, trial)
    return {**tally.d, "seconds_uninterrupted": round(span, 2)}


# --- embed / score --engine ray -------------------------------------------------------------------------------------

def _truth_scores(ws: Path, logs: Path, pairs: Path, tag: str) -> list[float]:
    """The scores ``score --pairs`` (one process) gives the pairs as the files and the run's verdict are now."""
    out = logs / f"truth-{tag}.csv"
    code, _ = run_to_end(cli_fn("--workspace", ws, "score", "--run", "cal", "--pairs", pairs, "--out", out),
                         logs / f"truth-{tag}.log")
    assert code == 0, (logs / f"truth-{tag}.log").read_text()[-500:]
    return [float(r["score"]) for r in csv.DictReader(open(out, newline=""))]


def _truth_embedding(ws: Path, logs: Path, image: Path, tag: str) -> np.ndarray:
    out = logs / f"truth-{tag}.npy"

    def run():
        from siamese_core.judge.inference import Scorer
        s = Scorer.from_run("cal", ws)
        np.save(out, s.embed(s.load(image)[None])[0])
        return 0
    code, _ = run_to_end(run, logs / f"truth-{tag}.log")
    assert code == 0, (logs / f"truth-{tag}.log").read_text()[-500:]
    return np.load(out)


def ray_trials(ws: Path, logs: Path, n: int, rng: random.Random) -> dict:
    """Alternately ``score --engine ray`` and ``embed`` (one Ray worker, 4 inputs a shard), killed at random. Before
    every trial an image is replaced under the same name (and before every third score trial the run's verdict is
    switched); half the trials are followed by a complete run whose results are compared with the single-process
    ground truth for the inputs as they are then: a shard kept from before a change would show."""
    from siamese_core.runs.run import Run
    from siamese_core.scale.shards import read_shards
    tally = Tally("embed / score --engine ray")
    imgs = ws.parent / "ray-imgs"
    names = write_tiles(ws, imgs, "base", range(0, 36, 3))
    versions = [(imgs / names[1]).read_bytes(), (imgs / names[7]).read_bytes()]  # two contents for one name
    swap = imgs / "sw.png"
    pairs = imgs / "pairs.csv"
    with open(pairs, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_a", "image_b"])
        w.writerows([("sw.png", names[0]), (names[2], "sw.png")] + [(names[i], names[i + 1]) for i in range(3, 11)])
    run = Run(ws / "runs" / "cal")
    verdicts = [run.verdict(), {"fusion": None, "threshold": {"threshold": 0.5, "source": "preset"}}]
    state = {"version": 0, "verdict": 0}
    applied: dict = {}

    def apply():  # only what changed is rewritten (a rewrite alone, same bytes, would give a new key)
        if applied.get("version") != state["version"]:
            swap.write_bytes(versions[state["version"]])
        if applied.get("verdict") != state["verdict"]:
            v = verdicts[state["verdict"]]
            run.save_verdict(v["fusion"], v["threshold"]["threshold"], v["threshold"]["source"])
        applied.update(state)
    truth, emb_truth = {}, {}
    for ver in (0, 1):
        state["version"] = ver
        emb_truth[ver] = None
        for vd in (0, 1):
            state["verdict"] = vd
            apply()
            truth[(ver, vd)] = _truth_scores(ws, logs, pairs, f"{ver}{vd}")
        emb_truth[ver] = _truth_embedding(ws, logs, swap, f"emb{ver}")
    cluster = RayCluster(logs / "ray-cluster.log")
    try:
        ray = ["--ray-address", cluster.address, "--workers", 1, "--shard-size", 4]
        cmds = {"score": cli_fn("--workspace", ws, "score", "--run", "cal", "--pairs", pairs, "--out",
                                ws / "outs" / "score", "--engine", "ray", *ray),
                "embed": cli_fn("--workspace", ws, "embed", "--run", "cal", "--images", imgs, "--out",
                                ws / "outs" / "embed", *ray)}
        spans = {}
        for kind, cmd in cmds.items():
            code, spans[kind] = run_to_end(cmd, logs / f"{kind}-timing.log")
            assert code == 0, (logs / f"{kind}-timing.log").read_text()[-800:]

        def verify(kind):
            code, _ = run_to_end(cmds[kind], logs / f"{kind}-full.log")
            tally.d["complete_runs_checked"] += 1
            if code != 0:
                tally.bad("lost_or_half_visible", f"a complete {kind} run exited {code}: "
                                                  f"{(logs / f'{kind}-full.log').read_text()[-300:]}")
                return
            t = read_shards(ws / "outs" / kind).to_pydict()
            if kind == "score":
                got = [s for _, s in sorted(zip(t["line"], t["score"]))]
                want = truth[(state["version"], state["verdict"])]
                if len(got) != len(want) or not np.allclose(got, want, atol=2e-6):
                    tally.bad("stale_served", f"Ray scores {np.round(got, 4).tolist()} are not those of the inputs "
                                              f"now {np.round(want, 4).tolist()}")
            else:
                row = t["name"].index("sw.png")
                if not np.allclose(t["embedding"][row], emb_truth[state["version"]], atol=1e-5):
                    tally.bad("stale_served", "the embedding of sw.png is that of its earlier content")

        def trial(k):
            kind = ("score", "embed")[k % 2]
            state["version"] ^= 1  # sw.png gets its other content, under the same name, before every trial
            if kind == "score" and k % 6 == 4:
                state["verdict"] ^= 1  # and every third score trial, the run's verdict changes
            apply()
            killed_trial(cmds[kind], logs / f"{kind}-{k}.log", spans[kind], rng, tally)
            next_start(ws, logs / "next.log")
            check_workspace(ws, tally, datasets=["base"], runs=["cal"])
            for out in (ws / "outs" / "score", ws / "outs" / "embed"):
                for part in out.glob("part-*.parquet"):
                    try:
                        import pyarrow.parquet as pq
                        pq.read_metadata(part)
                    except Exception:  # noqa: BLE001
                        tally.bad("lost_or_half_visible", f"{part.name} is not a whole parquet file")
            if k % 4 >= 2:  # half the trials: a complete run, whose results must be those of the inputs now
                verify(kind)
        _until(n, tally, trial)
    finally:
        cluster.close()
    next_start(ws, logs / "next.log")  # the Ray workers of killed jobs are gone now: nothing of theirs may be left
    left = orphans(ws)
    if left:
        tally.bad("orphans_after_next_start", f"left once the Ray workers were gone: {left[:3]}")
    return {**tally.d, "seconds_uninterrupted": {k: round(v, 2) for k, v in spans.items()}}


# --- a full disk ----------------------------------------------------------------------------------------------------

def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


def _mount_tmpfs(path: Path, size_mb: int) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def disk_trial(ws: Path, logs: Path, inputs: dict) -> dict:
    """Commands against a full disk (a 12 MB tmpfs filled to the last byte; without the right to mount one, every file
    limited to 512 bytes by RLIMIT_FSIZE, so that writes fail with EFBIG): each must end with exit code 2 and one
    ``error:`` line, and change nothing that was there (no file lost or changed, nothing half-written left)."""
    from siamese_core.data.store import open_dataset
    root = logs.parent / "disk"
    method = "tmpfs" if _mount_tmpfs(root, 12) else "RLIMIT_FSIZE"
    root.mkdir(parents=True, exist_ok=True)
    dws = root / "ws"
    try:
        shutil.copytree(ws / "runs" / "cal", dws / "runs" / "cal")
        shutil.copytree(ws / "datasets" / "base", dws / "datasets" / "base")
        pairs = inputs["csv"][0]
        data = zip_of(pairs.parent)
        filler = root / "filler"
        if method == "tmpfs":  # fill it: big writes, then smaller ones, to the last byte
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
            try:
                for chunk in (1 << 16, 4096, 64, 1):
                    while True:
                        try:
                            os.write(fd, b"\0" * chunk)
                        except OSError:
                            break
            finally:
                os.close(fd)

        def limited(fn):
            def run():
                if method == "RLIMIT_FSIZE":
                    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                    resource.setrlimit(resource.RLIMIT_FSIZE, (512, 512))
                return fn()
            return run

        def upload():
            from siamese_core.core.errors import SiameseError
            from siamese_core.data.uploads import build_from_zip
            try:
                build_from_zip(data, "up", dws, zip_name="tiles.zip", size=32, variants=1)
            except SiameseError as e:  # what the dashboard shows: one line
                print(f"error: {e}", file=sys.stderr)
                return 2
            return 0
        commands = {
            "prepare --overwrite": cli_fn("--workspace", dws, "prepare", "--name", "base", "--limit", 48, "--size", 64,
                                          "--overwrite"),
            "calibrate": cli_fn("--workspace", dws, "calibrate", "--run", "cal", "--pairs", pairs),
            "calibrate --as": cli_fn("--workspace", dws, "calibrate", "--run", "cal", "--pairs", pairs, "--as", "cal2"),
            "index": cli_fn("--workspace", dws, "index", "--dataset", "base", "--run", "cal"),
            "evaluate --dataset": cli_fn("--workspace", dws, "evaluate", "--run", "cal", "--dataset", "base"),
            "score --pairs": cli_fn("--workspace", dws, "score", "--run", "cal", "--pairs", pairs, "--out",
                                    dws / "scored.csv"),
            "upload": upload,
        }
        out = {"method": method, "commands": {}, "one_error_line": 0, "lost_or_changed": 0, "half_written_left": 0,
               "failures": []}
        for name, fn in commands.items():
            before = _snapshot(dws)
            log = logs / f"disk-{name.replace(' ', '_')}.log"
            code, _ = run_to_end(limited(fn), log)
            text = log.read_text(errors="replace")
            errors = [line for line in text.replace("\r", "\n").splitlines() if line.startswith("error:")]
            one = code == 2 and len(errors) == 1 and "Traceback" not in text
            after = _snapshot(dws)
            lost = [p for p, h in before.items() if after.get(p) != h]
            extra = [p for p in after if p not in before]
            out["commands"][name] = {"exit": code, "error": errors[0][:160] if errors else text[-200:]}
            out["one_error_line"] += one
            out["lost_or_changed"] += len(lost)
            out["half_written_left"] += len(extra) + len(orphans(dws))
            if not one or lost or extra:
                out["failures"].append(f"{name}: exit {code}, {len(errors)} error lines, lost {lost[:2]}, "
                                       f"new {extra[:2]}")
        out["dataset_intact"] = dataset_whole(dws, "base") is None and len(open_dataset("base", dws)) == 72
        return out
    finally:
        if method == "tmpfs":
            subprocess.run(["umount", str(root)], capture_output=True)


# --- stop requests aimed at decoys ----------------------------------------------------------------------------------

DECOY = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda s, f: open(sys.argv[1], "a").write("SIGTERM\\n"))
open(sys.argv[1], "a").write("ready\\n")
time.sleep(600)
"""


def decoy_trials(root: Path, n: int) -> dict:
    """``Run.stop`` on ``n`` runs whose status names a decoy: another program that has the recorded pid (a record
    with another start time, or with none, older than the decoy). The decoy must receive nothing."""
    from siamese_core.core.procs import process_start
    from siamese_core.runs.run import Run
    log = root / "decoy.log"
    p = subprocess.Popen([sys.executable, "-c", DECOY, str(log)])
    try:
        end = time.time() + 30
        while not (log.exists() and "ready" in log.read_text()) and time.time() < end:
            time.sleep(0.02)
        start = process_start(p.pid)
        for k in range(n):
            run = Run(root / "decoy-runs" / f"r{k}")
            run.path.mkdir(parents=True)
            if k % 2:
                run.write_status("running", reset=True, pid=p.pid, pid_start=start - 1 - k)
            else:
                run.write_status("running", reset=True, pid=p.pid)
                st = json.loads(run.status_path.read_text())
                st["updated"] = time.time() - 3600
                run.status_path.write_text(json.dumps(st))
            run.stop(wait_s=0.05)
        time.sleep(0.5)
        received = log.read_text().count("SIGTERM")
    finally:
        p.kill()
        p.wait()
    return {"stops_aimed_at_decoys": n, "foreign_signals": received}


__all__ = ["setup", "calibrate_trials", "prepare_trials", "upload_trials", "index_trials", "ray_trials", "disk_trial",
           "decoy_trials"]
