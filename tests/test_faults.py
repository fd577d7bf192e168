"""Nothing stale, nothing lost (issue 20), in one process: every cached result is keyed on what it depends on, the
verdict is saved whole, the sweep removes only what dead processes left, ``prepare --overwrite`` is refused under a
job, ``stop`` never signals a process that is not the job, writes are published whole and flushed with the user's
permissions, locks give up naming their holder, and untrusted text cannot become a formula or Markdown.

Real parts throughout (a tiny trained workspace, real processes as decoys); a failure is injected only where a real
one cannot be had on demand (a failing rename, standing for a crash at that instant). The subprocess and Ray checks
are in ``test_faults_slow.py``; ``bench/faults.py`` kills real processes by the hundred.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import cli, dead_owner_tag

ROOT = Path(__file__).resolve().parents[1]


def _png(img) -> bytes:
    from siamese_core.data.images import encode_png
    return encode_png(np.asarray(img))


@pytest.fixture
def labelled(app_ws) -> Path:
    """12 labelled pairs (6 same place, 6 different) of the tiny dataset's tiles, written as PNG files."""
    from siamese_core.data.store import open_dataset
    ds = open_dataset("tiny", app_ws)
    g = np.asarray(ds.groups)
    d = app_ws.parent / "pairs"
    d.mkdir()
    for i in range(len(g)):
        (d / f"t{i:03d}.png").write_bytes(_png(ds.images[i]))
    rows = []
    for i in range(0, 36, 6):
        same = int(np.flatnonzero((g == g[i]) & (np.arange(len(g)) != i))[0])
        other = int(np.flatnonzero(g != g[i])[i % 5])
        rows += [(f"t{i:03d}.png", f"t{same:03d}.png", 0), (f"t{i:03d}.png", f"t{other:03d}.png", 1)]
    with open(d / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_a", "image_b", "label"])
        w.writerows(rows)
    return d / "pairs.csv"


def _whole(v: dict) -> bool:
    """A verdict whose threshold belongs to its fusion (or to the learned distance, when there is none)."""
    if v["fusion"] is None:
        return v["threshold"] is None or v["threshold"]["source"] != "calibrated (fusion)"
    return v["threshold"] is not None and v["threshold"]["threshold"] == pytest.approx(v["fusion"]["threshold"])


# --- the verdict: fusion and threshold, one file ------------------------------------------------------------------

@pytest.mark.parametrize("fail_at", [1, 2, 3])
def test_a_crash_at_any_rename_of_calibrate_leaves_a_whole_verdict(app_ws, labelled, monkeypatch, fail_at):
    """calibrate publishes the calibration scores, then the verdict. A crash at the k-th rename into the run (the
    instant a kill would leave) gives the old verdict whole or the new one whole, never a fused score judged against
    the learned distance's threshold; scores of an unfinished calibration are not served."""
    from siamese_core.core.errors import RunError
    from siamese_core.judge.calibration import calibrate
    from siamese_core.judge.inference import Scorer
    from siamese_core.runs.run import Run
    run = Run(app_ws / "runs" / "def1")
    before = run.verdict()
    assert before["fusion"] is None and before["threshold"]["source"] == "calibrated"  # the learned distance's
    scorer = Scorer.from_run("def1", app_ws)
    real, seen = os.replace, []

    def crashing(src, dst, *a, **k):
        if Path(dst).parent == run.path:
            seen.append(Path(dst).name)
            if len(seen) == fail_at:
                raise OSError(5, "Input/output error (the process died here)")
        return real(src, dst, *a, **k)
    monkeypatch.setattr(os, "replace", crashing)
    try:
        calibrate(scorer, labelled)
        finished = True
    except OSError:
        finished = False
    monkeypatch.undo()
    after = run.verdict()
    assert _whole(after), after
    assert after == before or after["fusion"] is not None
    assert finished == (after["fusion"] is not None) == (len(seen) < fail_at)
    if after == before and run.has_calibration_scores():  # the scores were published, the verdict was not
        with pytest.raises(RunError, match="not those of its present fusion.*calibrate the run again"):
            run.calibration_scores()
    fresh = Scorer.from_run("def1", app_ws)
    t = fresh.threshold
    assert (fresh.fusion is None) == (after["fusion"] is None) and t == after["threshold"]["threshold"]


def test_old_runs_load_and_their_interrupted_calibration_is_not_mixed(app_ws):
    """A run calibrated before verdict.json keeps fusion.json and threshold.json. Its verdict still loads; when a
    crash left a new fusion beside the learned distance's threshold, the fusion's own threshold is used."""
    import json
    from siamese_core.runs.run import Run
    run = Run(app_ws / "runs" / "def1")
    distance_t = run.threshold()
    (run.path / "verdict.json").unlink()
    fusion = {"kind": "logistic", "names": ["distance"], "mean": [0.5], "std": [0.2], "weights": [-1.0],
              "bias": 0.0, "threshold": 0.37}
    (run.path / "threshold.json").write_text(json.dumps({"threshold": distance_t, "source": "calibrated"}))
    assert run.verdict() == {"fusion": None, "threshold": {"threshold": distance_t, "source": "calibrated"}}
    (run.path / "fusion.json").write_text(json.dumps(fusion))  # the old calibrate died before threshold.json
    v = run.verdict()
    assert v["fusion"] == fusion and v["threshold"]["threshold"] == 0.37 and _whole(v)
    (run.path / "threshold.json").write_text(json.dumps({"threshold": 0.37, "source": "calibrated (fusion)"}))
    assert run.verdict()["threshold"]["threshold"] == 0.37
    time.sleep(0.01)
    (run.path / "threshold.json").write_text(json.dumps({"threshold": 0.42, "source": "user"}))  # chosen later
    assert run.threshold() == 0.42
    run.save_threshold(0.40)  # the next save writes the new layout, whole, and retires the old files
    assert run.verdict()["fusion"] == fusion and run.threshold() == 0.40
    assert (run.path / "verdict.json").exists() and not (run.path / "fusion.json").exists()


def test_a_live_scorer_takes_the_new_fusion_with_the_new_threshold(app_ws):
    """The dashboard keeps a Scorer for minutes: reading the threshold after a recalibration brings the fusion
    that threshold belongs to."""
    from siamese_core.judge.fusion import FEATURES, Fusion
    from siamese_core.judge.inference import Scorer
    from siamese_core.runs.run import Run
    scorer = Scorer.from_run("def1", app_ws)
    assert scorer.fusion is None
    names = tuple(FEATURES)
    f = Fusion(names, (0.0,) * len(names), (1.0,) * len(names), tuple(-1.0 if n == "distance" else 0.5 for n in names),
               0.0, 0.61)
    Run(app_ws / "runs" / "def1").save_verdict(f.to_dict(), f.threshold, "calibrated (fusion)")
    assert scorer.threshold == 0.61 and scorer.fusion is not None and scorer.fusion.threshold == 0.61


# --- keys: exactly the affected parts are recomputed ----------------------------------------------------------

@pytest.fixture
def pairs_csv(app_ws) -> Path:
    """6 pairs over 7 image files, 2 pairs a shard (3 shards); image u.png is named only by the second shard."""
    from siamese_core.data.store import open_dataset
    ds = open_dataset("tiny", app_ws)
    d = app_ws.parent / "imgs"
    d.mkdir()
    names = ["a.png", "b.png", "c.png", "d.png", "u.png", "e.png", "f.png"]
    for i, n in enumerate(names):
        (d / n).write_bytes(_png(ds.images[3 * i]))
    rows = [("a.png", "b.png"), ("c.png", "d.png"), ("u.png", "a.png"), ("b.png", "c.png"), ("e.png", "f.png"),
            ("a.png", "f.png")]
    with open(d / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_a", "image_b"])
        w.writerows(rows)
    return d / "pairs.csv"


def _keys(kind, app_ws, pairs_csv, t=0.5, fusion=None):
    from siamese_core.scale import plan as pl
    if kind == "score":
        source, tasks = pl.pairs_tasks(pairs_csv, 2, t)
    else:
        source, tasks = pl.dataset_tasks("tiny", app_ws, 24)
    return [s.key for s in pl.plan(kind, source, tasks, "def1", app_ws, fusion).shards]


def test_ray_shard_keys_change_exactly_where_their_inputs_did(app_ws, pairs_csv, monkeypatch):
    from siamese_core.scale import plan as pl
    score, embed = _keys("score", app_ws, pairs_csv), _keys("embed", app_ws, pairs_csv)
    assert len(score) == 3 and len(set(score)) == 3 and len(embed) == 3
    assert _keys("score", app_ws, pairs_csv) == score  # nothing changed: every shard kept

    # an image replaced under the same name: only the shard that names it
    u = pairs_csv.parent / "u.png"
    u.write_bytes(pairs_csv.parent.joinpath("e.png").read_bytes())
    now = _keys("score", app_ws, pairs_csv)
    assert [a != b for a, b in zip(score, now)] == [False, True, False]
    score = now
    # another threshold, or another fusion: every score shard, no embedding shard
    assert all(a != b for a, b in zip(score, _keys("score", app_ws, pairs_csv, t=0.6)))
    fused = _keys("score", app_ws, pairs_csv, fusion={"kind": "logistic", "threshold": 0.5})
    assert all(a != b for a, b in zip(score, fused))
    assert _keys("embed", app_ws, pairs_csv) == embed
    # a new model: everything
    model = app_ws / "runs" / "def1" / "model.keras"
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 1_000_000))
    assert all(a != b for a, b in zip(score, _keys("score", app_ws, pairs_csv)))
    assert all(a != b for a, b in zip(embed, _keys("embed", app_ws, pairs_csv)))
    score, embed = _keys("score", app_ws, pairs_csv), _keys("embed", app_ws, pairs_csv)
    # the code's format: everything
    monkeypatch.setattr(pl, "FORMAT", pl.FORMAT + 1)
    assert all(a != b for a, b in zip(score, _keys("score", app_ws, pairs_csv)))
    assert all(a != b for a, b in zip(embed, _keys("embed", app_ws, pairs_csv)))


def test_a_stored_evaluation_is_reused_until_something_it_depends_on_changes(app_ws, labelled):
    from siamese_core.judge import calibration as cal
    from siamese_core.judge.fusion import FEATURES, Fusion
    from siamese_core.judge.inference import Scorer
    from siamese_core.runs.run import Run
    scorer = Scorer.from_run("def1", app_ws)
    first = cal.evaluate_pairs(scorer, labelled, workspace=app_ws)
    assert "reused" not in first
    again = cal.evaluate_pairs(scorer, labelled, workspace=app_ws)
    assert again["reused"] == "all" and again["kinds"] == first["kinds"]
    # another threshold: the summary is recomputed from the stored scores, the pairs are not judged again
    t2 = first["threshold"] + 0.05
    other_t = cal.evaluate_pairs(scorer, labelled, threshold=t2, workspace=app_ws)
    assert other_t["reused"] == "scores" and other_t["threshold"] == t2
    assert cal.evaluate_pairs(scorer, labelled, threshold=t2, workspace=app_ws)["reused"] == "all"
    # an image replaced under the same name: judged again
    img = labelled.parent / "t000.png"
    img.write_bytes(labelled.parent.joinpath("t005.png").read_bytes())
    assert "reused" not in cal.evaluate_pairs(scorer, labelled, workspace=app_ws)
    # a new fusion: judged again
    names = tuple(FEATURES)
    f = Fusion(names, (0.0,) * len(names), (1.0,) * len(names), tuple(-1.0 if n == "distance" else 0.5 for n in names),
               0.0, 0.5)
    Run(app_ws / "runs" / "def1").save_verdict(f.to_dict(), 0.5, "calibrated (fusion)")
    fused = cal.evaluate_pairs(scorer, labelled, workspace=app_ws)
    assert "reused" not in fused and fused["fused"] is True
    # the code's format: judged again
    old = cal.EVAL_FORMAT
    try:
        cal.EVAL_FORMAT = old + 1
        assert "reused" not in cal.evaluate_pairs(scorer, labelled, workspace=app_ws)
    finally:
        cal.EVAL_FORMAT = old


def test_a_search_index_is_rebuilt_exactly_when_its_model_dataset_or_format_changes(app_ws, monkeypatch):
    from siamese_core.judge.fusion import FEATURES, Fusion
    from siamese_core.judge.inference import Scorer
    from siamese_core.runs.run import Run
    from siamese_core.scale import search
    scorer = Scorer.from_run("def1", app_ws)
    assert search.build_index(scorer, "tiny", app_ws).status == "built"
    assert search.build_index(scorer, "tiny", app_ws).status == "reused"
    names = tuple(FEATURES)
    f = Fusion(names, (0.0,) * len(names), (1.0,) * len(names), (0.5,) * len(names), 0.0, 0.5)
    Run(app_ws / "runs" / "def1").save_verdict(f.to_dict(), 0.5, "calibrated (fusion)")  # embeddings do not use it
    assert search.build_index(scorer, "tiny", app_ws).status == "reused"
    model = app_ws / "runs" / "def1" / "model.keras"
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 1_000_000))
    again = search.build_index(scorer, "tiny", app_ws)
    assert again.status == "rebuilt" and "model of run 'def1' changed" in again.reason
    monkeypatch.setattr(search, "FORMAT", search.FORMAT + 1)
    again = search.build_index(scorer, "tiny", app_ws)
    assert again.status == "rebuilt" and "older version" in again.reason


def _fake_embed_job(out: Path, keys=("k0", "k1")) -> None:
    """Two embedding shards and the job.json of a finished embed job, without Ray."""
    import json
    import pyarrow as pa
    from siamese_core.scale import shards
    out.mkdir(parents=True, exist_ok=True)
    v = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    for s, key in enumerate(keys):
        e = v[20 * s:20 * s + 20]
        shards.write_shard(out, s, key, pa.table({
            "row": np.arange(20 * s, 20 * s + 20), "name": [f"r{i}" for i in range(20 * s, 20 * s + 20)],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(e.reshape(-1)), 8), "error": [""] * 20}))
    (out / "job.json").write_text(json.dumps({"kind": "embed", "shards": len(keys), "keys": list(keys)}))


def test_a_shard_index_is_keyed_on_its_shards_and_format_and_built_under_a_lock(tmp_path, monkeypatch):
    from siamese_core.core.errors import SiameseError
    from siamese_core.core.locks import LockTimeout, file_lock
    from siamese_core.scale import shard_index
    from siamese_core.scale.shards import read_shards
    out = tmp_path / "emb"
    _fake_embed_job(out)
    assert shard_index.build_shard_index(out, "flat")["status"] == "built"
    assert shard_index.build_shard_index(out, "flat")["status"] == "reused"
    monkeypatch.setattr(shard_index, "FORMAT", shard_index.FORMAT + 1)
    assert shard_index.build_shard_index(out, "flat")["status"] == "built"
    with file_lock(out / "index.lock", "test", 1):  # another builder holds it
        with pytest.raises(LockTimeout, match=r"the index of .* is busy: locked by pid \d+ .*waited 0.3 s"):
            shard_index.build_shard_index(out, "flat", wait_s=0.3)
    # a shard rewritten by another job since job.json was written is never served as this job's
    _fake_embed_job(tmp_path / "other", keys=("x0", "x1"))
    os.replace(tmp_path / "other" / "part-00001.parquet", out / "part-00001.parquet")
    with pytest.raises(SiameseError, match="part-00001.parquet is not the one this job finished with"):
        read_shards(out)


def test_search_index_folders_never_collide_and_their_key_names_run_and_dataset(app_ws):
    from siamese_core.scale.search import index_path
    assert index_path("a__b", "c", app_ws) != index_path("a", "b__c", app_ws)
    assert index_path("a", "b__c", app_ws) == app_ws / "indexes" / "a" / "b__c"


# --- the sweep ---------------------------------------------------------------------------------------------------

def test_the_sweep_removes_what_dead_writers_left_and_keeps_what_live_ones_write(app_ws):
    from siamese_core.core.procs import owner_tag
    from siamese_core.core.sweep import UNTAGGED_AGE_S, sweep_workspace
    from siamese_core.data.store import list_datasets, open_dataset
    dead, live = dead_owner_tag(), owner_tag()
    ds_dir, runs = app_ws / "datasets", app_ws / "runs"
    # a killed prepare (a whole images.npy in a temporary folder), a live one, a killed upload and a killed index
    (ds_dir / f".tmp-new{dead}-ab12").mkdir()
    (ds_dir / f".tmp-new{dead}-ab12" / "images.npy").write_bytes(b"\0" * 4096)
    (ds_dir / f".tmp-other{live}-cd34").mkdir()
    (app_ws / ".uploads" / f".upload-{dead}-ef56").mkdir(parents=True)
    (app_ws / "indexes" / "def1").mkdir(parents=True)
    (app_ws / "indexes" / "def1" / f".tmp-tiny{dead}-0a0b").mkdir()
    # a killed run write (a model half-saved) and a killed deletion
    (runs / "def1" / f".model.keras{dead}-1234.tmp.keras").write_bytes(b"half a model")
    (runs / f".trash-gone{dead}-5678").mkdir()
    # prepare --overwrite killed between its two renames: no 'tiny2' any more, its data only in the old copy
    import shutil
    shutil.copytree(ds_dir / "tiny", ds_dir / f".old-tiny2{dead}-9abc")
    # ... and one killed after both: the old copy goes
    shutil.copytree(ds_dir / "tiny", ds_dir / f".old-tiny{dead}-def0")
    # left by a version without owner tags: old enough, and recent
    legacy_old, legacy_new = ds_dir / ".tmp-legacy-x1y2z3", ds_dir / ".tmp-recent-q1w2e3"
    legacy_old.mkdir()
    legacy_new.mkdir()
    past = time.time() - UNTAGGED_AGE_S - 60
    os.utime(legacy_old, (past, past))
    # never touched: lock files and what a user put there
    (app_ws / "train.lock").touch()
    (runs / "def1" / ".notes").write_text("mine")

    done = sweep_workspace(app_ws)
    assert sorted(p.name for p in ds_dir.iterdir()) == sorted(
        [f".tmp-other{live}-cd34", ".tmp-recent-q1w2e3", "tiny", "tiny2"]), done
    assert list_datasets(app_ws) == ["tiny", "tiny2"] and len(open_dataset("tiny2", app_ws)) == len(
        open_dataset("tiny", app_ws))
    assert not list((app_ws / ".uploads").iterdir()) and not list((app_ws / "indexes" / "def1").iterdir())
    assert sorted(p.name for p in (runs / "def1").iterdir() if p.name.startswith(".")) == [".notes"]
    assert not [p for p in runs.iterdir() if p.name.startswith(".")]
    assert (app_ws / "train.lock").exists()
    assert any(line.startswith("put back") and line.endswith("tiny2") for line in done), done


def test_every_command_sweeps_first(app_ws):
    tmp = app_ws / "datasets" / f".tmp-x{dead_owner_tag()}-0001"
    tmp.mkdir()
    assert cli("--workspace", app_ws, "list") == 0
    assert not tmp.exists()


# --- prepare --overwrite ------------------------------------------------------------------------------------------

def _as_live_job(ws: Path, run_id: str):
    """What the tool takes for a training job: the workspace's training lock held for ``run_id``, whose status says
    running with this process's pid and start time."""
    from siamese_core.core.procs import process_start
    from siamese_core.runs.lock import acquire_train_lock
    from siamese_core.runs.run import Run
    fd = acquire_train_lock(run_id, ws)
    Run(ws / "runs" / run_id).write_status("running", reset=True, pid=os.getpid(), pid_start=process_start(os.getpid()))
    return fd


def test_prepare_overwrite_under_a_training_job_is_refused_in_one_line(app_ws, capsys):
    from siamese_core.runs.run import Run
    images = (app_ws / "datasets" / "tiny" / "images.npy").read_bytes()
    fd = _as_live_job(app_ws, "def1")  # def1 trains on 'tiny'
    try:
        code = cli("--workspace", app_ws, "prepare", "--name", "tiny", "--limit", 12, "--size", 32, "--overwrite")
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert "dataset 'tiny' is used by the running job 'def1'" in err[0] and "stop --run def1" in err[0]
    finally:
        os.close(fd)
        Run(app_ws / "runs" / "def1").write_status("stopped", reset=True)
    assert (app_ws / "datasets" / "tiny" / "images.npy").read_bytes() == images
    assert not [p for p in (app_ws / "datasets").iterdir() if p.name.startswith(".")]
    # the job ended: the same command replaces it, in one step
    assert cli("--workspace", app_ws, "prepare", "--name", "tiny", "--limit", 12, "--size", 32, "--overwrite") == 0
    assert (app_ws / "datasets" / "tiny" / "images.npy").read_bytes() != images


def test_a_job_that_starts_while_the_new_dataset_is_built_still_stops_the_swap(app_ws):
    from siamese_core.core.config import DataConfig
    from siamese_core.core.errors import DatasetError
    from siamese_core.runs.delete import prepare_dataset
    from siamese_core.runs.run import Run
    images = (app_ws / "datasets" / "tiny" / "images.npy").read_bytes()
    held = []

    def progress(done, total):  # the job is launched while the new images are being written
        if not held:
            held.append(_as_live_job(app_ws, "def1"))
    try:
        with pytest.raises(DatasetError, match="used by the running job 'def1'"):
            prepare_dataset(DataConfig(limit=12, size=32), "tiny", app_ws, overwrite=True, progress=progress)
    finally:
        for fd in held:
            os.close(fd)
        Run(app_ws / "runs" / "def1").write_status("stopped", reset=True)
    assert (app_ws / "datasets" / "tiny" / "images.npy").read_bytes() == images
    assert not [p for p in (app_ws / "datasets").iterdir() if p.name.startswith(".")]


# --- process control ---------------------------------------------------------------------------------------------

DECOY = """
import signal, sys, time
def got(signum, frame):
    open(sys.argv[1], "a").write(f"{signum}\\n")
signal.signal(signal.SIGTERM, got)
open(sys.argv[1], "a").write("ready\\n")
time.sleep(60)
"""


@pytest.fixture
def decoy(tmp_path):
    """A process that is not the job (another program that happens to have the recorded pid) and writes down every
    SIGTERM it receives."""
    log = tmp_path / "decoy.log"
    p = subprocess.Popen([sys.executable, "-c", DECOY, str(log)])
    end = time.time() + 30
    while not (log.exists() and "ready" in log.read_text()) and time.time() < end:
        time.sleep(0.02)
    yield p, log
    p.kill()
    p.wait()


@pytest.mark.parametrize("record", ["other start time", "no start time"])
def test_stop_never_signals_a_process_that_is_not_the_job(tmp_path, decoy, record):
    from siamese_core.core.procs import process_start
    from siamese_core.runs.run import Run
    p, log = decoy
    run = Run(tmp_path / "runs" / "r")
    run.path.mkdir(parents=True)
    start = process_start(p.pid)
    fields = {"pid": p.pid, "pid_start": start - 1} if record == "other start time" else {"pid": p.pid}
    run.write_status("running", reset=True, **fields)
    if record == "no start time":  # a record older than the process that now has its pid
        import json
        st = json.loads(run.status_path.read_text())
        st["updated"] = time.time() - 3600
        run.status_path.write_text(json.dumps(st))
    st = run.stop(wait_s=0.3)
    time.sleep(0.3)
    assert p.poll() is None and log.read_text() == "ready\n", log.read_text()
    assert st["status"] == "interrupted"  # the job's process is gone; the decoy is not taken for it


def test_stop_signals_the_job_when_pid_and_start_time_match(tmp_path, decoy):
    from siamese_core.core.procs import process_start
    from siamese_core.runs.run import Run
    p, log = decoy
    run = Run(tmp_path / "runs" / "r")
    run.path.mkdir(parents=True)
    run.write_status("running", reset=True, pid=p.pid, pid_start=process_start(p.pid))
    run.stop(wait_s=0.3)
    end = time.time() + 10
    while str(int(signal.SIGTERM)) not in log.read_text() and time.time() < end:
        time.sleep(0.02)
    assert log.read_text().splitlines()[1:] == [str(int(signal.SIGTERM))]


def test_no_module_changes_its_working_directory():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "siamese_core").rglob("*.py")
                 if re.search(r"\bos\.chdir\(", p.read_text())]
    assert offenders == []


# --- durable writes, one helper, one rule for permissions -----------------------------------------------------------

def test_a_result_is_flushed_before_it_is_renamed_into_place_and_its_folder_after(tmp_path, monkeypatch):
    from siamese_core.core import files
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append(("replace", str(b))), real_replace(a, b))[1])
    files.write_json_atomic(tmp_path / "x.json", {"a": 1})
    kinds = [(k, Path(p).name if k == "replace" else p) for k, p in calls]
    assert kinds[0][0] == "fsync" and ".x.json@" in kinds[0][1]  # the temporary file, flushed
    assert kinds[1] == ("replace", "x.json")
    assert kinds[2] == ("fsync", str(tmp_path))  # then the folder: the rename itself is on the disk
    calls.clear()
    new = files.make_temp_dir(tmp_path, ".tmp-d")
    (new / "a.bin").write_bytes(b"1")
    files.replace_dir(new, tmp_path / "d")
    flushed = [p for k, p in calls if k == "fsync"]
    assert str(new / "a.bin") in flushed[0] or flushed[0].endswith("a.bin")
    assert flushed[-1] == str(tmp_path) and (tmp_path / "d" / "a.bin").read_bytes() == b"1"


def test_results_are_published_by_the_one_helper_only():
    """Every rename that publishes a result, every temporary file or folder, goes through core/files.py: no module
    renames by itself, makes private (0600/0700) temporaries, or sets its own modes."""
    pattern = re.compile(r"\bos\.replace\(|\bos\.rename\(|\.rename\(|\.replace\(tmp|mkstemp|mkdtemp|"
                         r"TemporaryDirectory|NamedTemporaryFile|chmod\(|0o[0-7]{3}")
    allowed = {"siamese_core/core/files.py", "siamese_core/core/sweep.py", "siamese_core/core/locks.py"}
    offenders = []
    for p in sorted(list((ROOT / "siamese_core").rglob("*.py")) + list((ROOT / "app_pages").rglob("*.py"))):
        rel = str(p.relative_to(ROOT))
        if rel in allowed:
            continue
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if pattern.search(line.split("#")[0]):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert offenders == []


def test_every_file_and_folder_follows_the_users_umask(tmp_path):
    """One rule: files 0666 and folders 0777 less the umask. With umask 027 nothing written is world-readable and
    everything is group-readable: no 0600 file or 0700 folder made aside from the rule."""
    from siamese_core.core.config import DataConfig
    from siamese_core.core.files import make_temp_dir, write_json_atomic
    from siamese_core.data.store import build_dataset
    from siamese_core.runs.lock import active_job
    old = os.umask(0o027)
    try:
        ws = tmp_path / "ws"
        build_dataset(DataConfig(limit=6, size=32), "d", ws)
        build_dataset(DataConfig(limit=6, size=32, seed=1), "d", ws, overwrite=True)
        active_job(ws)  # the training lock file
        write_json_atomic(ws / "x.json", {"a": 1})
        make_temp_dir(ws, ".tmp-t")
    finally:
        os.umask(old)
    modes = {str(p.relative_to(ws)): p.stat().st_mode & 0o777 for p in ws.rglob("*")}
    assert {m for p, m in modes.items() if (ws / p).is_file()} == {0o640}, modes
    assert {m for p, m in modes.items() if (ws / p).is_dir()} == {0o750}, modes


# --- locks --------------------------------------------------------------------------------------------------------

def test_a_busy_index_lock_gives_up_in_one_line_naming_its_holder(app_ws):
    from siamese_core.core.locks import LockTimeout, file_lock
    from siamese_core.judge.inference import Scorer
    from siamese_core.scale.search import build_index, index_path
    scorer = Scorer.from_run("def1", app_ws)
    path = index_path("def1", "tiny", app_ws)
    path.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time, json, os;"
                               "f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX);"
                               "f.truncate(0); f.write(json.dumps({'pid': os.getpid(), 'cmd': 'index --dataset tiny',"
                               "'since': time.time()})); f.flush(); print('held', flush=True); time.sleep(60)",
                               str(path.parent / "tiny.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.time()
        with pytest.raises(LockTimeout) as e:
            build_index(scorer, "tiny", app_ws, wait_s=0.5)
        assert 0.5 <= time.time() - t0 < 5
        msg = str(e.value)
        assert "\n" not in msg and f"pid {holder.pid} (index --dataset tiny)" in msg and "waited 0.5 s" in msg
    finally:
        holder.kill()
        holder.wait()
    with file_lock(path.parent / "tiny.lock", "x", 5):  # released with its holder
        pass
    assert build_index(scorer, "tiny", app_ws).status == "built"


# --- untrusted text -----------------------------------------------------------------------------------------------

def test_formula_cells_are_neutralised_and_our_numbers_stay_numbers():
    from siamese_core.data.pairs_csv import csv_text, safe_cell
    assert [safe_cell(x) for x in ("=1+2", "+cmd", "-x.png", "@SUM(A1)", "\tx", "\rx", "a=b", "-12.5", "+3", "0.25")] \
        == ["'=1+2", "'+cmd", "'-x.png", "'@SUM(A1)", "'\tx", "'\rx", "a=b", "-12.5", "+3", "0.25"]
    rows = list(csv.reader(csv_text([{"image_a": "=HYPERLINK(\"http://x\")", "angle": "-12.500"}],
                                    ["image_a", "angle"]).splitlines()))
    assert rows == [["image_a", "angle"], ["'=HYPERLINK(\"http://x\")", "-12.500"]]


def test_score_pairs_neutralises_file_names_and_reads_its_own_output_back(app_ws, capsys):
    from siamese_core.data.store import open_dataset
    ds = open_dataset("tiny", app_ws)
    d = app_ws.parent / "evil"
    d.mkdir()
    names = ["=1+2.png", "-rotated.png", "@SUM(A1).png", "plain.png"]
    for i, n in enumerate(names):
        (d / n).write_bytes(_png(ds.images[i]))
    with open(d / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_a", "image_b", "note"])
        w.writerows([[names[0], names[1], "=cmd|'/c calc'!A1"], [names[2], names[3], "ok"]])
    out = d / "scored.csv"
    assert cli("--workspace", app_ws, "score", "--run", "def1", "--pairs", d / "pairs.csv", "--out", out) == 0
    rows = list(csv.DictReader(open(out, newline="")))
    cells = [c for r in rows for c in r.values()]
    assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r") or (c[:1] == "-" and not re.fullmatch(
        r"-[\d.]+", c))], cells
    assert rows[0]["image_a"] == "'=1+2.png" and rows[0]["note"] == "'=cmd|'/c calc'!A1"
    assert all(r["error"] == "" and float(r["score"]) >= 0 for r in rows)
    # the scored CSV is itself a valid pairs CSV: its neutralised names still find their files
    again = d / "again.csv"
    assert cli("--workspace", app_ws, "score", "--run", "def1", "--pairs", out, "--out", again) == 0
    assert [r["score"] for r in csv.DictReader(open(again, newline=""))] == [r["score"] for r in rows]


def test_file_names_shown_as_markdown_are_escaped():
    from app_pages.safe_text import md_code, md_escape
    for evil in ("[click](http://evil.example)", "![x](http://e/p.png)", "<img src=x>", ":red[alarm]",
                 "`code`", "$x^2$", "*bold*", "# Heading", "- item", "1. item", "www.evil.example"):
        text = md_escape(evil)
        assert "\n" not in text and not re.search(r"(?<!\\)[\[\]<>`$*]", text), (evil, text)
    assert md_escape("tile_01.png: not an image") == "tile_01.png: not an image"
    assert md_code("a`b") == "``a`b``"


def test_the_dashboard_sweeps_when_a_session_starts(app_ws):
    from apptools import open_app
    tmp = app_ws / ".uploads" / f".upload-{dead_owner_tag()}-0002"
    (tmp / "tiles").mkdir(parents=True)
    (tmp / "tiles" / "a.png").write_bytes(b"an upload's half-extracted tile")
    open_app()
    assert not tmp.exists()
