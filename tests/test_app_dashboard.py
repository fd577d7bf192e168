"""app_pages.views: the non-Streamlit helpers behind the pages (messages, tables, filters,
slider range, figures, mistakes), on small hand-made inputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app_pages import figures  # noqa: E402
from app_pages import views as dash  # noqa: E402
from siamese_core.core.errors import DatasetError  # noqa: E402
from siamese_core.learn.evaluate import ThresholdSweep  # noqa: E402


def test_dashboard_does_not_import_streamlit_or_tensorflow():
    import subprocess
    code = ("import sys, app_pages.views, siamese_core.data.uploads; "
            "print(any(m.split('.')[0] in ('streamlit', 'tensorflow', 'keras') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_scrub_paths_hides_server_paths_but_keeps_what_the_user_typed(tmp_path):
    ws = tmp_path / "ws"
    msg = f"dataset 'x' not found in {ws}/datasets; also /srv/secret/place/file.png: not an image"
    out = dash.scrub_paths(msg, ws)
    assert str(tmp_path) not in out and "workspace/datasets" in out and "…/place/file.png" in out
    assert dash.scrub_paths("/data/tiles: folder does not exist", ws, keep=("/data/tiles",)) == \
        "/data/tiles: folder does not exist"
    assert dash.scrub_paths("see https://huggingface.co/datasets/huggan/maps", ws).endswith("huggan/maps")
    assert dash.user_message(DatasetError(f"{ws}/datasets/a: bad"), ws) == "workspace/datasets/a: bad"
    assert "unexpected problem (KeyError)" in dash.user_message(KeyError("x"), ws)


def test_score_direction_names_each_preset():
    assert "sigmoid in [0, 1]" in dash.score_direction("seed", 0.2)
    assert "distance in [0, 2]" in dash.score_direction("default", 0.5)
    assert all(s.startswith("**Lower score = more alike.**") for s in
               (dash.score_direction(p) for p in ("seed", "default", None)))


def test_groups_filter_pages_and_captions():
    m = pd.DataFrame({"index": range(9), "group": [0, 0, 0, 1, 1, 1, 2, 2, 2],
                      "tile_id": ["a", "a", "a", "b12", "b12", "b12", "c", "c", "c"],
                      "source": ["synthetic:i=0"] * 3 + ["folder:x/b12.png"] * 3 + ["folder:y/c.png"] * 3,
                      "variant": [0, 1, 2] * 3, "angle": [0.0, 91.25, 200.0] * 3,
                      "transforms": ["{}", json.dumps({"blur": {"sigma": 1.234}}),
                                     json.dumps({"flip": {"axis": 1}, "scale": {"scale": 1.3, "dx": 0, "dy": 0}})] * 3})
    gt = dash.group_table(m)
    assert gt["kind"].tolist() == ["synthetic", "folder", "folder"] and gt["first"].tolist() == [0, 3, 6]
    assert dash.filter_groups(gt, ["folder"]).tolist() == [1, 2]
    assert dash.filter_groups(gt, None, "b12").tolist() == [1]
    assert dash.filter_groups(gt, None, "2").tolist() == [1, 2]  # group 2, and "b12" contains "2"
    assert dash.n_pages(0, 8) == 1 and dash.n_pages(17, 8) == 3
    assert dash.page_for_group(np.array([4, 7, 9]), 9, 2) == 2 and dash.page_for_group(np.array([4]), 5, 2) is None
    caps = [dash.variant_caption(r) for _, r in m.head(3).iterrows()]
    assert caps[0] == "original" and caps[1] == "variant 1 · 91.2° · blur σ=1.2"
    assert "mirror ↔" in caps[2] and "zoom ×1.30" in caps[2]


def test_read_rows_reads_only_the_asked_rows():
    images = np.arange(5 * 2 * 2 * 3, dtype=np.uint8).reshape(5, 2, 2, 3)
    got = dash.read_rows(images, [3, 1, 3, 99, -1])
    assert sorted(got) == [1, 3] and np.array_equal(got[3], images[3])


def test_filter_pairs_and_counts_figure():
    label = np.array([0, 1, 0, 1, 0]); val = np.array([False, False, True, True, True])
    ident = np.array([True, False, False, False, False])
    assert dash.filter_pairs(label, val, ident, "same", "all").tolist() == [0, 2, 4]
    assert dash.filter_pairs(label, val, ident, "same", "train", hide_identical=True).tolist() == []
    assert dash.filter_pairs(label, val, ident, "different", "calibration").tolist() == [3]
    test = np.array([False, True, False, False, False])
    assert dash.filter_pairs(label, val, ident, "all", "test", test=test).tolist() == [1]
    assert dash.filter_pairs(label, val, ident, "all", "train", test=test).tolist() == [0]
    counts = {"train": {"same": 5, "different": 4, "identical": 2}, "calibration": {"same": 1, "different": 1,
                                                                                    "identical": 0},
              "test": {"same": 2, "different": 4, "identical": 0}}
    rows = dash.pairs_counts_rows(counts)
    assert {"split": "train", "label": "same (distinct images)", "pairs": 3} in rows
    assert {"split": "test", "label": "different", "pairs": 4} in rows
    assert len(figures.pairs_counts_figure(counts).data) == 3
    assert dash.pair_counts_text(counts, fit_pairs=3, preset="default") == (
        "9 training · 2 calibration · 6 test pairs (same + different place), of which identical (an image with "
        "itself): 2 · 0 · 0; each epoch fits 3 same-place training pairs (in-batch negatives)")
    assert "each epoch" not in dash.pair_counts_text(counts, fit_pairs=9, preset="seed")


def test_training_figure_and_progress():
    recs = [{"kind": "batch", "epoch": 1, "step": s, "steps": 3, "loss": 1 / s, "accuracy": 0.5} for s in (1, 2, 3)]
    recs += [{"kind": "epoch", "epoch": 1, "loss": 0.4, "accuracy": 0.6, "val_loss": 0.5, "val_accuracy": 0.55}]
    recs += [{"kind": "batch", "epoch": 2, "step": 1, "steps": 3, "loss": 0.3, "accuracy": 0.7}]
    b, e = dash.split_metrics(recs)
    assert b["global_step"].tolist() == [1, 2, 3, 4] and e["global_step"].tolist() == [3]
    fig = figures.training_figure(recs)  # a run recorded before the calibration metric: Keras' accuracy, named so
    assert {t.name for t in fig.data} == {
        "train loss (per batch)", "train loss (per epoch)", "calibration pairs' loss (per epoch)",
        "train batches: Keras accuracy at score 0.5 (not the run's threshold)",
        "validation: Keras accuracy at score 0.5 (per epoch; recorded before the calibration metric)"}
    recs[3].update(cal_accuracy=0.9, cal_roc_auc=0.95, cal_threshold=0.4, cal_pairs=60)
    fig = figures.training_figure(recs)
    by_name = {t.name: list(t.y) for t in fig.data}
    assert by_name["calibration pairs: accuracy at the run's threshold (per epoch)"] == [0.9]
    assert by_name["calibration pairs: ROC-AUC (per epoch)"] == [0.95]
    assert not any("validation" in n for n in by_name)  # Keras' in-batch val_accuracy is no longer drawn
    frac, text = dash.progress_info({"status": "running", "epoch": 2, "epochs": 4, "step": 1, "steps": 3, "eta_s": 75})
    assert frac == pytest.approx(4 / 12) and "epoch 2/4" in text and "1 min 15 s" in text
    assert dash.progress_info({"status": "queued"})[0] == 0.0
    assert dash.progress_info({"status": "finished", "epochs": 4})[0] == 1.0


def test_slider_spec_covers_scores_and_thresholds():
    s = np.array([0.11, 0.52, 0.93])
    lo, hi, step = dash.slider_spec(s, [1.5, None, float("nan")])
    assert lo <= 0.11 and hi >= 1.5 and 0 < step <= (1.5 - 0.11) / 100
    lo, hi, step = dash.slider_spec(np.array([0.2, 0.2]))
    assert lo < 0.2 < hi and step > 0


def test_misclassified_and_figures_follow_the_threshold():
    scores = np.array([0.1, 0.2, 0.9, 0.3, 0.8, 0.05])
    labels = np.array([0, 0, 0, 1, 1, 1])
    w = dash.misclassified(scores, labels, 0.5)
    assert w["fn"] == [2] and w["fp"] == [5, 3] and w["n_fp"] == 2
    m = ThresholdSweep(scores, labels).at(0.5)
    fig = figures.confusion_figure(m)
    assert "<b>2</b>" in fig.data[0].text[0][0] and "TP" in fig.data[0].text[0][0]
    assert len(figures.histogram_figure(dash.histogram_data(scores, labels, 0, 1, 10), 0.5).data) == 2
    assert len(figures.roc_figure([0, 0.5, 1], [0, 0.7, 1], (0.5, 0.7)).data) == 3
    assert len(figures.pr_figure([1, 0.8], [0.5, 1], None).data) == 1


def test_tables_and_demo_dataset(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    assert dash.dataset_rows(ws) == [] and [r for r in dash.run_rows(ws) if not r["bundled"]] == []
    assert dash.default_run([]) is None
    monkeypatch.setenv("SIAMESE_AUTO_DATASET", "0")
    assert dash.ensure_demo_dataset(ws) is None
    monkeypatch.delenv("SIAMESE_AUTO_DATASET")
    assert dash.ensure_demo_dataset(ws, tiles=5) == "demo"
    assert dash.ensure_demo_dataset(ws, tiles=5) is None  # only on a fresh workspace
    rows = dash.dataset_rows(ws)
    assert rows[0]["dataset"] == "demo" and rows[0]["tiles"] == 5 and rows[0]["images"] == 15
    assert dash.unique_name("demo", ["demo", "demo-2"]) == "demo-3"


def test_the_library_holds_no_view_code():
    """Figures, tables and page messages live in app_pages/; siamese_core never draws (no Plotly, no Streamlit)."""
    lib = ROOT / "siamese_core"
    offenders = [str(p.relative_to(ROOT)) for p in lib.rglob("*.py")
                 if any(w in p.read_text() for w in ("import plotly", "from plotly", "import streamlit", "from streamlit"))]
    assert offenders == []


def test_runs_table_and_result_card_report_the_test_pairs_and_say_so(tiny_ws):
    from siamese_core.runs.run import Run
    rows = {r["run"]: r for r in dash.run_rows(tiny_ws)}
    ev = Run(tiny_ws / "runs" / "def1").evaluation()
    m = ev["without_identical"] or ev["all"]
    row = rows["def1"]
    assert row["accuracy"] == m["metrics"]["accuracy"] and row["roc_auc"] == m["roc_auc"]
    assert row["measured_on"] == "test pairs: 2 places never used for training or the threshold"
    res = dash.run_result(Run(tiny_ws / "runs" / "def1"))
    text = dash.result_text(res)
    assert text.startswith(f"Accuracy **{m['metrics']['accuracy']:.3f}** · ROC-AUC **{m['roc_auc']:.3f}** on "
                           f"{m['n_pairs']} pairs — test pairs: 2 places never used for training or the threshold")
    assert text.endswith(f"(at threshold {m['metrics']['threshold']:.4f}, fitted on the calibration pairs)")
