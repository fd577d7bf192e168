"""Tests for the procedural aerial-tile generator (siamese_core.data.sources.synthetic)."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from siamese_core.core.errors import SiameseError
from siamese_core.data.sources.synthetic import iter_synthetic, synthetic_tile


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference between two uint8 images, in grey levels."""
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


@pytest.mark.parametrize("size", [64, 128, 400])
def test_same_arguments_give_identical_bytes(size):
    a = synthetic_tile(7, size=size, seed=3)
    b = synthetic_tile(7, size=size, seed=3)
    assert a.tobytes() == b.tobytes()


def test_determinism_does_not_depend_on_call_order():
    first = synthetic_tile(5)
    for i in range(3):
        synthetic_tile(i, size=96, seed=9)
    assert synthetic_tile(5).tobytes() == first.tobytes()


def test_different_seed_gives_different_tile():
    for i in range(5):
        assert _mad(synthetic_tile(i, seed=0), synthetic_tile(i, seed=1)) > 15


@pytest.mark.parametrize("size", [16, 32, 128, 256])
def test_shape_and_dtype(size):
    t = synthetic_tile(0, size=size)
    assert t.shape == (size, size, 3)
    assert t.dtype == np.uint8
    assert t.flags.c_contiguous


def test_accepts_numpy_integers():
    assert synthetic_tile(np.int64(2), size=np.int32(32), seed=np.uint8(1)).shape == (32, 32, 3)


def test_different_indices_give_different_tiles():
    tiles = [synthetic_tile(i) for i in range(12)]
    for i in range(len(tiles)):
        for j in range(i + 1, len(tiles)):
            assert _mad(tiles[i], tiles[j]) > 15, (i, j)


def test_every_tile_has_real_texture():
    for i in range(40):
        t = synthetic_tile(i).reshape(-1, 3).astype(np.float32)
        assert t.std(axis=0).min() > 8, i
        # detail reaches the border: the outermost rows/columns are not flat
        img = synthetic_tile(i)
        for edge in (img[0], img[-1], img[:, 0], img[:, -1]):
            assert edge.astype(np.float32).std(axis=0).max() > 3, i


def test_tiles_are_not_rotationally_or_mirror_symmetric():
    for i in range(40):
        t = synthetic_tile(i)
        for k in (1, 2, 3):
            assert _mad(t, np.rot90(t, k)) > 10, (i, k)
        assert _mad(t, t[::-1]) > 10, i
        assert _mad(t, t[:, ::-1]) > 10, i


def test_same_scene_at_every_resolution():
    # the layout does not depend on size: a 256 px tile shrunk to 128 px matches the 128 px tile
    # far better than any other tile does
    for i in range(4):
        small = cv2.resize(synthetic_tile(i, size=256), (128, 128), interpolation=cv2.INTER_AREA)
        same = _mad(small, synthetic_tile(i, size=128))
        other = _mad(small, synthetic_tile(i + 1, size=128))
        assert same < 0.6 * other, (i, same, other)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"index": 0, "size": 15}, "size"),
        ({"index": 0, "size": 2049}, "size"),
        ({"index": 0, "size": 0}, "size"),
        ({"index": 0, "size": 64.0}, "size"),
        ({"index": -1}, "index"),
        ({"index": 1.5}, "index"),
        ({"index": "3"}, "index"),
        ({"index": True}, "index"),
        ({"index": 0, "seed": -1}, "seed"),
    ],
)
def test_bad_tile_arguments_raise_siamese_error(kwargs, name):
    with pytest.raises(SiameseError) as info:
        synthetic_tile(**kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{name}=")
    assert "pass " in msg  # names the fix


def test_size_limits_are_inclusive():
    assert synthetic_tile(0, size=16).shape == (16, 16, 3)


@pytest.mark.parametrize(
    "kwargs,name",
    [({"limit": 0}, "limit"), ({"limit": -5}, "limit"), ({"size": 8}, "size"),
     ({"size": 4096}, "size"), ({"seed": -2}, "seed")],
)
def test_bad_iter_arguments_raise_at_call_time(kwargs, name):
    # raised when iter_synthetic is called, not later on the first next()
    with pytest.raises(SiameseError, match=name):
        iter_synthetic(**kwargs)


def test_iter_synthetic_yields_limit_items_with_unique_ids():
    items = list(iter_synthetic(limit=25, size=32, seed=4))
    assert len(items) == 25
    ids = [tile_id for tile_id, _, _ in items]
    assert len(set(ids)) == 25
    assert ids[0] == "synthetic-000000"
    assert ids[24] == "synthetic-000024"
    for i, (tile_id, image, provenance) in enumerate(items):
        assert tile_id == f"synthetic-{i:06d}"
        assert provenance == f"synthetic:seed=4:index={i}"
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        assert image.tobytes() == synthetic_tile(i, size=32, seed=4).tobytes()


def test_iter_synthetic_default_limit():
    it = iter_synthetic()
    tile_id, image, provenance = next(it)
    assert (tile_id, provenance) == ("synthetic-000000", "synthetic:seed=0:index=0")
    assert image.shape == (128, 128, 3)
    assert sum(1 for _ in it) == 599


def test_import_does_not_pull_in_tensorflow_or_streamlit():
    code = (
        "import sys, siamese_core.data.sources.synthetic as s; s.synthetic_tile(0, 32); "
        "bad = [m for m in ('tensorflow', 'streamlit') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
