"""A run remembers the data it was trained on: the dataset's fingerprint is recorded when training begins, and
a run whose dataset was rebuilt with other images (``prepare --overwrite``) refuses to resume (its pairs index
images that are no longer there) from the CLI, the job and the dashboard; ``evaluate`` says so."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from apptools import ok, open_app, widget  # noqa: E402
from conftest import cli  # noqa: E402
from siamese_core.core.errors import RunError  # noqa: E402
from siamese_core.runs.run import Run
from siamese_core.runs.registry import run_path  # noqa: E402
from siamese_core.data.store import images_fingerprint, open_dataset  # noqa: E402

pytestmark = pytest.mark.slow  # its module fixture trains a run of its own

PREPARE = ("prepare", "--name", "d", "--limit", 12, "--size", 32)


def _prepare(ws, *extra) -> int:
    return cli("--workspace", ws, *PREPARE, *extra)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """Dataset 'd' (12 synthetic 32 px tiles) and run 'r' trained on it for one of two epochs, stopped."""
    ws = tmp_path_factory.mktemp("fp") / "ws"
    assert _prepare(ws) == 0
    assert cli("--workspace", ws, "train", "--dataset", "d", "--epochs", 1, "--steps-per-epoch", 2,
               "--batch-size", 8, "--run-id", "r", "--verbose", 0) == 0
    run = Run(run_path("r", ws))
    cfg = json.loads((run.path / "config.json").read_text())
    cfg["train"]["epochs"] = 2  # as if it had been stopped after its first of two epochs
    (run.path / "config.json").write_text(json.dumps(cfg))
    run.write_status("stopped", reset=True)
    return ws


@pytest.fixture
def ws(base, tmp_path, monkeypatch) -> Path:
    import shutil
    w = tmp_path / "ws"
    shutil.copytree(base, w, ignore=shutil.ignore_patterns("train.lock"))
    monkeypatch.setenv("SIAMESE_WORKSPACE", str(w))
    return w


def test_the_fingerprint_is_the_content_computed_once_or_lazily(ws):
    ds = open_dataset("d", ws)
    info = json.loads((ds.path / "dataset.json").read_text())
    assert info["fingerprint"] == images_fingerprint(ds.path / "images.npy", ds.groups)  # written while building
    # a dataset made before fingerprints: computed on first use and recorded
    del info["fingerprint"]
    (ds.path / "dataset.json").write_text(json.dumps(info))
    assert open_dataset("d", ws).fingerprint == ds.fingerprint
    assert json.loads((ds.path / "dataset.json").read_text())["fingerprint"] == ds.fingerprint
    # any changed pixel or group changes it
    groups = ds.groups.copy()
    groups[-1] += 1
    assert images_fingerprint(ds.path / "images.npy", groups) != ds.fingerprint
    rows = np.load(ds.path / "images.npy")
    rows[3, 5, 7, 0] ^= 1
    np.save(ds.path / "other.npy", rows)
    assert images_fingerprint(ds.path / "other.npy", ds.groups) != ds.fingerprint


def test_a_run_records_the_fingerprint_of_its_dataset(ws):
    rec = json.loads((run_path("r", ws) / "data.json").read_text())
    assert rec["dataset"] == "d" and rec["fingerprint"] == open_dataset("d", ws).fingerprint
    assert Run(run_path("r", ws)).dataset_change() is None


def test_the_same_rebuild_keeps_the_run_resumable(ws):
    time.sleep(1.1)  # a later creation time: only the content decides
    assert _prepare(ws, "--overwrite") == 0
    run = Run(run_path("r", ws))
    assert run.dataset_change() is None
    run.resume_check(ws)  # does not raise


def test_resume_is_refused_after_the_dataset_was_rebuilt(ws, capsys):
    before = open_dataset("d", ws).fingerprint
    assert _prepare(ws, "--overwrite", "--seed", 1) == 0
    assert open_dataset("d", ws).fingerprint != before
    capsys.readouterr()
    assert cli("--workspace", ws, "train", "--resume", "r", "--verbose", 0) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "dataset 'd' changed since run 'r' was trained (prepare --overwrite)" in err and "train a new run" in err
    run = Run(run_path("r", ws))
    assert run.status()["status"] == "stopped" and run.checkpoint_epoch() == 1 and run.metrics()  # untouched
    # the job itself checks again (the dataset may change between the launcher's check and the job's start)
    from siamese_core.learn.train import run_training
    with pytest.raises(RunError, match="changed since run 'r'"):
        run_training(run, resume=True, verbose=0)
    assert run.status()["status"] == "failed" and run.checkpoint_epoch() == 1


def test_evaluate_warns_that_the_scores_are_of_the_old_images(ws, capsys):
    assert cli("--workspace", ws, "evaluate", "--run", "r") == 0
    assert "warning" not in capsys.readouterr().err
    assert _prepare(ws, "--overwrite", "--seed", 1) == 0
    capsys.readouterr()
    assert cli("--workspace", ws, "evaluate", "--run", "r") == 0
    out = capsys.readouterr()
    assert out.err.startswith("warning: dataset 'd' changed since run 'r' was trained") and out.err.count("\n") == 1
    assert "test pairs (test pairs: " in out.out  # what is reported, and which pairs
    assert cli("--workspace", ws, "evaluate", "--run", "r", "--json") == 0
    assert "changed since run 'r'" in json.loads(capsys.readouterr().out)["dataset_changed"]


def test_a_run_from_before_fingerprints_compares_dates(ws):
    run = Run(run_path("r", ws))
    (run.path / "data.json").unlink()
    assert run.dataset_change() is None  # the dataset is older than the run
    old = time.time() - 3600
    os.utime(run.path / "config.json", (old, old))  # the run is older than the dataset now
    assert "changed since run 'r'" in run.dataset_change()


def test_a_deleted_dataset_is_named(ws):
    import shutil
    shutil.rmtree(ws / "datasets" / "d")
    with pytest.raises(RunError, match="dataset 'd' of run 'r' no longer exists"):
        Run(run_path("r", ws)).resume_check(ws)


def test_the_dashboard_refuses_the_resume_with_the_same_line(ws, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert _prepare(ws, "--overwrite", "--seed", 1) == 0
    at = open_app("train")
    widget(at, "selectbox", "train_resume_run").set_value("r")
    widget(at, "button", "train_resume").click().run()
    ok(at)
    errors = [e.value for e in at.error]
    assert any("dataset 'd' changed since run 'r' was trained" in e and "train a new run" in e for e in errors), errors
    assert Run(run_path("r", ws)).status()["status"] == "stopped"  # nothing was launched


def test_the_threshold_page_says_its_gallery_may_show_other_images(ws, monkeypatch):
    monkeypatch.chdir(ROOT)
    at = open_app("threshold", query={"run": "r"})
    assert not [w.value for w in at.warning if "changed since run" in w.value]
    assert _prepare(ws, "--overwrite", "--seed", 1) == 0
    at = open_app("threshold", query={"run": "r"})
    warned = [w.value for w in at.warning if "changed since run 'r'" in w.value]
    assert warned and "may not be the calibration pairs" in warned[0], [w.value for w in at.warning]
