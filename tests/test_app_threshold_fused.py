"""The Threshold page on a fused run (one calibrated on labelled pairs): it sweeps the fused scores of the
calibration pairs in ``calibration_scores.npz`` (what ``score`` and Compare output), filters them by kind
of pair, shows the calibration images of its mistakes (a missing image is one caption, never an error),
and refuses to save into the bundled read-only run with a disabled button and the fix.

The workspace is a copy of the shared ``tiny_ws`` fixture whose ``default`` run gets a hand-made
calibration (40 pairs of two kinds, PNG tiles in a temporary folder, one of them missing) and a valid
``fusion.json``; nothing here changes what other tests see.
"""

from __future__ import annotations

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

from siamese_core.data.images import encode_png  # noqa: E402
from apptools import ok, open_app, texts, widget  # noqa: E402

pytestmark = pytest.mark.slow  # its module fixture calibrates a run of its own (fits the fusion)

APP = str(ROOT / "streamlit_app.py")
TIMEOUT = 120
N_PAIRS, N_TWO_DATES = 40, 24
FUSION = {"kind": "logistic", "names": ["distance"], "mean": [0.5], "std": [0.2], "weights": [-1.0], "bias": 0.0,
          "threshold": 0.5}


# --- helpers (small copies of those in test_app_pages.py) ------------------------------------------------

def counts(at: AppTest) -> dict:
    lines = [m.value for m in at.markdown if "thr-counts" in m.value]
    assert lines, "the confusion counts line is missing"
    found = dict(re.findall(r"<b>(TP|FN|FP|TN) (\d+)</b>", lines[0]))
    assert set(found) == {"TP", "FN", "FP", "TN"}, lines[0]
    return {k: int(v) for k, v in found.items()}


def default_run(ws: Path) -> str:
    from siamese_core.runs.registry import list_runs, run_path
    from siamese_core.runs.run import Run
    for rid in list_runs(ws):
        d = run_path(rid, ws)
        if d.parent.parent == ws and (d / "model.keras").exists() and Run(d).config.model.preset == "default":
            return rid
    raise AssertionError("the tiny workspace has no finished default run")


def write_calibration(run_dir: Path, img_dir: Path, missing: bool = True) -> dict:
    """A hand-made fused calibration: 40 pairs (24 two_dates, 16 rotated), PNG tiles, fusion.json and the
    fused threshold. Pair 0 is a truly-same pair scored 0.97 (the most confident mistake at 0.5) whose image B
    does not exist when ``missing``."""
    rng = np.random.default_rng(7)
    img_dir.mkdir(parents=True, exist_ok=True)
    label = np.array([i % 2 for i in range(N_PAIRS)], np.uint8)
    score = np.clip(0.3 + 0.4 * label + rng.normal(0, 0.18, N_PAIRS), 0.01, 0.99).astype(np.float32)
    score[0], label[0] = 0.97, 0
    kind = np.array(["two_dates"] * N_TWO_DATES + ["rotated"] * (N_PAIRS - N_TWO_DATES))
    path_a, path_b = [], []
    for i in range(N_PAIRS):
        for side, out in (("a", path_a), ("b", path_b)):
            p = img_dir / f"pair{i:02d}_{side}.png"
            if not (missing and i == 0 and side == "b"):
                p.write_bytes(encode_png(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)))
            out.append(str(p.resolve()))
    np.savez(run_dir / "calibration_scores.npz", score=score, label=label, kind=kind, path_a=np.array(path_a),
             path_b=np.array(path_b), distance=(score * 2).astype(np.float32),
             inliers=rng.integers(0, 40, N_PAIRS).astype(np.int32))
    # in the layout of runs calibrated before verdict.json (two files): such runs still load
    (run_dir / "verdict.json").unlink(missing_ok=True)
    (run_dir / "fusion.json").write_text(json.dumps(FUSION))
    (run_dir / "threshold.json").write_text(json.dumps({"threshold": 0.5, "source": "calibrated (fusion)"}))
    return {"score": score, "label": label, "kind": kind}


# --- fixtures -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fused_base(tiny_ws, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("fusedws") / "ws"
    shutil.copytree(tiny_ws, base, ignore=shutil.ignore_patterns("train.lock"))
    return base


@pytest.fixture
def fused_ws(fused_base, tmp_path, monkeypatch):
    """(workspace, run id): a private copy of the tiny workspace whose default run is calibrated (fused)."""
    from siamese_core.runs.registry import run_path
    ws = tmp_path / "ws"
    shutil.copytree(fused_base, ws)
    rid = default_run(ws)
    write_calibration(run_path(rid, ws), tmp_path / "calib_images")
    monkeypatch.setenv("SIAMESE_WORKSPACE", str(ws))
    monkeypatch.chdir(ROOT)
    return ws, rid


@pytest.fixture
def fake_bundled(fused_base, tmp_path, monkeypatch):
    """An empty workspace and a stand-in for the bundled read-only run 'pretrained' (a copy of the tiny default
    run without val_scores.npz), so the test does not depend on what siamese_core/pretrained/ holds now."""
    from siamese_core.runs import run as run_module
    ws = tmp_path / "empty"
    (ws / "datasets").mkdir(parents=True)
    bundled = (tmp_path / "pkg" / "pretrained")
    shutil.copytree(fused_base / "runs" / default_run(fused_base), bundled)
    (bundled / "val_scores.npz").unlink()
    bundled = bundled.resolve()
    monkeypatch.setattr(run_module, "BUNDLED_DIR", bundled)
    monkeypatch.setenv("SIAMESE_WORKSPACE", str(ws))
    monkeypatch.chdir(ROOT)
    return bundled


# --- tests ----------------------------------------------------------------------------------------------

def test_fused_run_sweeps_its_calibration_pairs_by_kind(fused_ws):
    ws, rid = fused_ws
    at = open_app("threshold", query={"run": rid})
    body = texts(at)
    assert f"fused scores of {N_PAIRS} calibration pairs: learned distance + keypoints" in body
    assert "fused" in body and "Lower score = more alike" in body
    assert not at.error, [e.value for e in at.error]
    c = counts(at)
    assert sum(c.values()) == N_PAIRS
    assert "calibration pairs" in [m.value for m in at.markdown if "thr-counts" in m.value][0]

    kinds = widget(at, "multiselect", "thr_kinds")
    assert sorted(kinds.value) == ["rotated", "two_dates"]
    kinds.set_value(["rotated"]).run()
    ok(at)
    assert sum(counts(at).values()) == N_PAIRS - N_TWO_DATES
    widget(at, "multiselect", "thr_kinds").set_value(["two_dates"]).run()
    ok(at)
    assert sum(counts(at).values()) == N_TWO_DATES
    widget(at, "multiselect", "thr_kinds").set_value([]).run()
    ok(at)
    assert "at least one kind" in texts(at)
    widget(at, "multiselect", "thr_kinds").set_value(["two_dates", "rotated"]).run()
    ok(at)
    assert sum(counts(at).values()) == N_PAIRS

    slider = widget(at, "slider", "thr_slider")
    assert slider.value == pytest.approx(0.5)
    assert -0.05 <= slider.min <= 0.02 and 0.97 <= slider.max <= 1.05  # the fused scores' range, not a distance's
    mid = counts(at)
    slider.set_value(slider.min).run()
    ok(at)
    low = counts(at)
    assert low["TP"] == 0 and low["FP"] == 0 and sum(low.values()) == N_PAIRS
    widget(at, "slider", "thr_slider").set_value(widget(at, "slider", "thr_slider").max).run()
    ok(at)
    high = counts(at)
    assert high["FN"] == 0 and high["TN"] == 0 and sum(high.values()) == N_PAIRS
    assert len({tuple(sorted(d.items())) for d in (low, mid, high)}) == 3
    assert len(at.get("plotly_chart")) == 4


def test_fused_mistakes_show_the_calibration_images_and_a_caption_for_a_missing_one(fused_ws):
    ws, rid = fused_ws
    at = open_app("threshold", query={"run": rid})
    assert len(at.tabs) == 2
    assert at.image, "the mistakes gallery shows the calibration images"
    captions = [c for im in at.image for c in im.captions]
    assert any(c.startswith("pair") and c.endswith(".png") for c in captions), captions
    body = texts(at)
    assert "image B not shown" in body and "pair00_b.png" in body  # the missing file, one line
    assert "Traceback" not in body and not at.error
    assert re.search(r"two_dates · score 0\.9700 \(> 0\.5000\) · \d+ inliers", body), body
    assert "no longer" not in body and "dataset" not in body.split("Pairs misclassified")[-1]


def test_fused_workspace_run_saves_its_threshold(fused_ws):
    from siamese_core.runs.registry import run_path
    from siamese_core.runs.run import Run
    ws, rid = fused_ws
    at = open_app("threshold", query={"run": rid})
    assert not widget(at, "button", "thr_save").disabled
    widget(at, "button", "thr_snap_f1").click().run()
    ok(at)
    snapped = widget(at, "slider", "thr_slider").value
    widget(at, "button", "thr_save").click().run()
    ok(at)
    assert Run(run_path(rid, ws)).threshold() == pytest.approx(snapped)


def test_bundled_fused_run_is_swept_but_save_is_disabled_with_the_fix(fake_bundled):
    write_calibration(fake_bundled, fake_bundled.parent / "gone", missing=False)
    for f in (fake_bundled.parent / "gone").iterdir():  # the bundled run ships with empty paths
        f.unlink()
    with np.load(fake_bundled / "calibration_scores.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["path_a"] = arrays["path_b"] = np.array([""] * N_PAIRS)
    np.savez(fake_bundled / "calibration_scores.npz", **arrays)
    at = open_app("threshold", query={"run": "pretrained"})
    assert not at.error, [e.value for e in at.error]
    assert "ships without validation scores" not in texts(at)
    assert sum(counts(at).values()) == N_PAIRS
    save = widget(at, "button", "thr_save")
    assert save.disabled and "--as NAME" in save.help
    body = texts(at)
    assert "read-only" in body and "calibrate --run pretrained" in body
    assert "does not store the paths of its calibration images" in body and not at.image
    assert re.search(r"(two_dates|rotated) · score \d\.\d{4} \([>≤] \d\.\d{4}\) · \d+ inliers", body), body


def test_a_refused_save_is_one_line_with_the_fix_not_a_traceback(fused_ws, fake_bundled, monkeypatch):
    """A browser cannot press the disabled button of the bundled run; should a save be refused anyway (here:
    the library's own refusal for the bundled run, delivered to a workspace run), the page shows that one
    line with its fix."""
    from siamese_core.runs.registry import run_path
    from siamese_core.runs.run import Run
    ws, rid = fused_ws
    real = Run.save_threshold
    monkeypatch.setattr(Run, "save_threshold", lambda run, t, source="user": real(Run(fake_bundled), t, source))
    monkeypatch.setenv("SIAMESE_WORKSPACE", str(ws))
    before = (run_path(rid, ws) / "threshold.json").read_text()
    at = open_app("threshold", query={"run": rid})
    widget(at, "button", "thr_save").click().run()
    ok(at)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "\n" not in errors[0] and "Traceback" not in errors[0], errors
    assert "read-only" in errors[0] and "--as NAME" in errors[0]
    assert (run_path(rid, ws) / "threshold.json").read_text() == before


def test_bundled_run_with_neither_score_file_keeps_todays_message(fake_bundled):
    at = open_app("threshold", query={"run": "pretrained"})
    assert "ships without validation scores" in texts(at)
    assert not at.error and not [m for m in at.markdown if "thr-counts" in m.value]


def test_workspace_run_with_neither_score_file_says_it_has_no_model_yet(fused_base, tmp_path, monkeypatch):
    from siamese_core.runs.registry import run_path
    ws = tmp_path / "ws"
    shutil.copytree(fused_base, ws)
    rid = default_run(ws)
    (run_path(rid, ws) / "val_scores.npz").unlink()
    monkeypatch.setenv("SIAMESE_WORKSPACE", str(ws))
    monkeypatch.chdir(ROOT)
    at = open_app("threshold", query={"run": rid})
    assert "has no trained model yet" in texts(at)
    assert not at.error and not [m for m in at.markdown if "thr-counts" in m.value]


def test_the_uncertain_band_moves_with_the_threshold(fused_ws):
    """A fused verdict with an uncertain band: the page shades it and counts the calibration pairs inside it, at
    the slider's threshold (the band is relative to it), and the decided pairs' accuracy."""
    from siamese_core.runs.registry import run_path
    ws, rid = fused_ws
    fusion = dict(FUSION, band={"below": 0.1, "above": 0.05})
    (run_path(rid, ws) / "fusion.json").write_text(json.dumps(fusion))
    v = np.load(run_path(rid, ws) / "calibration_scores.npz")
    s, y = v["score"].astype(float), v["label"]

    def expect(t):
        inside = (s > t - 0.1 + 1e-9) & (s <= t + 0.05 + 1e-9)
        right = ((s[~inside] <= t) == (y[~inside] == 0)).mean()
        return int(inside.sum()), right

    at = open_app("threshold", query={"run": rid})
    widget(at, "selectbox", "thr_eval").set_value("calibration")
    at.run()
    ok(at)
    for t in (None, 0.6):
        if t is not None:
            widget(at, "slider", "thr_slider").set_value(t)
            at.run()
            ok(at)
        t_now = float(widget(at, "slider", "thr_slider").value)
        line = [m.value for m in at.markdown if "thr-band" in m.value]
        assert len(line) == 1, texts(at)
        n_in, right = expect(t_now)
        assert f"<b>{n_in}</b> of {N_PAIRS} calibration pairs undecided" in line[0], (t_now, line[0])
        assert f"<b>{right:.1%}</b>" in line[0]
        assert f"Uncertain band {t_now - 0.1:.4f}–{t_now + 0.05:.4f}" in line[0]
    assert expect(0.5)[0] != expect(0.6)[0]  # the band really moved over other pairs