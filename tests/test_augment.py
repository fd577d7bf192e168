"""The distortions that model a new acquisition (siamese_core.data.augment), the on-the-fly training
augmentation (train.augment_batch), and the Triplets page's "What a new acquisition looks like" section.

Each numpy distortion keeps shape and dtype, is deterministic for a seed, survives a JSON round trip of
its parameters, and changes the image in the direction it claims to.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from siamese_core.data import augment as A  # noqa: E402
from siamese_core.core.config import DISTORTIONS  # noqa: E402

S = 64


def texture(seed: int = 0, size: int = S) -> np.ndarray:
    """A smooth, colourful tile with some fine detail: something every distortion visibly changes."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(30, 225, (8, 8, 3)).astype(np.float32)
    img = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 12, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def flat(value=128, size: int = S) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def checkerboard(period: int = 8, size: int = S) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    board = (((yy // (period // 2)) + (xx // (period // 2))) % 2 * 255).astype(np.uint8)
    return np.repeat(board[..., None], 3, axis=2)


def high_freq(img: np.ndarray) -> float:
    return float(np.var(cv2.Laplacian(img.astype(np.float32), cv2.CV_32F)))


def transitions(row: np.ndarray) -> int:
    b = row > 127
    return int(np.count_nonzero(b[1:] != b[:-1]))


# --- every distortion ------------------------------------------------------------------------------------

def test_acquisition_names_are_distortions_and_old_names_still_work():
    assert set(A.ACQUISITION) <= set(DISTORTIONS)
    for old in ("flip", "scale", "affine", "blur", "occlude", "brightness"):
        assert old in DISTORTIONS
    assert set(A.ACQUISITION) == {"color", "gamma", "haze", "shadow", "season", "resolution", "jpeg",
                                  "noise", "zoom", "shift"}


@pytest.mark.parametrize("kind", DISTORTIONS)
def test_each_distortion_keeps_shape_dtype_and_is_deterministic(kind):
    img = texture(1)
    p1 = A.draw_distortion(kind, np.random.default_rng(7))
    p2 = A.draw_distortion(kind, np.random.default_rng(7))
    assert p1 == p2
    out1, out2 = A.apply_distortion(img, kind, p1), A.apply_distortion(img, kind, p2)
    assert out1.shape == img.shape and out1.dtype == np.uint8
    np.testing.assert_array_equal(out1, out2)
    assert not np.array_equal(out1, img), f"{kind} with {p1} left the tile unchanged"
    # parameters are JSON-friendly and reproduce the image after a round trip (as from the manifest)
    back = json.loads(json.dumps(p1))
    np.testing.assert_array_equal(A.apply_distortion(img, kind, back), out1)


@pytest.mark.parametrize("kind", A.ACQUISITION)
def test_new_distortions_work_on_odd_sizes(kind):
    img = texture(2, size=37)[:, :31]
    for seed in range(5):
        out = A.apply_distortion(img, kind, A.draw_distortion(kind, np.random.default_rng(seed)))
        assert out.shape == img.shape and out.dtype == np.uint8


def test_unknown_kind_and_missing_parameter_say_what_to_do():
    with pytest.raises(ValueError, match="unknown distortion 'fog'; choose from"):
        A.draw_distortion("fog", np.random.default_rng(0))
    with pytest.raises(ValueError, match="needs parameter 'gamma'.*draw_distortion"):
        A.apply_distortion(texture(), "gamma", {"g": 1.2})
    with pytest.raises(ValueError, match="got 0"):
        A.gamma(texture(), 0)
    with pytest.raises(ValueError, match="quality must be 1-100, got 0"):
        A.jpeg(texture(), 0)


# --- each goes the way it claims -----------------------------------------------------------------------

def test_color_gains_scale_each_channel():
    img = flat(100)
    out = A.color_balance(img, [1.2, 1.0, 0.8], contrast=1.0)
    np.testing.assert_allclose(out[0, 0], [120, 100, 80], atol=1)


def test_gamma_above_one_darkens_mid_tones_and_keeps_the_ends():
    img = np.concatenate([flat(0, 8), flat(128, 8), flat(255, 8)], axis=1)
    dark, bright = A.gamma(img, 1.5), A.gamma(img, 0.7)
    assert dark[0, 8, 0] < 128 < bright[0, 8, 0]
    assert dark[0, 0, 0] == 0 and dark[0, -1, 0] == 255


def test_haze_raises_the_minimum_and_lowers_contrast():
    img = texture(3)
    out = A.haze(img, 0.4, [200, 210, 225])
    assert out.min() > img.min() + 40
    assert out.std() < 0.7 * img.std()
    blue_minus_red = lambda a: float((a[..., 2].astype(np.float32) - a[..., 0]).mean())  # noqa: E731
    assert blue_minus_red(out) == pytest.approx(0.6 * blue_minus_red(img) + 0.4 * 25, abs=1)  # a bluish veil


def test_shadow_only_darkens_and_is_soft():
    img = flat(200, 96)
    for shape in ("blob", "band"):
        out = A.shadow(img, shape, 0.5, 0.5, 0.3, 0.2, 0.3, 0.6)
        assert (out <= img).all()
        assert out[48, 48, 0] < 100           # the core loses about 60 % of its light
        assert out[0, 0, 0] > 150 or shape == "band"
        assert len(np.unique(out[..., 0])) > 10  # a soft edge, not a hard cut


def test_season_moves_the_hue_of_pure_green_toward_yellow():
    green = np.zeros((8, 8, 3), np.uint8)
    green[..., 1] = 200
    out = A.season(green, -40.0, 1.0)
    hue = cv2.cvtColor(out.astype(np.float32) / 255, cv2.COLOR_RGB2HSV)[0, 0, 0]
    assert 70 < hue < 90, hue  # from 120° toward yellow (60°)
    assert out[0, 0, 0] > 100  # red appears: yellow-green
    # brown soil and blue water are left alone; saturation scales
    soil = np.full((4, 4, 3), (140, 90, 50), np.uint8)
    np.testing.assert_allclose(A.season(soil, -40.0, 1.0), soil, atol=1)
    washed = A.season(green, 0.0, 0.5)
    assert washed[0, 0, 0] > 80 and washed[0, 0, 1] >= 198


def test_resolution_lowers_high_frequency_energy():
    img = texture(4)
    out = A.resolution(img, 3.0)
    assert high_freq(out) < 0.3 * high_freq(img)
    assert abs(float(out.mean()) - float(img.mean())) < 3


def test_jpeg_changes_the_bytes_but_keeps_the_mean():
    img = texture(5)
    out = A.jpeg(img, 20)
    assert not np.array_equal(out, img)
    assert np.abs(out.astype(int) - img.astype(int)).mean() > 1
    assert abs(float(out.mean()) - float(img.mean())) < 3


def test_noise_changes_the_std_of_a_flat_image():
    out = A.noise(flat(128), 6.0, seed=1)
    assert 5.0 < out.astype(np.float32).std() < 7.0
    assert abs(float(out.mean()) - 128) < 1
    np.testing.assert_array_equal(out, A.noise(flat(128), 6.0, seed=1))
    assert not np.array_equal(out, A.noise(flat(128), 6.0, seed=2))


def test_zoom_in_doubles_the_checkerboard_period_and_zoom_out_pads_black():
    board = checkerboard(8)
    assert transitions(board[20, :, 0]) == 15
    zin = A.zoom(board, 2.0, 0.0, 0.0)
    assert transitions(zin[20, :, 0]) in (7, 8)
    zout = A.zoom(flat(200), 0.5, 0.0, 0.0)
    assert (zout[:16] == 0).all() and (zout[:, :16] == 0).all() and (zout[24:40, 24:40] == 200).all()
    assert A.zoom(board, 0.5, -1.0, -1.0)[:32, :32].any() and not A.zoom(board, 0.5, -1.0, -1.0)[32:].any()


def test_shift_moves_a_bright_pixel_by_the_expected_offset_and_fills_black():
    img = np.zeros((S, S, 3), np.uint8)
    img[10, 20] = 255
    out = A.shift(img, 0.25, -0.125)  # 16 px right, 8 px up
    assert tuple(np.argwhere(out[..., 0] == 255)[0]) == (2, 36)
    out = A.shift(flat(90), -0.25, 0.25)
    assert (out[:16] == 0).all() and (out[:, 48:] == 0).all() and (out[16:, :48] == 90).all()
    p = A.draw_distortion("shift", np.random.default_rng(3))
    assert 0.1 <= np.hypot(p["dx"], p["dy"]) <= 0.4


def test_parameter_ranges_match_what_they_model():
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert 20 <= A.draw_distortion("jpeg", rng)["quality"] <= 70
        assert 2 <= A.draw_distortion("noise", rng)["sigma"] <= 10
        assert 1.5 <= A.draw_distortion("resolution", rng)["factor"] <= 4
        assert 0.5 <= A.draw_distortion("zoom", rng)["scale"] <= 2
        assert all(0.8 <= g <= 1.2 for g in A.draw_distortion("color", rng)["gains"])


# --- acquisition() and the gallery ------------------------------------------------------------------------

def test_acquisition_is_deterministic_and_applies_two_to_four():
    img = texture(6)
    a, pa = A.acquisition(img, np.random.default_rng(11))
    b, pb = A.acquisition(img, np.random.default_rng(11))
    np.testing.assert_array_equal(a, b)
    assert pa == pb and 2 <= len(pa) <= 4 and set(pa) <= set(A.ACQUISITION)
    assert list(pa) == [k for k in A.ACQUISITION if k in pa]  # applied in ACQUISITION's order
    counts = {len(A.acquisition(img, np.random.default_rng(s))[1]) for s in range(40)}
    assert counts == {2, 3, 4}
    # replaying the recorded parameters gives the same image
    out = img
    for kind, p in json.loads(json.dumps(pa)).items():
        out = A.apply_distortion(out, kind, p)
    np.testing.assert_array_equal(out, a)
    one, p1 = A.acquisition(img, np.random.default_rng(0), k=1)
    assert len(p1) == 1 and one.shape == img.shape
    with pytest.raises(ValueError, match="k must be 1-10, got 11"):
        A.acquisition(img, np.random.default_rng(0), k=11)


def test_each_distortion_and_describe():
    gallery = A.each_distortion(texture(7), np.random.default_rng(0))
    assert [k for k, _, _ in gallery] == list(A.ACQUISITION)
    text = A.describe({"gains": [1.0512, 0.9], "contrast": 0.8, "seed": 5, "shape": "band"})
    assert text == "gains=[1.05, 0.90] · contrast=0.80 · shape=band"


def test_make_variant_records_new_distortions_in_json():
    img, params = A.make_variant(texture(8), np.random.default_rng(0), ("season", "jpeg", "shift"))
    assert img.shape == (S, S, 3) and set(params) == {"angle", "season", "jpeg", "shift"}
    json.dumps(params)


# --- augment_batch (TensorFlow) ------------------------------------------------------------------------------

def test_augment_batch_keeps_shape_and_range_and_randomises_per_image():
    from siamese_core.core.backend import tf
    from siamese_core.learn.train import augment_batch
    tf.random.set_seed(0)
    one = texture(9).astype(np.float32) / 255.0
    x = tf.constant(np.stack([one] * 16))
    y = augment_batch(x).numpy()
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.isfinite(y).all() and y.min() >= 0.0 and y.max() <= 1.0
    assert not np.allclose(y[0], y[1], atol=1e-3)
    # the colour of the same tile varies per image (gain, gamma, saturation, haze), not only the geometry
    means = y.reshape(16, -1, 3).mean(axis=1)
    assert means.std(axis=0).min() > 0.01
    # and it still works inside a tf.function on a batch of unknown size
    f = tf.function(augment_batch, input_signature=[tf.TensorSpec([None, S, S, 3], tf.float32)])
    z = f(x[:3]).numpy()
    assert z.shape == (3, S, S, 3) and 0.0 <= z.min() and z.max() <= 1.0
    for seed in range(10):  # a batch of one: the resampled / noisy subsets are often empty
        tf.random.set_seed(seed)
        assert f(x[:1]).shape == (1, S, S, 3)


def test_augment_batch_with_a_fixed_seed_is_reproducible():
    from siamese_core.core.backend import tf
    from siamese_core.learn.train import augment_batch
    x = tf.constant(np.stack([texture(10).astype(np.float32) / 255.0] * 4))
    tf.random.set_seed(3)
    a = augment_batch(x).numpy()
    tf.random.set_seed(3)
    b = augment_batch(x).numpy()
    np.testing.assert_array_equal(a, b)


# --- the Triplets page's section -------------------------------------------------------------------------------

@pytest.fixture
def triplets_ws(tiny_ws, tmp_path, monkeypatch) -> Path:
    """A private copy of the shared tiny workspace, set as $SIAMESE_WORKSPACE."""
    ws = tmp_path / "ws"
    shutil.copytree(tiny_ws, ws, ignore=shutil.ignore_patterns("train.lock"))
    monkeypatch.setenv("SIAMESE_WORKSPACE", str(ws))
    monkeypatch.chdir(ROOT)
    return ws


def test_triplets_page_shows_what_a_new_acquisition_looks_like(triplets_ws):
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    at.run()
    at.switch_page("app_pages/triplets.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(e.label == "What a new acquisition looks like" for e in at.expander)
    before = len(at.image)
    toggle = [w for w in at.toggle if w.key == "triplets_acq_show"]
    assert toggle, [w.key for w in at.toggle]
    toggle[0].set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    captions = [c for im in at.image for c in im.captions]
    assert len(at.image) == before + len(A.ACQUISITION) + 2  # the original, one per distortion, a second date
    for kind in A.ACQUISITION:
        assert any(c.startswith(f"{kind} · ") and "=" in c for c in captions), (kind, captions)
    assert any(c.startswith("second date: ") for c in captions)
    # another seed draws other parameters
    gamma_caption = next(c for c in captions if c.startswith("gamma · "))
    [w for w in at.number_input if w.key == "triplets_acq_seed"][0].set_value(5).run()
    assert not at.exception
    captions = [c for im in at.image for c in im.captions]
    assert gamma_caption not in captions
