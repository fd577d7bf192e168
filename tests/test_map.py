"""The Map page and its arithmetic (siamese_core.judge.collection): PCA of points on a line has one dominant axis,
a planted near-duplicate pair and a planted outlier are found on hand-made embeddings, and the page (AppTest,
on a copy of the tiny workspace with run def1) draws the map in both colour modes without exceptions.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from siamese_core.judge import collection as col  # noqa: E402


def _clusters(n_groups: int = 30, per: int = 3, dim: int = 16, seed: int = 0):
    """Groups of ``per`` views around well-separated centres (views of one place ~0.05 apart)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_groups, dim))
    emb = np.repeat(centres, per, axis=0) + rng.normal(scale=0.03, size=(n_groups * per, dim))
    return emb, np.repeat(np.arange(n_groups), per)


def test_pca_of_points_on_a_line_has_one_dominant_axis():
    rng = np.random.default_rng(1)
    t = rng.normal(size=200)
    direction = rng.normal(size=8)
    x = np.outer(t, direction) + 3.0 + rng.normal(scale=1e-3, size=(200, 8))
    p = col.pca(x, 2)
    assert p.coords.shape == (200, 2) and p.explained.shape == (2,)
    assert p.explained[0] > 0.999 and p.explained[1] < 1e-3
    assert abs(np.corrcoef(p.coords[:, 0], t)[0, 1]) > 0.999
    np.testing.assert_allclose(p.coords, col.pca(x, 2).coords)  # deterministic, signs included
    assert col.pca(np.zeros((0, 4))).coords.shape == (0, 2)


def test_planted_near_duplicate_pair_is_found():
    emb, groups = _clusters()
    emb = np.vstack([emb, emb[10] + 1e-4])       # a copy of row 10 filed as a new place
    groups = np.append(groups, 999)
    dup = col.near_duplicates(emb, groups)
    assert dup.threshold is not None and dup.threshold > 0
    assert len(dup.pairs) >= 1 and tuple(dup.pairs[0]) == (10, len(emb) - 1)
    assert all(groups[i] != groups[j] for i, j in dup.pairs)
    assert np.all(np.diff(dup.distances) >= 0) and dup.distances[0] < dup.threshold
    # every place a single tile: nothing to compare with
    lone = col.near_duplicates(emb[:5], np.arange(5))
    assert lone.threshold is None and len(lone.pairs) == 0


def test_planted_outlier_is_found():
    emb, groups = _clusters()
    emb = np.vstack([emb, np.full(emb.shape[1], 40.0)])   # far from everything
    groups = np.append(groups, 500)
    out = col.outliers(emb, groups)
    assert out.rows[0] == len(emb) - 1 and len(out.rows) == int(np.ceil(len(emb) / 100))
    assert out.distances[0] > 10 * np.median(col.nearest_neighbour_distances(emb, groups))
    # without groups a place's own views are its neighbours; with them, the nearest other place counts
    nn_any = col.nearest_neighbour_distances(emb)
    nn_other = col.nearest_neighbour_distances(emb, groups)
    assert np.all(nn_other[:-1] > nn_any[:-1])


def test_chunked_distances_match_the_full_matrix(monkeypatch):
    emb, groups = _clusters(n_groups=20)
    full = col.nearest_neighbour_distances(emb, groups)
    monkeypatch.setattr(col, "CHUNK", 7)
    np.testing.assert_allclose(col.nearest_neighbour_distances(emb, groups), full)


def test_sample_rows_and_coarse_labels():
    assert list(col.sample_rows(5, 10)) == [0, 1, 2, 3, 4]
    s = col.sample_rows(1000, 50, seed=3)
    assert len(s) == 50 and len(set(s)) == 50 and np.all(np.diff(s) > 0)
    np.testing.assert_array_equal(s, col.sample_rows(1000, 50, seed=3))
    labels = col.coarse_labels(["folder:agricultural/a01.tif", "ab:A/x.png:x=0:y=0:window=256",
                                "synthetic:seed=0:index=4", "hf-parquet:f.parquet:image:3"])
    assert list(labels) == ["folder · agricultural", "ab · A", "synthetic", "hf-parquet"]
    many = col.coarse_labels([f"folder:c{i % 30}/t.png" for i in range(300)], max_labels=5)
    assert len(set(many)) == 5 and "other" in set(many)


@pytest.fixture
def map_ws(tiny_ws, tmp_path, monkeypatch) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(tiny_ws, ws, ignore=shutil.ignore_patterns("train.lock"))
    monkeypatch.setenv("SIAMESE_WORKSPACE", str(ws))
    monkeypatch.chdir(ROOT)
    return ws


def test_map_page_draws_both_colour_modes(map_ws):
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=180)
    at.query_params.update({"dataset": "tiny", "run": "def1"})
    at.run()
    at.switch_page("app_pages/map.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert any("Map" in t.value for t in at.title)
    assert (map_ws / "indexes" / "def1" / "tiny" / "embeddings.npy").is_file()  # the search index's embeddings
    text = "\n".join(c.value for c in at.caption)
    assert "PCA" in text and "umap-learn" in text
    [colour] = [w for w in at.selectbox if w.key == "map_color"]
    assert colour.options == ["Place (group)", "Source"]
    tables = {d.key for d in at.dataframe}
    assert {"map_dups", "map_outliers"} <= tables
    outliers = [d for d in at.dataframe if d.key == "map_outliers"][0].value
    assert len(outliers) == 1  # 1 % of 72 images, at least one
    for mode in ("source", "place"):
        colour.set_value(mode).run()
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]
        [colour] = [w for w in at.selectbox if w.key == "map_color"]
        assert colour.value == mode
