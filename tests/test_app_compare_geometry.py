"""The Compare page's geometric second opinion, with Streamlit's AppTest (no browser): a textured tile
and its copy rotated 30° are matched at about 30°, the matches are drawn, tile B is laid onto tile A with
a blend slider that only redraws (the judgement is not recomputed), a blank pair says why nothing
matched, and a run with a fusion shows what pushed the verdict.

The workspace is a copy of the shared ``tiny_ws`` fixture, as in tests/test_app_pages.py.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streamlit.testing.v1 import AppTest  # noqa: E402

from siamese_core.data.images import encode_png  # noqa: E402
from apptools import ok, texts, widget  # noqa: E402

APP = str(ROOT / "streamlit_app.py")
TIMEOUT = 120


# --- fixtures and helpers (the pattern of tests/test_app_pages.py) -----------------------------------

def _run_of(ws: Path, preset: str = "default") -> str:
    from siamese_core.runs.registry import list_runs, run_path
    from siamese_core.runs.run import Run
    for rid in list_runs(ws):
        d = run_path(rid, ws)
        if (d / "model.keras").exists() and (d / "val_scores.npz").exists() and Run(d).config.model.preset == preset:
            return rid
    raise AssertionError(f"no finished {preset} run in {ws}")


def open_compare(rid: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update({"run": rid})
    at.run()
    ok(at)
    at.switch_page("app_pages/compare.py").run()
    ok(at)
    return at


    assert not at.error, [e.value for e in at.error]


def captions(at: AppTest) -> list[str]:
    return [c for img in at.image for c in img.captions]


def upload(at: AppTest, a: np.ndarray, b: np.ndarray) -> AppTest:
    widget(at, "file_uploader", "cmp_upload_a").set_value(("a.png", encode_png(a), "image/png"))
    widget(at, "file_uploader", "cmp_upload_b").set_value(("b.png", encode_png(b), "image/png"))
    at.run()
    ok(at)
    return at


def rotated_pair(angle: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    from siamese_core.data.augment import rotate
    from siamese_core.data.sources.synthetic import synthetic_tile
    a = synthetic_tile(0, 256)
    return a, rotate(a, angle)


@pytest.fixture
def count_judge(monkeypatch):
    """How many times the page asked the library for a judgement (AppTest runs the page in-process)."""
    from siamese_core.judge.inference import Scorer
    calls = []
    real = Scorer.judge

    def judge(self, pairs, *args, **kwargs):
        calls.append(len(pairs))
        return real(self, pairs, *args, **kwargs)

    monkeypatch.setattr(Scorer, "judge", judge)
    return calls


# --- tests -------------------------------------------------------------------------------------------

def test_rotated_copy_is_matched_at_about_30_degrees_and_drawn(app_ws, count_judge):
    at = upload(open_compare(_run_of(app_ws)), *rotated_pair(30))
    body = texts(at)
    m = re.search(r"matched at (-?\d+)° rotation, ([\d.]+)× scale", body)
    assert m, body
    assert abs(float(m.group(1)) - 30) <= 3, m.group(0)
    assert abs(float(m.group(2)) - 1) <= 0.05, m.group(0)
    assert re.search(r"Learned distance:\*\* \d+\.\d{4}", body), body
    assert "the model judges these tiles to show" in body  # the verdict is still there
    assert [mt for mt in at.metric if mt.label == "Score"]
    caps = captions(at)
    assert sum("as the model sees it" in c for c in caps) == 2, caps
    assert any(c.startswith("Matches:") and "inliers drawn" in c for c in caps), caps
    assert any("laid onto tile A" in c for c in caps), caps
    assert count_judge == [1]

    slider = widget(at, "slider", "compare_blend")
    assert slider.value == pytest.approx(0.5)
    for v in (0.0, 1.0, 0.8):
        slider.set_value(v).run()
        ok(at)
        assert widget(at, "slider", "compare_blend").value == pytest.approx(v)
        assert any("laid onto tile A" in c for c in captions(at))
    assert count_judge == [1], "moving the blend slider must not re-run the judgement"


def test_blank_pair_says_why_nothing_matched(app_ws):
    blank = np.full((256, 256, 3), 128, np.uint8)
    at = upload(open_compare(_run_of(app_ws)), blank, blank.copy())
    body = texts(at)
    assert "no geometric match" in body and "almost no texture" in body, body
    infos = [i.value for i in at.info if "nothing to align" in i.value]
    assert len(infos) == 1 and "\n" not in infos[0], infos
    assert not [s for s in at.slider if s.key == "compare_blend"]
    assert not any(c.startswith("Matches:") for c in captions(at))
    assert [mt for mt in at.metric if mt.label == "Score"]  # the learned verdict still stands


def test_a_fused_run_shows_what_pushed_the_verdict(app_ws):
    from siamese_core.judge.fusion import FEATURES, Fusion
    from siamese_core.runs.registry import run_path
    rid = _run_of(app_ws)
    names = tuple(FEATURES)
    from siamese_core.runs.run import Run
    fusion = Fusion(names, mean=(0.0,) * len(names), std=(1.0,) * len(names),
                    weights=tuple(-2.0 if n == "distance" else 0.5 for n in names), bias=0.0)
    Run(run_path(rid, app_ws)).save_verdict(fusion.to_dict(), fusion.threshold, "calibrated (fusion)")
    at = upload(open_compare(rid), *rotated_pair(30))
    body = texts(at)
    assert "What pushed the verdict" in body
    assert at.dataframe, "the contributions table is missing"
    table = at.dataframe[0].value
    assert set(table["evidence"]) >= {"learned distance", "SIFT inliers"}
    assert (table["direction"] == "toward same place").any()
    score = float([mt for mt in at.metric if mt.label == "Score"][0].value)
    assert 0.0 <= score <= 1.0  # fused: 1 − P(same place)
    # B is A turned in the same frame: it covers most of A, and the page outlines where
    where = [c for c in captions(at) if c.startswith("Where tile B lies on tile A")]
    assert len(where) == 1 and int(where[0].split("covers ")[1].split("%")[0]) >= 60, where


def test_geometry_view_draws_at_most_100_lines():
    sys.path.insert(0, str(ROOT))
    from app_pages import geometry_view as gv
    a, b = rotated_pair(30)
    pts = np.random.default_rng(0).uniform(0, 255, (400, 2)).astype(np.float32)
    img = gv.matches_image(a, b, pts, pts, 1.0, 1.0, height=200)
    assert img.shape == (200, 200 + gv.GAP + 200, 3) and img.dtype == np.uint8
    assert len(gv.pick_lines(400)) == gv.MAX_LINES and len(gv.pick_lines(7)) == 7
    out = gv.blend(a, b, 0.0)
    assert np.array_equal(out, a)
    assert np.array_equal(gv.blend(a, b, 1.0, np.full(a.shape[:2], 255, np.uint8)), b)
