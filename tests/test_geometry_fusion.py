"""The geometric second opinion and the fused verdict, on hand-made tiles with known answers."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from siamese_core.core.errors import RunError, SiameseError
from siamese_core.data.sources.synthetic import synthetic_tile
from siamese_core.judge import geometry as G
from siamese_core.judge.fusion import FEATURES, Fusion, feature_row, fit_fusion, fusion_from_dict, load_fusion


@pytest.fixture(scope="module")
def tile():
    return synthetic_tile(3, 256, seed=0)


def _turn(img, angle, scale=1.0, mirror=False):
    h, w = img.shape[:2]
    src = np.ascontiguousarray(img[:, ::-1]) if mirror else img
    return cv2.warpAffine(src, cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale), (w, h))


@pytest.mark.parametrize("angle,scale", [(37.0, 1.0), (-120.0, 1.0), (15.0, 1.6), (75.0, 0.7)])
def test_recovers_a_known_rotation_and_scale(tile, angle, scale):
    m = G.match_tiles(tile, _turn(tile, angle, scale))
    assert m.found and m.inliers >= 20
    assert abs((m.angle - angle + 180) % 360 - 180) < 2.0  # within 2 degrees
    assert abs(m.scale / scale - 1) < 0.05                 # within 5 %
    assert not m.mirrored
    assert f"{round(angle)}° rotation" in m.sentence() and "inliers" in m.sentence()


def test_a_mirrored_copy_is_found_as_mirrored(tile):
    m = G.match_tiles(tile, _turn(tile, 30.0, mirror=True))
    assert m.found and m.mirrored and m.inliers >= 20 and "mirrored" in m.sentence()


def test_transform_maps_b_onto_a_in_original_pixels(tile):
    big = cv2.resize(tile, (640, 640), interpolation=cv2.INTER_CUBIC)  # B is A at 2.5x, larger than MAX_SIDE
    m = G.match_tiles(tile, big)
    assert abs(m.scale - 2.5) / 2.5 < 0.05
    t = np.array(m.transform)
    assert np.allclose(t @ [639.0, 639.0, 1.0], [255.5, 255.5], atol=3.0)  # B's corner lands on A's
    warped = G.warp_onto(tile, big, m)
    assert warped.shape == tile.shape
    assert np.mean(np.abs(warped.astype(float) - tile)) < 12


def test_unrelated_tiles_have_little_evidence(tile):
    other = synthetic_tile(11, 256, seed=5)
    same, diff = G.match_tiles(tile, _turn(tile, 50.0)), G.match_tiles(tile, other)
    assert diff.inliers < 12 < same.inliers
    assert diff.structure < same.structure


@pytest.mark.parametrize("b", [np.zeros((256, 256, 3), np.uint8), np.full((40, 900, 3), 128, np.uint8)])
def test_no_evidence_gives_a_reason_not_a_crash(tile, b):
    m = G.match_tiles(tile, b)
    assert not m.found and m.inliers == 0 and "no keypoints" in m.reason
    assert m.sentence().startswith("no geometric match")
    assert set(m.as_row()) >= {"inliers", "angle", "scale", "geometry"}


def test_same_frame_edges_agree_across_a_change_of_light(tile):
    f = tile.astype(np.float32)
    relit = np.clip(255 - (f * 0.6 + 40), 0, 255).astype(np.uint8)  # inverted contrast and darker
    m = G.match_tiles(tile, relit)
    assert m.structure_identity > 0.5
    assert G.match_tiles(tile, synthetic_tile(12, 256, seed=9)).structure_identity < 0.3


def _rows(n, rng):
    same = [{"distance": rng.uniform(0, .8), "sift": math.log1p(rng.integers(10, 200)), "orb": 0.0,
             "structure": rng.uniform(.3, 1), "structure_identity": 0.0, "keypoints": math.log1p(250),
             "structure_local": 0.0, "structure_peak": 0.0}
            for _ in range(n)]
    diff = [{"distance": rng.uniform(.4, 1.4), "sift": math.log1p(rng.integers(0, 12)), "orb": 0.0,
             "structure": rng.uniform(-.1, .4), "structure_identity": 0.0, "keypoints": math.log1p(250),
             "structure_local": 0.0, "structure_peak": 0.0}
            for _ in range(n)]
    return same + diff, [0] * n + [1] * n


def test_fusion_ranks_and_round_trips_as_plain_json():
    rows, y = _rows(200, np.random.default_rng(0))
    f = fit_fusion(rows, y)
    s = f.scores(rows)
    assert s[:200].mean() < f.threshold < s[200:].mean()
    assert np.mean((s > f.threshold) == np.array(y, bool)) > 0.9
    g = fusion_from_dict(json.loads(json.dumps(f.to_dict())))
    assert np.allclose(g.scores(rows), s)
    best = int(np.argmax([r["sift"] for r in rows[:200]]))
    c = f.contributions(rows[best])
    assert set(c) == set(f.names) and c["sift"] > 0  # many inliers push toward "same"


def test_fusion_never_lets_evidence_count_backwards():
    rng = np.random.default_rng(1)
    rows, y = _rows(100, rng)
    for r, lab in zip(rows, y):  # a feature that happens to be higher for different places in this sample
        r["orb"] = math.log1p(20 if lab else 1)
    f = fit_fusion(rows, y)
    for r in rows[::10]:  # more ORB inliers still never make "same place" less likely
        up = dict(r, orb=r["orb"] + 2.0)
        assert f.prob_same([up])[0] >= f.prob_same([r])[0] - 1e-12


def test_a_run_calibrated_with_the_logistic_fusion_still_loads(tmp_path):
    old = {"kind": "logistic", "names": ["distance", "sift"], "mean": [0.5, 2.0], "std": [0.2, 1.0],
           "weights": [-1.0, 2.0], "bias": 0.1, "threshold": 0.4, "fitted_on": "old"}
    (tmp_path / "fusion.json").write_text(json.dumps(old))
    f = load_fusion(tmp_path / "fusion.json")
    assert isinstance(f, Fusion) and f.threshold == 0.4 and f.band.below == f.band.above == 0
    row = {"distance": 0.3, "sift": 4.0}
    z = -1.0 * (0.3 - 0.5) / 0.2 + 2.0 * (4.0 - 2.0) + 0.1
    assert f.scores([row])[0] == pytest.approx(1 - 1 / (1 + math.exp(-z)), rel=1e-6)


def test_fusion_refuses_one_class_and_malformed_files(tmp_path):
    rows, _ = _rows(10, np.random.default_rng(2))
    with pytest.raises(SiameseError, match="both same-place"):
        fit_fusion(rows, [0] * len(rows))
    p = tmp_path / "fusion.json"
    p.write_text(json.dumps({"kind": "logistic", "names": ["distance", "evil"], "mean": [0, 0], "std": [1, 1],
                             "weights": [1, 1], "bias": 0}))
    with pytest.raises(RunError, match="unknown feature"):
        load_fusion(p)
    p.write_text("{not json")
    with pytest.raises(RunError, match="cannot read fusion"):
        load_fusion(p)


def test_feature_row_from_a_match(tile):
    m = G.match_tiles(tile, _turn(tile, 10.0))
    r = feature_row(0.25, m)
    assert r["distance"] == 0.25 and r["sift"] == pytest.approx(math.log1p(m.sift_inliers))
    assert set(r) == set(FEATURES)


@pytest.mark.slow
def test_threads_give_the_same_evidence_as_one_thread(tile):
    """Batch scoring runs the geometric step in a thread pool: results must not depend on it."""
    from concurrent.futures import ThreadPoolExecutor
    tiles = [synthetic_tile(i, 256, seed=2) for i in range(6)]
    pairs = [(t, _turn(t, 10.0 * i + 5)) for i, t in enumerate(tiles)] + [(tiles[0], tiles[3]), (tiles[1], tiles[4])]
    one = [G.match_tiles(a, b) for a, b in pairs]
    for _ in range(3):
        with ThreadPoolExecutor(4) as pool:
            many = list(pool.map(lambda p: G.match_tiles(*p), pairs * 3))
        for m, n in zip(one * 3, many):
            assert (m.inliers, m.sift_inliers, m.orb_inliers, round(m.structure, 6)) == \
                   (n.inliers, n.sift_inliers, n.orb_inliers, round(n.structure, 6))


def _bf_ratio(da, db, norm):
    pairs = cv2.BFMatcher(norm).knnMatch(db, da, k=2)
    return sorted((p[0].queryIdx, p[0].trainIdx) for p in pairs if len(p) == 2 and p[0].distance < G.RATIO * p[1].distance)


@pytest.mark.parametrize("other", ["turned", "unrelated"])
def test_ratio_test_finds_what_opencvs_matcher_finds(tile, other):
    b = _turn(tile, 41.0, 1.2) if other == "turned" else synthetic_tile(9, 256, seed=1)
    fa, fb = G.features(tile), G.features(b)
    for da, db, norm in ((fa.sift_desc, fb.sift_desc, cv2.NORM_L2), (fa.orb_desc, fb.orb_desc, cv2.NORM_HAMMING)):
        ib, ia = G._knn(da, db, norm)
        assert sorted(zip(ib.tolist(), ia.tolist())) == _bf_ratio(da, db, norm)
    assert len(G._knn(fa.orb_desc, fb.orb_desc, cv2.NORM_HAMMING)[0]) >= (50 if other == "turned" else 0)


def test_b_is_realigned_for_the_learned_distance_unless_the_keypoints_decide(tile, monkeypatch):
    from siamese_core.judge import inference
    scorer = inference.Scorer.from_run(None)  # the bundled model
    a, b = scorer.prepare(tile), scorer.prepare(_turn(tile, 50.0, 0.7))
    plain = float(np.linalg.norm(np.subtract(*scorer.embed(np.stack([a.tile, b.tile])))))
    decided = scorer.judge([(a, b)])[0]
    assert decided.geo.inliers >= inference.ALIGN_DECISIVE
    assert decided.distance == pytest.approx(plain, abs=1e-5)  # not realigned: the keypoints decide alone
    monkeypatch.setattr(inference, "ALIGN_DECISIVE", 10 ** 6)
    realigned = scorer.judge([(a, b)])[0]
    assert realigned.distance < plain - 0.05  # B laid back onto A looks more like A than B turned and shrunk does
    assert realigned.score <= decided.score
