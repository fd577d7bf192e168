"""A run's status under concurrent writers, and a launch that meets a status probe."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import threading

from siamese_core.runs.lock import acquire_train_lock, active_job
from siamese_core.runs.run import Run


def test_status_never_goes_backwards_within_a_launch(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    Run(d).write_status("queued", reset=True, pid=None)
    Run(d).write_status("running", pid=123, epoch=1)
    st = Run(d).write_status("queued", pid=123)  # the launcher's late write
    assert st["status"] == "running" and st["epoch"] == 1
    Run(d).write_status("finishing")
    assert Run(d).write_status("running", step=9)["status"] == "finishing"
    assert Run(d).write_status("finished")["status"] == "finished"
    # a resume is a new launch: it may start again
    assert Run(d).write_status("queued", reset=True)["status"] == "queued"


def _writer(d, prefix, n):
    for i in range(n):
        Run(d).write_status("running", **{f"{prefix}{i}": i})


def test_concurrent_writers_lose_no_field(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    Run(d).write_status("queued", reset=True)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(d, p, 60)) for p in ("a", "b", "c")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    st = json.loads((d / "status.json").read_text())
    assert all(f"{p}{i}" in st for p in "abc" for i in range(60))
    assert st["status"] == "running"


def test_a_launch_is_not_refused_because_the_dashboard_is_probing(tmp_path):
    ws = tmp_path / "ws"
    stop = threading.Event()

    def probe():
        while not stop.is_set():
            active_job(ws)

    threads = [threading.Thread(target=probe) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for k in range(150):
            fd = acquire_train_lock(f"run{k}", ws)  # raises RunError on a false "already running"
            os.close(fd)
    finally:
        stop.set()
        for t in threads:
            t.join()
    fd = acquire_train_lock("holder", ws)
    try:
        assert active_job(ws) == "holder"
    finally:
        os.close(fd)


def test_server_paths_are_confined_to_the_import_roots(tmp_path, monkeypatch):
    import pytest
    from siamese_core.core.config import check_import_path, import_roots
    from siamese_core.core.errors import SiameseError
    ws, data = tmp_path / "ws", tmp_path / "data"
    (data / "tiles").mkdir(parents=True)
    (ws / "inside").mkdir(parents=True)
    (ws / "link").symlink_to(tmp_path / "data")  # a link out of the workspace does not escape
    monkeypatch.delenv("SIAMESE_IMPORT_ROOTS", raising=False)
    assert check_import_path(str(ws / "inside"), ws) == (ws / "inside").resolve()
    for bad in ("/etc", str(data / "tiles"), str(ws / "link" / "tiles"), str(ws / ".." / "data")):
        with pytest.raises(SiameseError, match="SIAMESE_IMPORT_ROOTS"):
            check_import_path(bad, ws)
    monkeypatch.setenv("SIAMESE_IMPORT_ROOTS", f"{data}{os.pathsep}/nonexistent")
    assert check_import_path(str(data / "tiles"), ws) == (data / "tiles").resolve()
    assert len(import_roots(ws)) == 3


def test_a_kill_between_the_two_checkpoint_files_leaves_the_previous_pair(tmp_path):
    """checkpoint.json only ever names a complete model file; the other file is the one being written."""
    from siamese_core.learn.callbacks import EpochCheckpoint

    class Model:  # stands in for a Keras model: save() writes a file named after the epoch it holds
        epoch = 0

        def save(self, path):
            path.write_text(f"epoch {self.epoch}")

    d = tmp_path / "r"
    d.mkdir()
    cb, m = EpochCheckpoint(d), Model()
    cb.set_model(m) if hasattr(cb, "set_model") else setattr(cb, "model", m)
    for e in range(3):
        m.epoch = e + 1
        cb.on_epoch_end(e, {"loss": 1.0})
        p = Run(d).checkpoint_path()
        assert p.read_text() == f"epoch {e + 1}" and Run(d).checkpoint_epoch() == e + 1
    # the next epoch dies after writing its model file but before checkpoint.json: the pair is still epoch 3's
    other = next(n for n in Run.CHECKPOINT_FILES if n != Run(d).checkpoint_path().name)
    (d / other).write_text("epoch 4, checkpoint.json not yet written")
    assert Run(d).checkpoint_path().read_text() == "epoch 3" and Run(d).checkpoint_epoch() == 3


def test_a_bundle_carries_no_paths_or_process_of_the_build_machine(tmp_path):
    """What scripts/build_pretrained.py ships: the bundle files, the calibration pairs' scores without their
    image paths, the status without pid or error."""
    import numpy as np
    run = Run(tmp_path / "build")
    run.path.mkdir()
    for name in Run.BUNDLE:
        (run.path / name).write_text("{}")
    np.savez(run.calibration_scores_path, score=np.array([0.1, 0.9], np.float32), label=np.array([0, 1], np.uint8),
             path_a=np.array(["/home/me/a.png", "/home/me/b.png"]), path_b=np.array(["/x/c.png", "/x/d.png"]))
    run.write_status("finished", reset=True, pid=4321, device="CPU (2 cores)", started="2025-01-01T00:00:00")
    bundle = run.export_bundle(tmp_path / "out")
    assert sorted(p.name for p in bundle.path.iterdir()) == sorted(Run.BUNDLE)
    with np.load(bundle.calibration_scores_path) as z:
        assert list(z["path_a"]) == ["", ""] and list(z["path_b"]) == ["", ""]
        assert np.allclose(z["score"], [0.1, 0.9]) and list(z["label"]) == [0, 1]
    st = json.loads((bundle.path / Run.STATUS).read_text())
    assert set(st) == {"status", "device", "started", "updated"} and st["status"] == "finished"
    assert (bundle.path / Run.STATUS).stat().st_mode & 0o444 == 0o444  # readable once installed
