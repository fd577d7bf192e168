"""Dataset store and pairs: atomic writes, memory-mapped images, seeded pairs, the three-way group split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from siamese_core.core.config import DataConfig, PairsConfig
from siamese_core.core.errors import DatasetError, SiameseError
from siamese_core.core.files import check_name
from siamese_core.data.pairs import CALIBRATION, TEST, TRAIN, Pairs, assign_splits, make_pairs, split_groups
from siamese_core.data.store import build_dataset, list_datasets, open_dataset


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
    import siamese_core.data.augment as augment

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
    p = make_pairs(g, PairsConfig(val_fraction=0.2, test_fraction=0.1, seed=1))
    places = {s: set(g[p.a[p.mask(s)]]) | set(g[p.b[p.mask(s)]]) for s in ("train", "calibration", "test")}
    assert not places["train"] & places["calibration"]
    assert not places["train"] & places["test"]
    assert not places["calibration"] & places["test"]
    assert len(places["calibration"]) == 10 and len(places["test"]) == 5 and len(places["train"]) == 35
    assert not (p.val & p.test).any()
    c = p.counts()
    assert sum(c[s]["same"] + c[s]["different"] for s in c) == len(p)
    # 5 places x 3 images: per image one other member, itself (identical on) and one negative
    assert c["test"] == {"same": 30, "different": 15, "identical": c["test"]["identical"]} and c["test"]["identical"] >= 15


def test_three_way_split_fractions_and_minimums():
    for n, val, test, want in ((100, 0.1, 0.1, (80, 10, 10)), (100, 0.2, 0.3, (50, 20, 30)),
                               (3, 0.1, 0.1, (1, 1, 1)),  # at least one place in each split
                               (4, 0.1, 0.1, (2, 1, 1)), (10, 0.1, 0.0, (9, 1, 0))):
        g = np.repeat(np.arange(n), 2)
        code = assign_splits(g, val, test, seed=3)
        got = tuple(len(set(g[code == c])) for c in (TRAIN, CALIBRATION, TEST))
        assert got == want, (n, val, test, got)
        for grp in np.unique(g):  # every image of a place in one split
            assert len(set(code[g == grp])) == 1


def test_three_way_split_is_seeded_and_keeps_the_old_calibration_split_without_test():
    g = _groups(60)
    assert np.array_equal(assign_splits(g, 0.1, 0.1, 7), assign_splits(g, 0.1, 0.1, 7))
    assert not np.array_equal(assign_splits(g, 0.1, 0.1, 7), assign_splits(g, 0.1, 0.1, 8))
    # without a test split the calibration places are the ones the two-way split chose
    assert np.array_equal(assign_splits(g, 0.1, 0.0, 7) == CALIBRATION, split_groups(g, 0.1, 7))
    # and adding a test split does not move them: test places come from the training side
    assert np.array_equal(assign_splits(g, 0.1, 0.1, 7) == CALIBRATION, split_groups(g, 0.1, 7))


def test_negatives_are_drawn_within_the_anchors_split():
    g = _groups(40)
    code = assign_splits(g, 0.2, 0.2, 0)
    p = make_pairs(g, PairsConfig(identical=False, negatives=3, val_fraction=0.2, test_fraction=0.2, seed=0))
    diff = p.label == 1
    assert diff.sum() == 3 * len(g)
    assert np.array_equal(code[p.a[diff]], code[p.b[diff]])  # both images of every pair in one split
    assert np.array_equal(code[p.a], code[p.b])
    assert np.array_equal(p.test, code[p.a] == TEST) and np.array_equal(p.val, code[p.a] == CALIBRATION)


def test_split_fractions_are_checked_with_the_fix():
    with pytest.raises(SiameseError, match=r"test_fraction=1\.0 must be"):
        PairsConfig(test_fraction=1.0)
    with pytest.raises(SiameseError, match=r"val_fraction=0\.5 \+ test_fraction=0\.5 leave no places to train"):
        PairsConfig(val_fraction=0.5, test_fraction=0.5)


def test_pairs_save_and_load_the_test_mask_and_old_files_have_no_test_pairs(tmp_path):
    p = make_pairs(_groups(), PairsConfig(seed=2))
    assert p.test.any()
    p.save(tmp_path / "pairs.npz")
    q = Pairs.load(tmp_path / "pairs.npz")
    for f in ("a", "b", "label", "val", "test"):
        assert np.array_equal(getattr(p, f), getattr(q, f))
    # a pairs.npz written before the test split: a, b, label, val only
    np.savez(tmp_path / "old.npz", a=p.a, b=p.b, label=p.label, val=p.val)
    old = Pairs.load(tmp_path / "old.npz")
    assert not old.test.any() and len(old.testing) == 0 and old.counts()["test"] == {"same": 0, "different": 0,
                                                                                      "identical": 0}
    assert np.array_equal(old.mask("train"), ~p.val)


def test_a_run_config_saved_before_the_test_split_reads_no_test_fraction():
    from siamese_core.core.config import RunConfig
    new = RunConfig.build("d", "default")
    assert new.pairs.test_fraction == 0.1 and RunConfig.build("d", "seed").pairs.test_fraction == 0.1
    assert RunConfig.build("d", test_fraction=0.25).pairs.test_fraction == 0.25
    old = new.to_dict()
    del old["pairs"]["test_fraction"]
    assert RunConfig.from_dict(old).pairs.test_fraction == 0.0
    assert RunConfig.from_dict(new.to_dict()) == new


def test_same_seed_same_pairs_and_split():
    g = _groups()
    a, b = make_pairs(g, PairsConfig(seed=5)), make_pairs(g, PairsConfig(seed=5))
    c = make_pairs(g, PairsConfig(seed=6))
    for f in ("a", "b", "label", "val", "test"):
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
