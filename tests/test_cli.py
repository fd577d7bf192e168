"""The command line end to end, as a user runs it: real subprocesses for the one-line error contract."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from siamese_core.data.images import encode_png

from conftest import cli

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, ws=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "siamese_core"] + (["--workspace", str(ws)] if ws else []) + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def _tiles(tiny_ws, tmp_path):
    from siamese_core.data.store import open_dataset
    ds = open_dataset("tiny", tiny_ws)
    paths = []
    for i in (0, 1, 3):
        p = tmp_path / f"t{i}.png"
        p.write_bytes(encode_png(np.asarray(ds.images[i])))
        paths.append(p)
    return paths


def test_evaluate_json_and_text(tiny_ws, capsys):
    from siamese_core.runs.run import Run
    assert cli("--workspace", tiny_ws, "evaluate", "--run", "seed1", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["threshold"] == 0.2 and out["all"]["n_pairs"] > 0
    assert out["without_identical"]["n_pairs"] < out["all"]["n_pairs"]  # seed has identical pairs
    m = out["all"]["metrics"]
    assert m["tp"] + m["fp"] + m["tn"] + m["fn"] == out["all"]["n_pairs"]
    # the run's test pairs, not the calibration pairs its threshold was fitted on, and it says so
    test = Run(tiny_ws / "runs" / "seed1").test_scores()
    assert out["pairs"]["split"] == "test" and out["all"]["n_pairs"] == len(test["score"])
    assert "never used for training or the threshold" in out["pairs"]["label"]
    assert cli("--workspace", tiny_ws, "evaluate", "--run", "def1", "--threshold", "0.5") == 0
    text = capsys.readouterr().out
    assert "confusion" in text and "test pairs (test pairs: 2 places never used for training or the threshold)" in text


def _old_run(tiny_ws, tmp_path, rid="def1"):
    """A copy of the workspace in which run ``rid`` looks as a run trained before the test split does: no test
    scores, pairs.npz without a test mask, an evaluation.json of its validation pairs, no test_fraction."""
    import shutil
    from siamese_core.data.pairs import Pairs
    ws = tmp_path / "oldws"
    shutil.copytree(tiny_ws, ws, ignore=shutil.ignore_patterns("train.lock"))
    d = ws / "runs" / rid
    (d / "test_scores.npz").unlink()
    p = Pairs.load(d / "pairs.npz")
    np.savez(d / "pairs.npz", a=p.a, b=p.b, label=p.label, val=p.val)
    ev = json.loads((d / "evaluation.json").read_text())
    ev.pop("pairs"), ev.pop("threshold_source")
    (d / "evaluation.json").write_text(json.dumps(ev))
    cfg = json.loads((d / "config.json").read_text())
    del cfg["pairs"]["test_fraction"]
    (d / "config.json").write_text(json.dumps(cfg))
    return ws


def test_an_old_run_without_test_pairs_is_labelled_optimistic(tiny_ws, tmp_path, capsys):
    ws = _old_run(tiny_ws, tmp_path)
    assert cli("--workspace", ws, "evaluate", "--run", "def1", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    from siamese_core.runs.run import Run
    v = Run(ws / "runs" / "def1").val_scores()
    assert out["pairs"]["split"] == "validation" and out["all"]["n_pairs"] == len(v["score"])
    assert out["pairs"]["label"] == "validation pairs (the threshold was fitted on them: optimistic)"
    assert cli("--workspace", ws, "list") == 0
    line = [x for x in capsys.readouterr().out.splitlines() if "def1:" in x][0]
    assert "validation pairs (the threshold was fitted on them: optimistic)" in line
    assert Run(ws / "runs" / "def1").config.pairs.test_fraction == 0.0


def test_score_pair_and_threshold_direction(tiny_ws, tmp_path, capsys):
    a, b, _ = _tiles(tiny_ws, tmp_path)
    assert cli("--workspace", tiny_ws, "score", "--run", "def1", a, a, "--json") == 0
    same = json.loads(capsys.readouterr().out)
    assert same["score"] < 1e-3 and same["same_place"] is True  # identical tiles: distance ~0
    assert cli("--workspace", tiny_ws, "score", "--run", "def1", a, b, "--json", "--threshold", "-1") == 0
    assert json.loads(capsys.readouterr().out)["same_place"] is False


def test_score_csv_keeps_columns_and_reports_bad_rows(tiny_ws, tmp_path, capsys):
    a, b, c = _tiles(tiny_ws, tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "notimg.png").write_text("hello")
    inp = tmp_path / "pairs.csv"
    inp.write_text("image_a,image_b,note\n"
                   f"{a.name},{b.name},\"rel, with comma\"\n"
                   f"{a},{c},absolute\n"
                   "\n"
                   f"{a.name},missing.png,gone\n"
                   f"{a.name},notimg.png,bad\n", encoding="utf-8-sig")
    out = tmp_path / "out.csv"
    assert cli("--workspace", tiny_ws, "score", "--run", "seed1", "--pairs", inp, "--out", out) == 0
    captured = capsys.readouterr()
    assert "scored 2 pair(s), 2 failed" in captured.out
    assert "missing.png" in captured.err and "notimg.png" in captured.err
    rows = list(csv.DictReader(out.open()))
    assert [r["note"] for r in rows] == ["rel, with comma", "absolute", "gone", "bad"]
    assert 0 <= float(rows[0]["score"]) <= 1 and rows[0]["same_place"] in ("true", "false")
    assert rows[2]["score"] == "" and "missing.png" in rows[2]["error"]


@pytest.mark.parametrize("args, needle", [
    (("train", "--dataset", "nope"), "dataset 'nope' not found"),
    (("prepare", "--name", "../evil"), "invalid dataset name"),
    (("prepare", "--source", "folder", "--name", "x"), "needs a path"),
    (("prepare", "--source", "folder", "--path", "/no/such/dir", "--name", "x"), "does not exist"),
    (("score", "--run", "nope", "a.png", "b.png"), "run 'nope' not found"),
    (("evaluate", "--run", "../../etc"), "invalid run name"),
    (("prepare", "--name", "x", "--size", "5"), "tile size 5 is out of range"),
])
@pytest.mark.slow
def test_bad_input_one_line_error(ws, args, needle):
    r = run_cli(*args, ws=ws)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (ws / "datasets").exists() or not any((ws / "datasets").iterdir())


@pytest.mark.slow
def test_score_bad_image_one_line(tiny_ws, tmp_path):
    bad = tmp_path / "fake.jpg"
    bad.write_bytes(b"<html>not a picture</html>")
    good = _tiles(tiny_ws, tmp_path)[0]
    r = run_cli("score", "--run", "def1", good, bad, ws=tiny_ws)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error:") and "fake.jpg: not an image" in r.stderr
    assert "Traceback" not in r.stderr


def test_list(tiny_ws, capsys):
    from siamese_core.runs.run import Run
    assert cli("--workspace", tiny_ws, "list") == 0
    out = capsys.readouterr().out
    assert "tiny: 72 images, 24 tiles" in out and "seed1: finished" in out
    ev = Run(tiny_ws / "runs" / "def1").evaluation()["without_identical"]
    line = [x for x in out.splitlines() if "def1:" in x][0]
    assert (f"accuracy {ev['metrics']['accuracy']:.4f} on {ev['n_pairs']} pairs (test pairs: 2 places never used for "
            f"training or the threshold)") in line, line


@pytest.mark.slow
def test_folder_import_then_train_and_score(ws, tmp_path, capsys):
    """prepare --source folder → train → evaluate → score, both presets, on real image files."""
    from siamese_core.data.sources.synthetic import synthetic_tile
    folder = tmp_path / "tiles" / "nested"
    folder.mkdir(parents=True)
    for i in range(12):
        (folder / f"t{i:02d}.png").write_bytes(encode_png(synthetic_tile(i, 64, seed=9)))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    assert cli("--workspace", ws, "prepare", "--source", "folder", "--path", tmp_path / "tiles",
               "--name", "f", "--size", 40) == 0
    out = capsys.readouterr()
    assert "36 images from 12 tiles" in out.out and "1 skipped" in out.out and "broken.jpg" in out.err
    for preset in ("seed", "default"):
        assert cli("--workspace", ws, "train", "--dataset", "f", "--preset", preset, "--epochs", 1,
                   "--steps-per-epoch", 2, "--batch-size", 8, "--run-id", preset, "--verbose", 0) == 0
        assert cli("--workspace", ws, "evaluate", "--run", preset, "--json") == 0
        capsys.readouterr()
        p = folder / "t00.png"
        assert cli("--workspace", ws, "score", "--run", preset, p, folder / "t01.png", "--json") == 0
        s = json.loads(capsys.readouterr().out)
        assert np.isfinite(s["score"])


def test_stop_command(tiny_ws, tmp_path, capsys):
    """`stop` asks a run to stop (a stop file its job polls every batch); an unknown run is one line."""
    import shutil
    ws = tmp_path / "ws"
    shutil.copytree(tiny_ws, ws)
    assert cli("--workspace", ws, "stop", "--run", "seed1", "--wait", 0) == 0
    assert "stop requested for seed1 (status now: finished)" in capsys.readouterr().out
    assert (ws / "runs" / "seed1" / "stop").exists()
    assert cli("--workspace", ws, "stop", "--run", "nope") == 2
    assert "run 'nope' not found" in capsys.readouterr().err
