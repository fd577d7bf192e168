"""Sources of real second views: ``ab`` (A/, B/... folders of co-registered dates) and ``pairs-csv``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from siamese_core.core.config import DataConfig, PairsConfig
from siamese_core.core.errors import SiameseError
from siamese_core.data.images import encode_png, to_tile
from siamese_core.data.pairs import make_pairs
from siamese_core.data.sources import count_tiles, iter_tiles
from siamese_core.data.store import build_dataset

ROOT = Path(__file__).resolve().parents[1]
CORE = ["index", "group", "tile_id", "source", "variant", "angle", "transforms"]


def noise(seed: int, h: int = 64, w: int = 64) -> np.ndarray:
    """A textured RGB image, distinct per seed (smooth blobs, so resizing keeps it distinct)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
    return np.kron(small, np.ones((8, 8, 1), np.uint8))[:h, :w].copy()


def put(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(img))
    return path


def ab_folder(root: Path, places: dict[str, tuple], letters="AB") -> Path:
    """places: name -> one image per letter (None = leave that file out)."""
    for name, imgs in places.items():
        for letter, img in zip(letters, imgs):
            if img is not None:
                put(root / letter / f"{name}.png", img)
    return root


def build(tmp_path, source, path, name="d", **kw):
    skipped = []
    cfg = DataConfig(source=source, path=str(path), size=kw.pop("size", 32), **kw)
    ds = build_dataset(cfg, name, tmp_path / "ws", on_skip=lambda f, why: skipped.append((f, why)))
    return ds, skipped


# ------------------------------------------------------------------------------------------------
# ab
# ------------------------------------------------------------------------------------------------

def test_ab_groups_hold_both_views(tmp_path):
    d = ab_folder(tmp_path / "cd", {f"p{i}": (noise(i), noise(100 + i)) for i in range(5)})
    ds, skipped = build(tmp_path, "ab", d, variants=1)
    assert skipped == [] and ds.skipped() == []
    m = ds.manifest
    assert list(m.columns[:len(CORE)]) == CORE and {"place", "view", "x", "y", "window", "date"} <= set(m.columns)
    assert len(ds) == 5 * 2 * 2 and ds.info["groups"] == 5
    for g, rows in m.groupby("group"):
        assert sorted(rows["view"].unique()) == ["A", "B"]
        assert rows["place"].nunique() == 1
        assert sorted(rows["variant"]) == [0, 0, 1, 1]
    assert list(ds.groups) == list(m["group"])
    # view 0 of each date is the image itself, resized
    row = m[(m.place == "p3") & (m.view == "B") & (m.variant == 0)].iloc[0]
    assert np.array_equal(ds.images[row["index"]], to_tile(noise(103), 32))
    # pairs drawn from the groups include real across-date same-place pairs
    pairs = make_pairs(ds.groups, PairsConfig(identical=False, val_fraction=0.2))
    same = pairs.label == 0
    views = m["view"].to_numpy()
    assert np.any(views[pairs.a[same]] != views[pairs.b[same]])
    assert np.all(ds.groups[pairs.a[same]] == ds.groups[pairs.b[same]])


def test_ab_windows_are_aligned(tmp_path):
    a = noise(7, 64, 96)
    d = ab_folder(tmp_path / "cd", {"same": (a, a), "other": (noise(8, 64, 96), noise(9, 64, 96))})
    cfg = DataConfig(source="ab", path=str(d), size=16, window=32, variants=0)
    assert count_tiles(cfg) == 2 * (3 * 2)
    ds, skipped = build(tmp_path, "ab", d, size=16, window=32, variants=0)
    assert skipped == [] and ds.info["groups"] == 12 and len(ds) == 24
    m = ds.manifest
    same = m[m.place == "same"]
    assert sorted(zip(same.x[same.view == "A"], same.y[same.view == "A"])) == \
        [(x, y) for x in (0, 32, 64) for y in (0, 32)]
    for _, rows in same.groupby("group"):
        ia, ib = rows[rows.view == "A"].iloc[0], rows[rows.view == "B"].iloc[0]
        assert (ia.x, ia.y) == (ib.x, ib.y) and ia.window == 32
        assert np.array_equal(ds.images[ia["index"]], ds.images[ib["index"]])  # A == B: same pixels
        assert np.array_equal(ds.images[ia["index"]], to_tile(a[ia.y:ia.y + 32, ia.x:ia.x + 32], 16))
    # different windows of one place are different images
    firsts = same[same.view == "A"]["index"].tolist()
    assert not np.array_equal(ds.images[firsts[0]], ds.images[firsts[1]])
    # overlapping windows with a stride
    cfg = DataConfig(source="ab", path=str(d), size=16, window=32, stride=16, variants=0)
    groups = list(iter_tiles(cfg))
    assert len(groups) == count_tiles(cfg) == 2 * (5 * 3)
    assert all([v.info["view"] for v in g] == ["A", "B"] for g in groups)


def test_ab_third_date_and_unequal_sizes(tmp_path):
    big = noise(1, 80, 72)
    d = ab_folder(tmp_path / "cd", {"p": (noise(1), big, noise(2)), "q": (noise(3), noise(4), noise(5))}, "ABC")
    ds, skipped = build(tmp_path, "ab", d, variants=1)
    assert skipped == [] and ds.info["groups"] == 2
    m = ds.manifest
    for _, rows in m.groupby("group"):
        assert sorted(rows["view"].unique()) == ["A", "B", "C"]
    # B of p (72x80) was cropped to A's 64x64 from the top-left; noise(1) at 64x64 is its top-left
    row = m[(m.place == "p") & (m.view == "B") & (m.variant == 0)].iloc[0]
    assert np.array_equal(ds.images[row["index"]], to_tile(big[:64, :64], 32))


def test_ab_bad_files_are_skipped_once_and_the_rest_imports(tmp_path):
    d = ab_folder(tmp_path / "cd", {"x": (noise(1), noise(2)), "w": (noise(3), noise(4)),
                                    "z": (noise(5), None), "y": (noise(6), None)})
    (d / "B" / "y.jpg").write_bytes(b"this is not an image")  # matches A/y.png by its stem, but corrupt
    (d / "B" / "notes.txt").write_text("ignored: not an image extension")
    ds, skipped = build(tmp_path, "ab", d, variants=0)
    assert sorted(ds.manifest["place"].unique()) == ["w", "x"]
    assert ds.info["groups"] == 2
    rows = ds.skipped()
    assert len(rows) == 2 and len(skipped) == 2
    by_file = {Path(r["file"]).relative_to(d.resolve()).as_posix(): r["reason"] for r in rows}
    assert set(by_file) == {"A/z.png", "B/y.jpg"}
    assert "only in A/, no match in B/" in by_file["A/z.png"]
    assert "B/y.jpg" in by_file["B/y.jpg"] and "not imported" in by_file["B/y.jpg"]
    assert all("\n" not in why for why in by_file.values())


def test_ab_window_larger_than_a_place_is_reported(tmp_path):
    d = ab_folder(tmp_path / "cd", {"small": (noise(1, 40, 40), noise(2, 40, 40)), "big": (noise(3), noise(4))})
    ds, skipped = build(tmp_path, "ab", d, window=48, variants=0)
    assert ds.info["groups"] == 1 and set(ds.manifest["place"]) == {"big"}
    assert len(skipped) == 1 and "smaller than --window 48" in skipped[0][1]


@pytest.mark.parametrize("sub", [(), ("images",), ("A",)])
def test_ab_without_a_and_b_folders_is_one_line_error(tmp_path, sub):
    d = tmp_path / "plain"
    put(d / "loose.png", noise(1))
    for s in sub:
        put(d / s / "x.png", noise(2))
    with pytest.raises(SiameseError) as e:
        build(tmp_path, "ab", d)
    msg = str(e.value)
    assert "\n" not in msg and str(d) in msg and "A/ and B/" in msg
    assert not (tmp_path / "ws" / "datasets").exists() or not any(
        p for p in (tmp_path / "ws" / "datasets").iterdir() if not p.name.startswith("."))


def test_ab_same_seed_same_dataset(tmp_path):
    d = ab_folder(tmp_path / "cd", {f"p{i}": (noise(i, 64, 96), noise(50 + i, 64, 96)) for i in range(3)})
    one, _ = build(tmp_path, "ab", d, name="one", window=32, variants=2, seed=3, distortions=("blur",))
    two, _ = build(tmp_path, "ab", d, name="two", window=32, variants=2, seed=3, distortions=("blur",))
    other, _ = build(tmp_path, "ab", d, name="other", window=32, variants=2, seed=4, distortions=("blur",))
    assert np.array_equal(one.images, two.images)
    assert one.manifest.equals(two.manifest)
    assert not np.array_equal(one.manifest["angle"], other.manifest["angle"])
    # the two dates of one window get different rotations (views are seeded apart)
    m = one.manifest
    g0 = m[(m.group == 0) & (m.variant == 1)]
    assert g0["angle"].nunique() == 2


def test_ab_limit_counts_groups(tmp_path):
    d = ab_folder(tmp_path / "cd", {f"p{i}": (noise(i), noise(9 + i)) for i in range(4)})
    ds, _ = build(tmp_path, "ab", d, window=32, limit=5, variants=0)
    assert ds.info["groups"] == 5 and len(ds) == 10
    assert count_tiles(DataConfig(source="ab", path=str(d), window=32, limit=5)) == 5


def test_existing_sources_keep_their_manifest(tmp_path):
    ds, _ = build(tmp_path, "synthetic", "", limit=4, variants=1)
    assert list(ds.manifest.columns) == CORE
    assert list(ds.groups) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_window_options_are_checked():
    with pytest.raises(SiameseError, match="only to --source ab"):
        DataConfig(source="folder", path="x", window=32)
    with pytest.raises(SiameseError, match="needs a window"):
        DataConfig(source="ab", path="x", stride=16)
    with pytest.raises(SiameseError, match="window=4 is out of range"):
        DataConfig(source="ab", path="x", window=4)


# ------------------------------------------------------------------------------------------------
# pairs-csv
# ------------------------------------------------------------------------------------------------

def pairs_folder(tmp_path: Path) -> Path:
    d = tmp_path / "pairs"
    for i, n in enumerate("abcdef"):
        put(d / "img" / f"{n}.png", noise(i))
    return d


def test_pairs_csv_components_become_groups(tmp_path):
    d = pairs_folder(tmp_path)
    absolute_c = d / "img" / "c.png"
    (d / "pairs.csv").write_text(
        "image_a,image_b,label\n"       # line 1
        "img/a.png,img/b.png,0\n"       # 2
        f"img/b.png,{absolute_c},0\n"   # 3: absolute path
        "img/d.png,img/e.png,0\n"       # 4
        "\n"                            # 5: blank, skipped silently
        "img/a.png,img/d.png,1\n"       # 6
        "img/f.png,img/a.png,1\n"       # 7: f is only in a different-place pair
        "img/c.png,img/e.png,same\n"    # 8: bad label
        "./img/a.png,img/c.png,1\n"     # 9: contradicts lines 2-3
    )
    ds, skipped = build(tmp_path, "pairs-csv", d / "pairs.csv", variants=1)
    m = ds.manifest
    members = {g: set(Path(t).name for t in rows["tile_id"]) for g, rows in m.groupby("group")}
    assert members == {0: {"a.png", "b.png", "c.png"}, 1: {"d.png", "e.png"}, 2: {"f.png"}}
    assert len(ds) == 6 * 2 and m["tile_id"].nunique() == 6  # every image once (with its variant)
    assert set(m["place"]) == {"img/a.png", "img/d.png", "img/f.png"}
    reasons = [why for _, why in skipped]
    assert len(reasons) == 2 and len(ds.skipped()) == 2
    assert "line 8" in reasons[0] and "'same'" in reasons[0] and "0 or 1" in reasons[0]
    assert "line 9" in reasons[1] and "same place" in reasons[1]
    assert count_tiles(DataConfig(source="pairs-csv", path=str(d / "pairs.csv"))) == 3


def test_pairs_csv_unreadable_image_is_skipped_once(tmp_path):
    d = pairs_folder(tmp_path)
    (d / "pairs.csv").write_text("image_a,image_b,label\nimg/a.png,img/missing.png,0\nimg/missing.png,img/b.png,0\n"
                                 "img/c.png,img/d.png,1\nimg/e.png,img/f.png,1\n")
    ds, skipped = build(tmp_path, "pairs-csv", d / "pairs.csv", variants=0)
    assert len(skipped) == 1 and "missing.png" in skipped[0][1]
    assert ds.info["groups"] == 5
    assert sorted(Path(t).name for t in ds.manifest[ds.manifest.group == 0]["tile_id"]) == ["a.png", "b.png"]


def test_pairs_csv_without_label_column_is_one_line_error(tmp_path):
    d = pairs_folder(tmp_path)
    (d / "pairs.csv").write_text("image_a,image_b\nimg/a.png,img/b.png\n")
    with pytest.raises(SiameseError) as e:
        build(tmp_path, "pairs-csv", d / "pairs.csv")
    msg = str(e.value)
    assert "\n" not in msg and "pairs.csv" in msg and "'label'" in msg and "image_a,image_b,label" in msg


def test_pairs_csv_same_seed_same_dataset(tmp_path):
    d = pairs_folder(tmp_path)
    (d / "p.csv").write_text("image_a,image_b,label\nimg/a.png,img/b.png,0\nimg/c.png,img/d.png,0\n"
                             "img/e.png,img/f.png,1\n")
    one, _ = build(tmp_path, "pairs-csv", d / "p.csv", name="one", variants=2, seed=1)
    two, _ = build(tmp_path, "pairs-csv", d / "p.csv", name="two", variants=2, seed=1)
    assert np.array_equal(one.images, two.images) and one.manifest.equals(two.manifest)
    assert list(one.groups) == [0] * 6 + [1] * 6 + [2] * 3 + [3] * 3


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------

def run_cli(*args, ws):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "siamese_core", "--workspace", str(ws), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_cli_prepare_ab_end_to_end(tmp_path):
    d = ab_folder(tmp_path / "cd", {f"p{i}": (noise(i), noise(20 + i)) for i in range(3)})
    put(d / "A" / "lonely.png", noise(99))
    ws = tmp_path / "ws"
    r = run_cli("prepare", "--source", "ab", "--path", d, "--name", "cd", "--window", 32, "--stride", 32,
                "--size", 24, "--variants", 1, ws=ws)
    assert r.returncode == 0, r.stderr
    assert "dataset cd: 48 images from 12 places/windows" in r.stdout and "1 skipped" in r.stdout
    assert "only in A/" in r.stderr
    from siamese_core.data.store import open_dataset
    ds = open_dataset("cd", ws)
    assert ds.images.shape == (48, 24, 24, 3)
    assert ds.config.window == 32 and ds.config.source == "ab"
    assert set(ds.manifest.groupby("group")["view"].nunique()) == {2}

    r = run_cli("prepare", "--source", "ab", "--path", d / "A", "--name", "bad", ws=ws)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and "A/ and B/" in lines[0]

    r = run_cli("prepare", "--source", "folder", "--path", d / "A", "--name", "bad", "--window", 32, ws=ws)
    assert r.returncode == 2 and "only to --source ab" in r.stderr
