"""Dataset store and pairs: atomic writes, memory-mapped images, seeded pairs, group split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from siamese_core.config import DataConfig, PairsConfig
from siamese_core.errors import DatasetError, SiameseError
from siamese_core.pairs import make_pairs, split_groups
from siamese_core.store import build_dataset, check_name, list_datasets, open_dataset


def test_build_and_reopen(ws):
    ds = build_dataset(DataConfig(limit=10, size=32, variants=2), "a", ws)
    assert len(ds) == 30 and ds.images.shape == (30, 32, 32, 3) and ds.images.dtype == np.uint8
    assert isinstance(ds.images, np.memmap)
    m = ds.manifest
    assert list(m["group"]) == [g for g in range(10) for _ in range(3)]
    assert list(m["variant"][:3]) == [0, 1, 2]
    assert m["angle"][0] == 0 and 0 <= m["angle"][1] < 360
    again = open_dataset("a", ws)
    assert np.array_equal(np.asarray(again.images), np.asarray(ds.images))
    assert list_datasets(ws) == ["a"]
    # originals are the source tiles; variants are rotations of them (rotation keeps mean-ish colour)
    assert not np.array_equal(ds.images[0], ds.images[1])


def test_same_seed_same_dataset(ws):
    a = build_dataset(DataConfig(limit=6, size=32, seed=3), "a", ws)
    b = build_dataset(DataConfig(limit=6, size=32, seed=3), "b", ws)
    c = build_dataset(DataConfig(limit=6, size=32, seed=4), "c", ws)
    assert np.array_equal(np.asarray(a.images), np.asarray(b.images))
    assert not np.array_equal(np.asarray(a.images), np.asarray(c.images))


def test_distortions_are_recorded(ws):
    ds = build_dataset(DataConfig(limit=4, size=32, variants=1, distortions=("flip", "blur", "occlude")), "d", ws)
    t = json.loads(ds.manifest["transforms"][1])
    assert set(t) == {"flip", "blur", "occlude"} and "sigma" in t["blur"]
    assert json.loads(ds.manifest["transforms"][0]) == {}


def test_existing_dataset_is_not_overwritten_without_flag(ws):
    build_dataset(DataConfig(limit=4, size=32), "a", ws)
    with pytest.raises(DatasetError, match="already exists"):
        build_dataset(DataConfig(limit=5, size=32), "a", ws)
    assert len(open_dataset("a", ws)) == 12
    build_dataset(DataConfig(limit=5, size=32), "a", ws, overwrite=True)
    assert len(open_dataset("a", ws)) == 15


def test_failure_midway_leaves_nothing(ws, monkeypatch):
    build_dataset(DataConfig(limit=4, size=32), "keep", ws)
    import siamese_core.augment as augment

    def boom(*a, **k):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(augment, "make_variant", boom)
    with pytest.raises(RuntimeError):
        build_dataset(DataConfig(limit=4, size=32), "keep", ws, overwrite=True)
    with pytest.raises(RuntimeError):
        build_dataset(DataConfig(limit=4, size=32), "new", ws)
    assert list_datasets(ws) == ["keep"] and len(open_dataset("keep", ws)) == 12
    assert [p.name for p in (ws / "datasets").iterdir()] == ["keep"]  # no temp leftovers


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "", ".hidden", "a" * 65, "x..y"])
def test_bad_names(name):
    with pytest.raises(SiameseError, match="invalid dataset name"):
        check_name(name)


def test_missing_dataset_message(ws):
    with pytest.raises(DatasetError, match="not found"):
        open_dataset("nope", ws)


def _groups(n_groups=30, k=3):
    return np.repeat(np.arange(n_groups), k)


def test_reference_rules():
    g = _groups()
    p = make_pairs(g, PairsConfig(identical=True, negatives=1, seed=0))
    assert len(p) == 3 * len(g)
    same, diff = p.label == 0, p.label == 1
    assert np.all(g[p.a[same]] == g[p.b[same]])
    assert np.all(g[p.a[diff]] != g[p.b[diff]])
    assert p.identical.sum() >= len(g)  # rule 3 (rule 1 may add more)


def test_no_identical_pairs_when_off():
    p = make_pairs(_groups(), PairsConfig(identical=False, negatives=2))
    assert not p.identical.any()
    assert (p.label == 1).sum() == 2 * (p.label == 0).sum()


def test_split_by_group_and_no_leak():
    g = _groups(50)
    p = make_pairs(g, PairsConfig(val_fraction=0.2, seed=1))
    train_groups = set(g[p.a[~p.val]]) | set(g[p.b[~p.val]])
    val_groups = set(g[p.a[p.val]]) | set(g[p.b[p.val]])
    assert not train_groups & val_groups
    assert len(set(g[p.a[p.val]])) == 10


def test_same_seed_same_pairs_and_split():
    g = _groups()
    a, b = make_pairs(g, PairsConfig(seed=5)), make_pairs(g, PairsConfig(seed=5))
    c = make_pairs(g, PairsConfig(seed=6))
    for f in ("a", "b", "label", "val"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.b, c.b)
    assert np.array_equal(split_groups(g, 0.1, 5), split_groups(g, 0.1, 5))


def test_pair_limit_caps_anchors():
    p = make_pairs(_groups(100), PairsConfig(limit=30, identical=True))
    assert p.a.max() < 30 and len(p) == 90


def test_too_few_tiles():
    with pytest.raises(DatasetError, match="at least 4"):
        make_pairs(_groups(2), PairsConfig())


def test_tile_rows_read_what_the_memory_map_holds(ws):
    """Training reads tiles with pread (TileRows); it must see exactly the stored bytes, in the order asked."""
    ds = build_dataset(DataConfig(limit=8, size=32, variants=2), "r", ws)
    rows = ds.rows()
    assert len(rows) == 24 and rows.shape == ds.images.shape
    idx = np.array([5, 0, 23, 5, 11])
    got = rows[idx]
    assert got.dtype == np.uint8 and got.shape == (5, 32, 32, 3)
    assert np.array_equal(got, np.asarray(ds.images[idx]))
    assert rows[np.array([], np.int64)].shape == (0, 32, 32, 3)
    with pytest.raises(IndexError, match="out of range 0..23"):
        rows[np.array([3, 24])]
    with pytest.raises(IndexError):
        rows[np.array([-1])]


def test_tile_rows_name_a_truncated_store(ws):
    ds = build_dataset(DataConfig(limit=4, size=32, variants=0), "t", ws)
    rows = ds.rows()
    path = ds.path / "images.npy"
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 100)
    with pytest.raises(DatasetError, match="truncated at row 3"):
        rows[np.array([0, 3])]


def test_groups_come_from_groups_npy_or_the_manifest(ws):
    ds = build_dataset(DataConfig(limit=5, size=32, variants=2), "g", ws)
    assert (ds.path / "groups.npy").exists()
    assert np.array_equal(ds.groups, ds.manifest["group"].to_numpy())
    (ds.path / "groups.npy").unlink()  # a dataset made before groups.npy existed
    assert np.array_equal(open_dataset("g", ws).groups, [g for g in range(5) for _ in range(3)])
