"""Evaluations keyed by the data: ``evaluate --run R --dataset D`` scores a run on pairs drawn from a dataset
and stores ``evaluations/dataset-D.json`` + ``.npz`` under the run (the workspace's ``evaluations/<run>/`` for
the read-only bundled run); ``evaluate --pairs`` stores an ``.npz`` too; the Threshold page tunes on any of
them ("Scores to tune on"), and on a fresh workspace evaluates the bundled model on the demo dataset.

Workspaces are copies of the shared ``tiny_ws`` fixture (dataset ``tiny``, runs ``seed1``/``def1``); the
bundled run is a stand-in (a copy of ``def1`` without its validation scores), so nothing depends on what
siamese_core/pretrained/ holds now.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.conftest import cli  # noqa: E402
from apptools import ok, open_app, texts, widget  # noqa: E402

APP = str(ROOT / "streamlit_app.py")
TIMEOUT = 180
SUMMARY_KEYS = {"pairs", "same", "different", "roc_auc_score", "roc_auc_distance", "roc_auc_inliers",
                "roc_auc_structure", "accuracy", "tp", "fp", "tn", "fn"}


# --- helpers ----------------------------------------------------------------------------------------------

def total(at: AppTest) -> int:
    lines = [m.value for m in at.markdown if "thr-counts" in m.value]
    assert lines, "the confusion counts line is missing"
    found = dict(re.findall(r"<b>(TP|FN|FP|TN) (\d+)</b>", lines[0]))
    assert set(found) == {"TP", "FN", "FP", "TN"}, lines[0]
    return sum(int(v) for v in found.values())


@pytest.fixture
def ws(tiny_ws, tmp_path, monkeypatch) -> Path:
    """A private copy of the tiny workspace, also $SIAMESE_WORKSPACE."""
    w = tmp_path / "ws"
    shutil.copytree(tiny_ws, w, ignore=shutil.ignore_patterns("train.lock"))
    monkeypatch.setenv("SIAMESE_WORKSPACE", str(w))
    monkeypatch.chdir(ROOT)
    return w


@pytest.fixture
def fake_bundled(tiny_ws, tmp_path, monkeypatch) -> Path:
    """A stand-in for the bundled read-only run 'pretrained': a copy of def1 without val_scores.npz."""
    from siamese_core.runs import run as run_module
    d = tmp_path / "pkg" / "pretrained"
    shutil.copytree(tiny_ws / "runs" / "def1", d, ignore=shutil.ignore_patterns("evaluations"))
    (d / "val_scores.npz").unlink()
    d = d.resolve()
    monkeypatch.setattr(run_module, "BUNDLED_DIR", d)
    return d


# --- the command line ---------------------------------------------------------------------------------------

def test_cli_evaluates_a_run_on_a_dataset_and_stores_json_and_npz(ws, capsys):
    from siamese_core.data.store import open_dataset
    assert cli("--workspace", ws, "evaluate", "--run", "def1", "--dataset", "tiny") == 0
    out = capsys.readouterr().out
    assert out.startswith("dataset tiny: threshold ")
    assert re.search(r"^\s+all: n=\d+ \(\d+ same\)  ROC-AUC=[\d.]+  same found [\d.]+%, false same [\d.]+%, "
                     r"undecided [\d.]+% \(accuracy on decided [\d.]+%\)\n\s+ROC-AUC alone: learned distance [\d.]+",
                     out, re.M), out
    d = ws / "runs" / "def1" / "evaluations"
    info = json.loads((d / "dataset-tiny.json").read_text())
    assert info["dataset"] == "tiny" and list(info["kinds"]) == ["all"] and info["fused"] is False
    e = info["kinds"]["all"]
    assert SUMMARY_KEYS <= set(e) and e["tp"] + e["fn"] + e["fp"] + e["tn"] == e["pairs"] == e["same"] + e["different"]
    with np.load(d / "dataset-tiny.npz") as z:
        score, label, a, b = z["score"], z["label"], z["a"], z["b"]
    assert len(score) == len(label) == len(a) == len(b) == e["pairs"] > 0
    assert not np.any(a == b) and set(np.unique(label)) == {0, 1}
    groups = open_dataset("tiny", ws).groups
    assert np.array_equal(groups[a] != groups[b], label == 1)  # label 0 = same place (group)
    assert e["same"] == int(np.sum(label == 0))

    # the same dataset gives the same pairs (fixed seed); --json prints the summary
    assert cli("--workspace", ws, "evaluate", "--run", "def1", "--dataset", "tiny", "--json") == 0
    again = json.loads(capsys.readouterr().out)
    assert again["kinds"]["all"]["pairs"] == e["pairs"]
    with np.load(d / "dataset-tiny.npz") as z:
        assert np.array_equal(z["a"], a) and np.array_equal(z["b"], b)


def test_cli_refuses_an_unknown_dataset_and_both_sources(ws, capsys):
    assert cli("--workspace", ws, "evaluate", "--run", "def1", "--dataset", "nope") == 2
    assert cli("--workspace", ws, "evaluate", "--run", "def1", "--dataset", "tiny", "--pairs", "x.csv") == 2
    err = capsys.readouterr().err
    assert "nope" in err and "not both" in err and "Traceback" not in err


def test_pairs_are_capped_and_seeded():
    from siamese_core.judge.calibration import dataset_pairs
    groups = np.repeat(np.arange(600), 3)
    p = dataset_pairs(groups)
    assert len(p) == 2000 and not p.identical.any() and set(np.unique(p.label)) == {0, 1}
    q = dataset_pairs(groups)
    assert np.array_equal(p.a, q.a) and np.array_equal(p.b, q.b)
    assert len(dataset_pairs(groups, max_pairs=50)) == 50


def test_the_bundled_run_is_evaluated_into_the_workspace(ws, fake_bundled, capsys):
    from siamese_core.data.images import encode_png
    from siamese_core.data.store import open_dataset
    from siamese_core.judge.calibration import evaluate_pairs
    from siamese_core.judge.inference import Scorer
    from siamese_core.runs.run import Run
    assert Run(fake_bundled).evaluations_dir(ws) == ws / "evaluations" / "pretrained"
    assert Run(ws / "runs" / "def1").evaluations_dir(ws) == ws / "runs" / "def1" / "evaluations"

    assert cli("--workspace", ws, "evaluate", "--dataset", "tiny") == 0  # no --run: the bundled model
    assert "dataset tiny" in capsys.readouterr().out
    d = ws / "evaluations" / "pretrained"
    assert (d / "dataset-tiny.json").exists() and (d / "dataset-tiny.npz").exists()
    assert not (fake_bundled / "evaluations").exists()

    # labelled pairs too: json + npz (score, label, kind) in the same place
    ds = open_dataset("tiny", ws)
    img = ws.parent / "imgs"
    img.mkdir()
    for i in range(6):
        (img / f"t{i}.png").write_bytes(encode_png(np.asarray(ds.images[i])))
    rows = [("t0.png", "t1.png", 0 if ds.groups[0] == ds.groups[1] else 1, "rotated"),
            ("t0.png", "t5.png", 0 if ds.groups[0] == ds.groups[5] else 1, "other"),
            ("t3.png", "t4.png", 0 if ds.groups[3] == ds.groups[4] else 1, "rotated"),
            ("t2.png", "t3.png", 0 if ds.groups[2] == ds.groups[3] else 1, "other")]
    with open(img / "labelled.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_a", "image_b", "label", "kind"])
        w.writerows(rows)
    res = evaluate_pairs(Scorer.from_run(None, ws), img / "labelled.csv", workspace=ws)
    assert set(res["kinds"]) == {"rotated", "other", "all"}
    with np.load(d / "labelled.npz") as z:
        assert len(z["score"]) == 4 and list(z["kind"]) == [r[3] for r in rows]
        assert list(z["label"]) == [r[2] for r in rows] and str(z["path_a"][0]).endswith("t0.png")
    assert (d / "labelled.json").exists()


# --- the Threshold page --------------------------------------------------------------------------------------

def test_threshold_page_tunes_on_a_stored_evaluation(ws):
    assert cli("--workspace", ws, "evaluate", "--run", "def1", "--dataset", "tiny") == 0
    with np.load(ws / "runs" / "def1" / "evaluations" / "dataset-tiny.npz") as z:
        n_eval = len(z["score"])
    at = open_app("threshold", query={"run": "def1"})
    box = widget(at, "selectbox", "thr_eval")
    assert box.options[0].startswith("Calibration pairs") and any(o.startswith("Dataset tiny") for o in box.options)
    assert box.value == "val"
    val_total = total(at)
    assert val_total != n_eval
    box.set_value("eval:dataset-tiny").run()
    ok(at)
    assert total(at) == n_eval
    body = texts(at)
    assert "pairs drawn from dataset `tiny`" in body and "evaluation pairs" in body
    assert len(at.get("plotly_chart")) == 4 and not at.error
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    steps = spec["layout"]["sliders"][0]["steps"]
    assert len(steps) >= 101 and all(s["method"] == "update" for s in steps)
    assert f"of {n_eval}" not in steps[0]["args"][1]["title.text"]  # counts, per step
    counts = [sum(int(x) for x in re.findall(r"(?:TP|FN|FP|TN) (\d+)", s["args"][1]["title.text"])) for s in steps]
    assert set(counts) == {n_eval}
    assert at.image, "the mistakes gallery shows the dataset's tiles"
    widget(at, "slider", "thr_slider").set_value(widget(at, "slider", "thr_slider").max).run()
    ok(at)
    assert total(at) == n_eval
    widget(at, "selectbox", "thr_eval").set_value("val").run()
    ok(at)
    assert total(at) == val_total


@pytest.mark.slow
def test_first_launch_evaluates_the_bundled_model_on_the_demo_dataset(tmp_path, monkeypatch, fake_bundled):
    ws = tmp_path / "fresh"
    monkeypatch.setenv("SIAMESE_WORKSPACE", str(ws))
    monkeypatch.chdir(ROOT)
    at = open_app("threshold", query={"run": "pretrained"})
    from siamese_core.data.store import list_datasets
    assert list_datasets(ws) == ["demo"]
    assert "ships without validation scores" in texts(at) and not [m for m in at.markdown if "thr-counts" in m.value]
    button = widget(at, "button", "thr_eval_demo")
    assert button.label == "Evaluate the bundled model on dataset demo"
    button.click().run()
    ok(at)
    assert not at.error, [e.value for e in at.error]
    assert widget(at, "selectbox", "thr_eval").value == "eval:dataset-demo"
    n = total(at)
    with np.load(ws / "evaluations" / "pretrained" / "dataset-demo.npz") as z:
        assert len(z["score"]) == n > 0
    assert not (fake_bundled / "evaluations").exists()
    assert widget(at, "button", "thr_save").disabled  # still read-only
    assert [b for b in at.button if b.key == "thr_eval_demo"] == []  # done: no second offer
