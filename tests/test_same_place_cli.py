"""Same place, end to end as a user runs it: labelled pairs from an A/B folder, calibrate, evaluate per
kind, and `score` with no --run (the bundled model) on tiles of other sizes."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from siamese_core.core.config import PAIR_KINDS
from siamese_core.data.augment import acquisition
from siamese_core.data.sources.synthetic import synthetic_tile
from siamese_core.runs.run import BUNDLED_DIR

from conftest import cli


def _write(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def imagery(tmp_path_factory):
    """An A/B folder (5 places on two simulated dates, 384 px) and a folder of 6 single tiles."""
    root = tmp_path_factory.mktemp("imagery")
    for i in range(5):
        t = synthetic_tile(i, 384, seed=3)
        _write(root / "ab" / "A" / f"p{i}.png", t)
        _write(root / "ab" / "B" / f"p{i}.png", acquisition(t, np.random.default_rng(i), k=2)[0])
    for i in range(6):
        _write(root / "tiles" / f"t{i}.png", synthetic_tile(20 + i, 200, seed=4))
    return root


@pytest.fixture(scope="module")
def labelled(imagery):
    out = imagery / "pairs"
    assert cli("make-pairs", "--ab", imagery / "ab", "--tiles", imagery / "tiles", "--out", out,
               "--per-place", 2, "--tiles-n", 4, "--seed", 7) == 0
    return out / "pairs.csv"


def test_make_pairs_writes_every_kind_balanced_and_seeded(imagery, labelled, tmp_path):
    rows = list(csv.DictReader(open(labelled)))
    kinds = {r["kind"] for r in rows}
    assert kinds == set(PAIR_KINDS)
    for k in kinds:
        labels = [r["label"] for r in rows if r["kind"] == k]
        assert labels.count("0") == labels.count("1") > 0
    assert all((labelled.parent / r["image_b"]).exists() for r in rows)
    again = tmp_path / "again"
    assert cli("make-pairs", "--ab", imagery / "ab", "--tiles", imagery / "tiles", "--out", again,
               "--per-place", 2, "--tiles-n", 4, "--seed", 7) == 0
    assert (again / "pairs.csv").read_text() == labelled.read_text()
    first = [r for r in rows if r["kind"] == "two_dates"][0]
    assert (cv2.imread(str(labelled.parent / first["image_b"])) == cv2.imread(
        str(again / first["image_b"]))).all()


@pytest.mark.slow
def test_calibrate_then_evaluate_per_kind(tiny_copy, labelled, capsys):
    assert cli("--workspace", tiny_copy, "calibrate", "--run", "def1", "--pairs", labelled, "--as", "def1cal") == 0
    out = capsys.readouterr().out
    assert "fusion fitted on" in out
    from siamese_core.runs.run import Run
    fusion = Run(tiny_copy / "runs" / "def1cal").fusion_dict()
    assert fusion["kind"] == "boosted" and "structure" in fusion["names"] and fusion["trees"]["roots"]
    assert {"below", "above"} <= set(fusion["band"])
    assert Run(tiny_copy / "runs" / "def1cal").threshold() == fusion["threshold"]  # the pair, saved as one
    assert not Run(tiny_copy / "runs" / "def1").has_fusion()  # --as leaves the original alone
    assert cli("--workspace", tiny_copy, "evaluate", "--run", "def1cal", "--pairs", labelled, "--json") == 0
    rep = json.loads(capsys.readouterr().out)
    assert set(rep["kinds"]) == set(PAIR_KINDS) | {"all"}
    for e in rep["kinds"].values():  # per kind: the verdict's numbers, and each piece of evidence alone
        assert {"recall", "false_same", "undecided", "accuracy_decided", "roc_auc_structure_identity",
                "recall_at_1pct_distance"} <= set(e)
    # a 3-step model knows nothing; the geometric evidence still separates rotated copies
    assert rep["kinds"]["rotated"]["roc_auc_score"] >= 0.9
    assert rep["kinds"]["rotated"]["roc_auc_inliers"] >= 0.9
    assert (tiny_copy / "runs" / "def1cal" / "evaluations" / "pairs.json").exists()
    # the calibrated copy's stored test scores are learned distances: evaluated at the distance threshold they
    # were measured with (as the original run reports them), not at the fused threshold, and labelled so
    assert cli("--workspace", tiny_copy, "evaluate", "--run", "def1", "--json") == 0
    plain = json.loads(capsys.readouterr().out)
    assert cli("--workspace", tiny_copy, "evaluate", "--run", "def1cal", "--json") == 0
    copy = json.loads(capsys.readouterr().out)
    assert copy["threshold"] == plain["threshold"] != fusion["threshold"]
    assert copy["all"]["metrics"] == plain["all"]["metrics"]
    assert "learned distance alone" in copy["pairs"]["label"] and "--pairs" in copy["pairs"]["label"]


def test_calibrate_refuses_a_csv_without_labels(tiny_ws, tmp_path, capsys):
    p = tmp_path / "p.csv"
    p.write_text("image_a,image_b\na.png,b.png\n")
    assert cli("--workspace", tiny_ws, "calibrate", "--run", "def1", "--pairs", p, "--as", "x") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no 'label' column" in err


@pytest.mark.skipif(not (BUNDLED_DIR / "model.keras").exists(), reason="no bundled model in this checkout")
def test_score_without_run_uses_the_bundled_model_on_any_size(imagery, tmp_path, capsys, ws):
    t = synthetic_tile(7, 600, seed=11)
    h = 600
    turned = cv2.warpAffine(t, cv2.getRotationMatrix2D((h / 2, h / 2), 35, 0.7), (h, h))
    small = cv2.resize(turned, (420, 420), interpolation=cv2.INTER_AREA)  # another size and resolution
    _write(tmp_path / "a.jpg", t)
    _write(tmp_path / "b.png", small)
    _write(tmp_path / "c.png", synthetic_tile(8, 300, seed=12))
    (tmp_path / "pairs.csv").write_text("image_a,image_b\na.jpg,b.png\na.jpg,c.png\na.jpg,missing.png\n")
    assert cli("score", "--pairs", tmp_path / "pairs.csv", "--out", tmp_path / "out.csv") == 0
    cap = capsys.readouterr()
    assert "bundled model 'pretrained'" in cap.err and "line 4" in cap.err
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert float(rows[0]["score"]) < float(rows[1]["score"])
    assert rows[0]["same_place"] == "true" and rows[1]["same_place"] == "false"
    assert abs(float(rows[0]["angle"]) - 35) < 2 and int(rows[0]["inliers"]) > 20
    assert rows[0]["verdict"] == "same" and rows[1]["verdict"] in ("different", "uncertain")
    # B (zoomed out 0.7x, turned) shows all of A's ground and more: it covers all of A
    assert float(rows[0]["overlap"]) > 0.95 and len(json.loads(rows[0]["polygon"])) >= 4
    assert rows[2]["score"] == "" and "missing.png" in rows[2]["error"]
    assert cli("score", tmp_path / "a.jpg", tmp_path / "b.png") == 0
    assert "matched at 35° rotation" in capsys.readouterr().out


def test_the_command_line_works_from_any_folder(tmp_path):
    """./run.sh installs the package into the environment: a user need not stand in the repository."""
    import os
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "siamese_core", "--workspace", str(tmp_path / "ws"), "list"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0, out.stderr[-500:]
    assert "pretrained" in out.stdout  # the bundled run is found from there too


@pytest.mark.slow
def test_train_says_how_to_weigh_the_keypoints_in(tmp_path, labelled, capsys):
    ws = tmp_path / "ws"
    assert cli("--workspace", ws, "prepare", "--name", "d", "--limit", 24, "--size", 48) == 0
    assert cli("--workspace", ws, "train", "--dataset", "d", "--epochs", 1, "--steps-per-epoch", 1,
               "--batch-size", 8, "--run-id", "r1", "--verbose", 0) == 0
    hint = [line for line in capsys.readouterr().err.splitlines() if "learned distance alone" in line]
    assert len(hint) == 1 and "calibrate --run r1 --pairs PAIRS/pairs.csv" in hint[0]
    assert cli("--workspace", ws, "calibrate", "--run", "r1", "--pairs", labelled) == 0  # the hint's last step works
    from siamese_core.runs.run import Run
    assert Run(ws / "runs" / "r1").has_fusion()


def test_inside_the_band_the_verdict_is_uncertain_with_its_reason(tiny_ws, imagery, tmp_path, capsys):
    """A fused run whose band covers every score: score --pairs says "uncertain" (with a reason naming the
    evidence on each side) for every pair, while same_place still gives the call at the threshold."""
    import shutil
    ws = tmp_path / "ws"
    shutil.copytree(tiny_ws / "runs" / "def1", ws / "runs" / "wide", ignore=shutil.ignore_patterns("*.lock"))
    from siamese_core.runs.run import Run
    Run(ws / "runs" / "wide").save_verdict(
        {"kind": "logistic", "names": ["distance", "sift"], "mean": [0.5, 1.0], "std": [0.3, 1.0],
         "weights": [-1.0, 1.0], "bias": 0.0, "threshold": 0.5, "band": {"below": 1.0, "above": 1.0}},
        0.5, "calibrated (fusion)")
    tiles = sorted((imagery / "tiles").iterdir())
    pairs = tmp_path / "p.csv"
    pairs.write_text(f"image_a,image_b\n{tiles[0]},{tiles[0]}\n{tiles[0]},{tiles[1]}\n")
    assert cli("--workspace", ws, "score", "--run", "wide", "--pairs", pairs, "--out", tmp_path / "o.csv") == 0
    rows = list(csv.DictReader(open(tmp_path / "o.csv")))
    assert [r["verdict"] for r in rows] == ["uncertain", "uncertain"]
    assert all("for the same place, " in r["reason"] and "; for different places, " in r["reason"] for r in rows)
    assert rows[0]["same_place"] == "true"
    capsys.readouterr()
    assert cli("--workspace", ws, "score", "--run", "wide", tiles[0], tiles[1]) == 0
    assert "uncertain band" in capsys.readouterr().out
