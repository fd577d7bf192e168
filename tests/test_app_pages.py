"""The dashboard, page by page, with Streamlit's AppTest (no browser): every page renders without an
exception on a real workspace and on an empty one, the key widgets are there, the threshold slider
moves the confusion matrix, uploads are scored or refused with a one-line message, and a tiny
training run launched from the Train page finishes and shows its curves.

The workspace is a copy of the shared ``tiny_ws`` fixture (24 synthetic 48 px tiles, a finished
``seed`` run and a finished ``default`` run), so nothing here changes what other tests see.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from siamese_core.data.images import encode_png  # noqa: E402
from apptools import APP, counts_line, ok, open_app, texts, widget  # noqa: E402

PAGES = ("home", "triplets", "pairs", "train", "compare", "threshold")
TIMEOUT = 120


# --- fixtures and helpers -------------------------------------------------------------------------

def _runs_by_preset(ws: Path) -> dict:
    from siamese_core.runs.registry import list_runs, run_path
    from siamese_core.runs.run import Run
    out = {}
    for rid in list_runs(ws):
        d = run_path(rid, ws)
        if (d / "model.keras").exists() and (d / "val_scores.npz").exists():
            out.setdefault(Run(d).config.model.preset, rid)
    return out


@pytest.fixture
def empty_ws(tmp_path, monkeypatch) -> Path:
    """A workspace with an (empty) datasets folder: no demo dataset is made, nothing to show."""
    ws = tmp_path / "empty"
    (ws / "datasets").mkdir(parents=True)
    monkeypatch.setenv("SIAMESE_WORKSPACE", str(ws))
    monkeypatch.chdir(ROOT)
    return ws


def png_of(ws: Path, index: int) -> bytes:
    from siamese_core.data.store import list_datasets, open_dataset
    ds = open_dataset(list_datasets(ws)[0], ws)
    return encode_png(np.asarray(ds.images[index]))


# --- every page ------------------------------------------------------------------------------------

KEY_WIDGETS = {
    "home": [("button", "home_syn_go"), ("text_input", "home_folder_path"), ("text_input", "home_p2p_path"),
             ("text_input", "home_pq_path"), ("text_input", "home_hub_repo"), ("file_uploader", "home_zip_upload"),
             ("selectbox", "app_dataset"), ("selectbox", "app_run")],
    "triplets": [("multiselect", "tri_source"), ("text_input", "tri_query"), ("number_input", "tri_page"),
                 ("number_input", "tri_jump"), ("button", "tri_jump_go")],
    "pairs": [("toggle", "pairs_identical"), ("slider", "pairs_val"), ("number_input", "pairs_negatives"),
              ("number_input", "pairs_seed"), ("segmented_control", "pairs_label"),
              ("segmented_control", "pairs_split")],
    "train": [("segmented_control", "train_preset"), ("number_input", "train_epochs"),
              ("number_input", "train_batch"), ("number_input", "train_steps"), ("button", "train_launch")],
    "compare": [("file_uploader", "cmp_upload_a"), ("file_uploader", "cmp_upload_b")],
    "threshold": [("slider", "thr_slider"), ("button", "thr_save"), ("button", "thr_snap_f1"),
                  ("button", "thr_snap_acc"), ("button", "thr_snap_saved")],
}


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_its_widgets(app_ws, page):
    at = open_app(page)
    for kind, key in KEY_WIDGETS[page]:
        widget(at, kind, key)
    assert not at.error, [e.value for e in at.error]
    if page in ("triplets", "pairs"):
        assert at.image, "the page shows tiles from the dataset"
    if page == "threshold":
        assert len(at.get("plotly_chart")) == 4 and len(at.tabs) == 2  # matrix, histogram, ROC, PR; mistakes
    if page in ("compare", "threshold"):
        assert "Lower score = more alike" in texts(at)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_explains_what_is_missing_on_an_empty_workspace(empty_ws, page):
    at = open_app(page)
    assert not at.error
    body = texts(at)
    if page in ("triplets", "pairs", "train"):
        assert "Home / data" in body
    from siamese_core.runs.run import BUNDLED_DIR
    if page in ("compare", "threshold") and not (BUNDLED_DIR / "model.keras").exists():
        assert "no trained run" in body.lower()
    elif page == "compare":  # the bundled model answers at once
        assert "pretrained" in body and "no trained run" not in body.lower()
        widget(at, "file_uploader", "cmp_upload_a")
    elif page == "threshold":  # the bundled run sweeps its calibration pairs' fused scores, if it ships them
        assert ("calibration pairs" if (BUNDLED_DIR / "calibration_scores.npz").exists()
                else "ships without validation scores") in body
    assert list((empty_ws / "datasets").iterdir()) == []  # no dataset was made behind the user's back


def test_first_launch_on_a_fresh_workspace_makes_a_demo_dataset(tmp_path, monkeypatch):
    ws = tmp_path / "fresh"
    monkeypatch.setenv("SIAMESE_WORKSPACE", str(ws))
    monkeypatch.chdir(ROOT)
    at = open_app()
    from siamese_core.data.store import list_datasets
    assert list_datasets(ws) == ["demo"]
    assert widget(at, "selectbox", "app_dataset").value == "demo"
    assert at.query_params.get("dataset") == ["demo"] or at.query_params.get("dataset") == "demo"
    at.switch_page("app_pages/triplets.py").run()
    ok(at)
    assert at.image


def test_selection_follows_the_url_and_is_written_back(app_ws):
    runs = _runs_by_preset(app_ws)
    rid = runs["seed"]
    at = open_app(query={"run": rid})
    assert widget(at, "selectbox", "app_run").value == rid
    qp = {k: (v[0] if isinstance(v, list) else v) for k, v in at.query_params.items()}
    assert qp["run"] == rid and qp["dataset"]
    other = runs["default"]
    widget(at, "selectbox", "app_run").set_value(other).run()
    qp = {k: (v[0] if isinstance(v, list) else v) for k, v in at.query_params.items()}
    assert qp["run"] == other
    at.switch_page("app_pages/threshold.py").run()
    ok(at)
    assert other in texts(at)


# --- triplets and pairs ---------------------------------------------------------------------------------

def test_triplets_pages_filters_and_jump(app_ws):
    at = open_app("triplets")
    widget(at, "selectbox", "tri_per_page").set_value(4).run()
    captions = [c for im in at.image for c in im.captions]
    assert len(captions) == 4 * 3 and any("original" in c for c in captions) and any("°" in c for c in captions)
    widget(at, "number_input", "tri_jump").set_value(40).run()
    widget(at, "button", "tri_jump_go").click().run()
    ok(at)
    captions = [c for im in at.image for c in im.captions]
    assert any(c.startswith("▶ #40") for c in captions), captions
    widget(at, "text_input", "tri_query").set_value("5").run()
    ok(at)
    assert widget(at, "number_input", "tri_page").value == 1
    widget(at, "multiselect", "tri_source").set_value(["synthetic"]).run()
    ok(at)
    # the page lists exactly the groups the query and the source select, and shows their tiles
    from app_pages import views as dash
    from siamese_core.data.store import list_datasets, open_dataset
    gt = dash.group_table(open_dataset(list_datasets(app_ws)[0], app_ws).manifest)
    want = dash.filter_groups(gt, ["synthetic"], "5")
    assert 0 < len(want) < len(gt) and f"{len(want)} of {len(gt)} groups" in texts(at), texts(at)
    assert at.image


def test_pairs_options_filters_and_counts(app_ws):
    at = open_app("pairs")
    assert at.get("plotly_chart"), "the counts chart is shown"
    widget(at, "segmented_control", "pairs_label").set_value("different").run()
    ok(at)
    badges = [m.value for m in at.markdown if "badge[" in m.value]
    assert badges and all("different places" in b for b in badges), badges
    # each split shows only its own pairs, as many as the counts say
    metrics = {m.label: m.value for m in at.metric}
    for split, key in (("calibration", "Calibration pairs"), ("test", "Test pairs")):
        widget(at, "segmented_control", "pairs_label").set_value("all").run()
        widget(at, "segmented_control", "pairs_split").set_value(split).run()
        ok(at)
        shown = [c.value for c in at.caption if c.value.startswith("pair ")]
        assert shown and all(c.endswith(f"· {split}") for c in shown), shown
        assert f"{metrics[key]} pairs match" in texts(at), (metrics, texts(at))
    widget(at, "segmented_control", "pairs_split").set_value("calibration").run()
    widget(at, "segmented_control", "pairs_label").set_value("same").run()
    widget(at, "checkbox", "pairs_hide_identical").set_value(False).run()
    # the options start as the default preset's, as on the Train page
    from siamese_core.core.config import preset_defaults
    default = preset_defaults("default")[0]
    assert widget(at, "toggle", "pairs_identical").value is default.identical is False
    assert widget(at, "number_input", "pairs_negatives").value == default.negatives
    same_before = [m.value for m in at.markdown if "badge[" in m.value]
    assert same_before and not any("identical" in b for b in same_before), same_before
    widget(at, "toggle", "pairs_identical").set_value(True)
    widget(at, "button", "pairs_go").click().run()
    ok(at)
    same_after = [m.value for m in at.markdown if "badge[" in m.value]
    assert any("identical" in b for b in same_after), same_after


# --- threshold ------------------------------------------------------------------------------------------

def test_threshold_slider_moves_the_matrix_and_saves(app_ws):
    from siamese_core.runs.registry import run_path
    from siamese_core.runs.run import Run
    rid = _runs_by_preset(app_ws)["default"]
    at = open_app("threshold", query={"run": rid})
    slider = widget(at, "slider", "thr_slider")
    lo, hi = slider.min, slider.max
    start = counts_line(at)
    slider.set_value(lo).run()
    ok(at)
    at_low = counts_line(at)
    assert "TP 0" in at_low and "FP 0" in at_low  # nothing judged same below every score
    widget(at, "slider", "thr_slider").set_value(hi).run()
    ok(at)
    at_high = counts_line(at)
    assert "FN 0" in at_high and "TN 0" in at_high  # everything judged same above every score
    # the page opened at the saved threshold, with the counts the stored calibration scores give there
    from siamese_core.learn.evaluate import metrics_at
    run = Run(run_path(rid, app_ws))
    v, t0 = run.val_scores(), run.threshold()
    m0 = metrics_at(v["score"], v["label"], t0)
    assert f"TP {m0.tp}</b> · <b>FN {m0.fn}</b> · <b>FP {m0.fp}</b> · <b>TN {m0.tn}</b> of {m0.n} calibration" in start
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert "Heatmap" in json.dumps(spec) or spec["data"][0]["type"] == "heatmap"

    widget(at, "button", "thr_snap_f1").click().run()
    ok(at)
    snapped = widget(at, "slider", "thr_slider").value
    assert lo <= snapped <= hi
    widget(at, "button", "thr_save").click().run()
    ok(at)
    d = run_path(rid, app_ws)
    assert Run(d).threshold() == pytest.approx(snapped)
    assert Run(d).threshold_info()["source"] == "user"
    at.switch_page("app_pages/compare.py").run()
    ok(at)
    assert f"{snapped:.4f}" in texts(at)


def test_threshold_page_of_the_seed_preset_states_its_score_range(app_ws):
    rid = _runs_by_preset(app_ws)["seed"]
    at = open_app("threshold", query={"run": rid})
    assert "sigmoid in [0, 1]" in texts(at)
    assert widget(at, "slider", "thr_slider").value == pytest.approx(0.2)


def _counts_of(line: str) -> tuple:
    import re
    return tuple(int(x) for x in re.search(r"TP (\d+)</b> · <b>FN (\d+)</b> · <b>FP (\d+)</b> · <b>TN (\d+)</b> of "
                                            r"(\d+)", line).groups())


def test_threshold_page_sweeps_calibration_pairs_and_shows_test_pairs_at_the_same_threshold(app_ws):
    """Calibration pairs are swept (the threshold is fitted on them), the test pairs' numbers follow the slider,
    each labelled; the Accuracy shown at the saved threshold is the last epoch's calibration accuracy; the Train
    card names the same calibration pair count the page counts."""
    from siamese_core.learn.evaluate import metrics_at, roc_auc
    from siamese_core.runs.registry import run_path
    from siamese_core.runs.run import Run
    rid = _runs_by_preset(app_ws)["default"]
    run = Run(run_path(rid, app_ws))
    cal, test = run.val_scores(), run.test_scores()
    at = open_app("threshold", query={"run": rid})
    body = texts(at)
    assert widget(at, "selectbox", "thr_eval").value == "val"
    assert "Calibration pairs (places held out from training; the threshold is fitted on them)" in \
        widget(at, "selectbox", "thr_eval").options
    assert "**calibration pairs**" in body and "**test pairs**" in body
    assert "Test pairs at the same threshold** — test pairs: 2 places never used for training or the threshold" in body
    metrics = {m.label: m.value for m in at.metric}
    t0 = run.threshold()
    last = [r for r in run.metrics() if r["kind"] == "epoch"][-1]
    assert metrics["Accuracy"] == f"{last['cal_accuracy']:.3f}"  # the Train curve's last point, the same number
    assert metrics["Accuracy"] == f"{metrics_at(cal['score'], cal['label'], t0).accuracy:.3f}"
    assert metrics["Test accuracy"] == f"{metrics_at(test['score'], test['label'], t0).accuracy:.3f}"
    assert metrics["Test ROC-AUC"] == f"{roc_auc(test['score'], test['label']):.3f}"
    cal_line = counts_line(at)
    test_line = [m.value for m in at.markdown if "thr-test-counts" in m.value][0]
    mt = metrics_at(test["score"], test["label"], t0)
    assert _counts_of(test_line) == (mt.tp, mt.fn, mt.fp, mt.tn, len(test["score"])) and "test pairs" in test_line
    # the slider moves both
    hi = widget(at, "slider", "thr_slider").max
    widget(at, "slider", "thr_slider").set_value(hi).run()
    ok(at)
    test_hi = [m.value for m in at.markdown if "thr-test-counts" in m.value][0]
    assert _counts_of(test_hi) == (int((test["label"] == 0).sum()), 0, int((test["label"] == 1).sum()), 0,
                                   len(test["score"]))
    # the Train page's card names the same number of calibration pairs
    n_cal = _counts_of(cal_line)[-1]
    at.session_state["train_watch"] = rid  # the run the Train page's card shows
    at.switch_page("app_pages/train.py").run()
    ok(at)
    assert [s.value for s in at.subheader if s.value.startswith("Run ")][0] == f"Run {rid}"
    card = [c.value for c in at.caption if c.value.startswith("Pairs:")]
    assert card and f"· {n_cal:,} calibration · {len(test['score']):,} test pairs (same + different place)" in card[0], card


def test_threshold_page_of_a_run_without_test_pairs_says_its_numbers_are_optimistic(app_ws):
    from siamese_core.runs.registry import run_path
    from siamese_core.runs.run import Run
    rid = _runs_by_preset(app_ws)["default"]
    d = run_path(rid, app_ws)
    (d / "test_scores.npz").unlink()  # as a run trained before the three-way split
    ev = json.loads((d / "evaluation.json").read_text())
    ev.pop("pairs")
    (d / "evaluation.json").write_text(json.dumps(ev))
    at = open_app("threshold", query={"run": rid})
    body = texts(at)
    assert widget(at, "selectbox", "thr_eval").options[0] == "Validation pairs (the threshold was fitted on them: optimistic)"
    assert "**validation pairs** (the threshold was fitted on them: optimistic" in body
    assert "validation pairs</div>" in counts_line(at)
    assert not [m for m in at.markdown if "thr-test-counts" in m.value] and "Test accuracy" not in [m.label for m in at.metric]
    at.switch_page("app_pages/train.py").run()
    ok(at)
    table = at.dataframe[0].value  # the Runs table
    row = table[table["run"] == rid].iloc[0]
    assert row["measured_on"] == "validation pairs (the threshold was fitted on them: optimistic)"
    assert row["accuracy"] == pytest.approx(Run(d).evaluation()["all"]["metrics"]["accuracy"])


# --- compare --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("b", [1, 0], ids=["a-rotated-variant", "the-same-tile"])
def test_compare_scores_two_uploaded_tiles(app_ws, b):
    rid = _runs_by_preset(app_ws)["default"]
    at = open_app("compare", query={"run": rid})
    widget(at, "file_uploader", "cmp_upload_a").set_value(("a.png", png_of(app_ws, 0), "image/png"))
    widget(at, "file_uploader", "cmp_upload_b").set_value(("b.png", png_of(app_ws, b), "image/png"))
    at.run()
    ok(at)
    assert not at.error, [e.value for e in at.error]
    score = [m for m in at.metric if m.label == "Score"]
    assert score
    assert len(at.image) >= 2
    body = texts(at)
    assert "the model judges these tiles to show" in body
    # the verdict follows the score and the run's threshold (score <= threshold: same place)
    from siamese_core.runs.registry import run_path
    from siamese_core.runs.run import Run
    t, shown = Run(run_path(rid, app_ws)).threshold(), float(score[0].value)
    said_same = any("**Same place**" in e.value for e in at.success)
    said_diff = any("**Different places**" in e.value for e in at.warning)
    assert said_same != said_diff
    if abs(shown - t) > 1e-4:  # the score is shown to 4 decimals: only a tie that close could read either way
        assert said_same == (shown <= t), (shown, t)
    if b == 0:  # one tile twice: the learned distance is its floor, so the page must say "same place"
        assert said_same and shown < 1e-3 < t, (shown, t)


@pytest.mark.parametrize("name,data,expect", [
    ("notes.png", b"this is not an image at all", "not an image"),
    pytest.param("empty.png", b"", "empty", marks=pytest.mark.slow),
    pytest.param("cut.png", None, "truncated", marks=pytest.mark.slow),
])
def test_compare_refuses_bad_uploads_with_one_line(app_ws, name, data, expect):
    if data is None:  # a real PNG cut in half
        data = png_of(app_ws, 0)[:120]
    at = open_app("compare")
    widget(at, "file_uploader", "cmp_upload_a").set_value((name, data, "image/png"))
    widget(at, "file_uploader", "cmp_upload_b").set_value(("ok.png", png_of(app_ws, 3), "image/png"))
    at.run()
    ok(at)
    errors = [e.value for e in at.error]
    assert errors and any(expect in e.lower() for e in errors), errors
    assert all("\n" not in e and "Traceback" not in e and str(app_ws) not in e for e in errors)
    assert not [m for m in at.metric if m.label == "Score"]


def test_compare_refuses_an_oversized_upload(app_ws):
    at = open_app("compare")
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * (51 * 1024 * 1024)
    widget(at, "file_uploader", "cmp_upload_a").set_value(("huge.png", big, "image/png"))
    at.run()
    ok(at)
    assert any("50 MB" in e.value for e in at.error), [e.value for e in at.error]


# --- train ----------------------------------------------------------------------------------------------

def _wait(cond, timeout: float = 180, every: float = 0.5):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(every)
    return False


@pytest.fixture
def train_ws(tiny_ws, tmp_path, monkeypatch) -> Path:
    """A workspace holding only the tiny dataset (no runs), set as $SIAMESE_WORKSPACE."""
    from siamese_core.data.store import list_datasets
    ws = tmp_path / "trainws"
    (ws / "datasets").mkdir(parents=True)
    name = list_datasets(tiny_ws)[0]
    shutil.copytree(tiny_ws / "datasets" / name, ws / "datasets" / name)
    monkeypatch.setenv("SIAMESE_WORKSPACE", str(ws))
    monkeypatch.chdir(ROOT)
    return ws


def _plotted(y) -> list:
    """A Plotly trace's y values as floats (the spec may hold them as a list or as a typed-array dict)."""
    if isinstance(y, dict) and "bdata" in y:
        import base64
        return np.frombuffer(base64.b64decode(y["bdata"]), dtype=np.dtype(y.get("dtype", "f8"))).tolist()
    return [float(v) for v in y]


@pytest.mark.slow
def test_train_page_launches_refuses_a_second_job_and_shows_curves(train_ws):
    ws = train_ws
    from siamese_core.runs.lock import active_job
    from siamese_core.runs.registry import list_runs, run_path
    from siamese_core.runs.run import Run

    at = open_app("train")
    assert "No runs yet" in texts(at)
    widget(at, "number_input", "train_epochs").set_value(1)
    widget(at, "number_input", "train_steps").set_value(3)
    widget(at, "number_input", "train_batch").set_value(16)
    widget(at, "text_input", "train_run_id").set_value("ui1")
    widget(at, "selectbox", "train_precision").set_value("mixed_bfloat16")
    widget(at, "selectbox", "train_devices").set_value("all")
    assert widget(at, "slider", "train_test").value == 0.1  # the default preset's test fraction
    widget(at, "slider", "train_test").set_value(0.2)
    widget(at, "button", "train_launch").click().run()
    ok(at)
    from siamese_core.runs.run import PRETRAINED
    assert [r for r in list_runs(ws) if r != PRETRAINED] == ["ui1"]
    cfg = Run(run_path("ui1", ws)).config
    assert cfg.train.precision == "mixed_bfloat16" and cfg.pairs.test_fraction == 0.2  # the form's choices reach the run
    assert cfg.train.devices == "all"
    try:
        assert _wait(lambda: Run(run_path("ui1", ws)).status().get("status") in ("finished", "failed")), \
            Run(run_path("ui1", ws)).status()
        assert _wait(lambda: active_job(ws) is None, 30)
    finally:
        if active_job(ws):
            from siamese_core.runs.run import Run
            Run(run_path("ui1", ws)).stop(wait_s=20)
    st = Run(run_path("ui1", ws)).status()
    assert st["status"] == "finished", st
    # a launch while another job holds the workspace's lock (held here, so it is certain): the RunError's
    # one line naming that job, no exception, and no run made
    from siamese_core.runs.lock import acquire_train_lock
    fd = acquire_train_lock("other-job", ws)
    try:
        widget(at, "text_input", "train_run_id").set_value("ui2")
        widget(at, "button", "train_launch").click().run()
        ok(at)
    finally:
        os.close(fd)
    errors = [e.value for e in at.error]
    assert any("already running (other-job)" in e for e in errors), errors
    assert "ui2" not in list_runs(ws)
    at.run()
    ok(at)
    at.run()  # the live view's rerun after the job ended
    ok(at)
    charts = at.get("plotly_chart")
    assert charts, "the loss/accuracy curves are shown"
    spec = json.loads(charts[0].proto.spec)
    curves = {t.get("name"): t.get("y") for t in spec["data"]}
    cal_curve = "calibration pairs: accuracy at the run's threshold (per epoch)"
    assert "train loss (per batch)" in curves and cal_curve in curves and "calibration pairs: ROC-AUC (per epoch)" in curves
    assert not any(n.startswith("validation") for n in curves)  # Keras' in-batch val accuracy at 0.5 is gone
    epochs = [r for r in Run(run_path("ui1", ws)).metrics() if r["kind"] == "epoch"]
    assert _plotted(curves[cal_curve]) == [pytest.approx(r["cal_accuracy"]) for r in epochs]
    assert "finished" in json.dumps([m.value for m in at.markdown]) + texts(at)
    assert widget(at, "selectbox", "app_run").value == "ui1"


# --- home: creating datasets ------------------------------------------------------------------------------

def _zip_of_tiles(ws: Path, n: int = 6) -> bytes:
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(n):
            z.writestr(f"tiles/t{i}.png", png_of(ws, 3 * i))
        z.writestr("tiles/notes.png", b"not an image")
    return buf.getvalue()


def test_home_creates_datasets_from_synthetic_and_zip_and_reports_errors(app_ws, monkeypatch):
    from siamese_core.data.store import list_datasets, open_dataset
    zipped = _zip_of_tiles(app_ws)
    at = open_app()
    # synthetic, in one click (options shrunk to keep the test fast)
    widget(at, "text_input", "home_syn_name").set_value("syn2")
    widget(at, "number_input", "home_syn_limit").set_value(5)
    widget(at, "number_input", "home_syn_size").set_value(32)
    widget(at, "button", "home_syn_go").click().run()
    ok(at)
    assert "syn2" in list_datasets(app_ws)
    assert widget(at, "selectbox", "app_dataset").value == "syn2"
    assert "syn2" in texts(at)  # the success message after the rerun

    # a folder outside the import roots: refused in one line, nothing read
    widget(at, "text_input", "home_folder_path").set_value("/etc")
    widget(at, "button", "home_folder_go").click().run()
    ok(at)
    assert any("/etc" in e.value and "SIAMESE_IMPORT_ROOTS" in e.value for e in at.error)
    # a folder inside the workspace that does not exist: the one-line message, with the path the user typed
    missing = str(app_ws / "no" / "such" / "folder")
    widget(at, "text_input", "home_folder_path").set_value(missing)
    widget(at, "button", "home_folder_go").click().run()
    ok(at)
    assert any("no/such/folder" in e.value and "does not exist" in e.value for e in at.error)

    # an uploaded zip: imported through a temporary folder that is removed afterwards
    widget(at, "file_uploader", "home_zip_upload").set_value(("tiles.zip", zipped, "application/zip"))
    widget(at, "text_input", "home_zip_name").set_value("zipped")
    widget(at, "number_input", "home_zip_size").set_value(32)
    widget(at, "button", "home_zip_go").click().run()
    ok(at)
    assert not at.error, [e.value for e in at.error]
    ds = open_dataset("zipped", app_ws)
    assert ds.info["groups"] == 6 and ds.config.path == "upload:tiles.zip"
    assert "tiles.zip:tiles/notes.png" in texts(at)  # the skipped file, named inside the zip
    assert not any((app_ws / ".uploads").iterdir())

    # the hub, offline: the library's one-line message, no traceback
    import huggingface_hub

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    widget(at, "button", "home_hub_go").click().run()
    ok(at)
    assert any("could not download huggan/maps" in e.value for e in at.error), [e.value for e in at.error]


@pytest.mark.slow
def test_train_page_stop_button_stops_a_running_job(train_ws):
    ws = train_ws
    from siamese_core.runs.lock import active_job
    from siamese_core.runs.registry import run_path
    from siamese_core.runs.run import Run

    at = open_app("train")
    widget(at, "segmented_control", "train_preset").set_value("seed").run()
    assert widget(at, "number_input", "train_batch").value == 8  # the preset's defaults fill the form
    widget(at, "number_input", "train_epochs").set_value(50)
    widget(at, "number_input", "train_steps").set_value(1000)
    widget(at, "text_input", "train_run_id").set_value("long")
    widget(at, "button", "train_launch").click().run()
    ok(at)
    d = run_path("long", ws)
    try:
        assert _wait(lambda: len(Run(d).metrics()) >= 2, 120), Run(d).status()
        at.run()
        ok(at)
        assert "running" in texts(at) + json.dumps([m.value for m in at.markdown])
        widget(at, "button", "train_stop").click().run(timeout=TIMEOUT)
        ok(at)
        assert _wait(lambda: active_job(ws) is None, 60)
    finally:
        if active_job(ws):
            Run(d).stop(wait_s=20)
    assert Run(d).status()["status"] == "stopped"


def test_pages_render_without_importing_tensorflow(app_ws):
    """TensorFlow is only loaded by Compare's cached scorer, when tiles are scored; no page imports it."""
    import subprocess
    for f in (ROOT / "app_pages").glob("*.py"):
        src = f.read_text()
        assert "import tensorflow" not in src and "import keras" not in src, f.name
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({APP!r}, default_timeout=60).run()\n"
        f"for p in {list(PAGES[1:])!r}:\n"
        "    at.switch_page(f'app_pages/{p}.py').run()\n"
        "    assert not at.exception, (p, [e.value for e in at.exception])\n"
        "print('TF' if any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules) else 'NO-TF')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "SIAMESE_WORKSPACE": str(app_ws)})
    assert out.stdout.strip().splitlines()[-1:] == ["NO-TF"], out.stdout + out.stderr[-2000:]
