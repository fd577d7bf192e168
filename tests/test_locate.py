"""Locate tiles in a scene (siamese_core.scale.locate, the locate command, the Search page's Locate tab) on a
synthetic 1000 px GeoTIFF: turned and re-lit crops are placed within 8 px, their CRS polygon is the pixel polygon
through the scene's transform, a crop of another scene is not found, the window index is reused until the scene
file changes, and the CLI prints one JSON list in the order given and one-line errors.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import cli

SIDE = 1000
ORIGIN, RES = (500000.0, 4000000.0), 0.5  # UTM 33N, 0.5 m pixels


def mosaic(seed: int, n: int = 4) -> np.ndarray:
    from siamese_core.data.sources.synthetic import synthetic_tile
    s = SIDE // n
    return np.concatenate([np.concatenate([synthetic_tile(i * n + j, s, seed=seed) for j in range(n)], 1)
                           for i in range(n)], 0)


def write_geotiff(path: Path, img: np.ndarray) -> None:
    import rasterio
    from affine import Affine
    with rasterio.open(path, "w", driver="GTiff", width=img.shape[1], height=img.shape[0], count=3, dtype="uint8",
                       crs="EPSG:32633", transform=Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1]), tiled=True, blockxsize=256,
                       blockysize=256) as d:
        d.write(img.transpose(2, 0, 1))


def crop(src: np.ndarray, cx: int, cy: int, angle: float, bright: float = 1.0, side: int = 256) -> np.ndarray:
    """The ``side`` px square centred on (cx, cy) of ``src`` turned by ``angle``° (the truth: its centre)."""
    big = int(side * 1.5)
    r = src[cy - big // 2:cy - big // 2 + big, cx - big // 2:cx - big // 2 + big]
    r = cv2.warpAffine(r, cv2.getRotationMatrix2D((big / 2, big / 2), angle, 1.0), (big, big))
    c = r[big // 2 - side // 2:big // 2 + side // 2, big // 2 - side // 2:big // 2 + side // 2]
    return np.clip(c.astype(np.float64) * bright, 0, 255).astype(np.uint8)


def save_png(path: Path, img: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return path


CASES = [(300, 400, 0.0, 1.0), (600, 500, 37.0, 1.3), (450, 700, 90.0, 0.7)]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("locate")
    img = mosaic(3)
    write_geotiff(d / "scene.tif", img)
    tiles = [save_png(d / f"tile{i}.png", crop(img, *c)) for i, c in enumerate(CASES)]
    other = save_png(d / "other.png", crop(mosaic(9), 500, 500, 20.0))
    return {"dir": d, "path": d / "scene.tif", "img": img, "tiles": tiles, "other": other, "ws": d / "ws"}


@pytest.fixture(scope="module")
def scorer(scene):
    from siamese_core.judge.inference import Scorer
    return Scorer.from_run(None, scene["ws"])


def test_turned_relit_tiles_are_placed_within_8_px(scene, scorer):
    from siamese_core.scale.locate import locate_tile, read_tile, to_crs
    from siamese_core.scale.scene_index import scene_index
    idx = scene_index(scorer, scene["path"], scene["ws"])
    assert idx.info.crs == "EPSG:32633" and len(idx.windows) == idx.meta["count"] > 0
    for path, (cx, cy, _, _) in zip(scene["tiles"], CASES):
        loc = locate_tile(idx, scorer, read_tile(path), path.name)
        assert loc.found, (path.name, loc)
        assert len(loc.polygon) == 4
        assert np.hypot(loc.centre[0] - cx, loc.centre[1] - cy) <= 8, (path.name, loc.centre)
        assert loc.score <= scorer.threshold
        # the CRS polygon: the pixel corners through the GeoTIFF's transform (x east, y north)
        exp = [[ORIGIN[0] + RES * x, ORIGIN[1] - RES * y] for x, y in loc.polygon]
        assert np.allclose(loc.polygon_crs, exp) and np.allclose(to_crs(loc.polygon, idx.info.transform), exp)


def test_a_tile_of_another_scene_is_not_found(scene, scorer):
    from siamese_core.scale.locate import locate_tile, read_tile
    from siamese_core.scale.scene_index import scene_index
    idx = scene_index(scorer, scene["path"], scene["ws"])
    loc = locate_tile(idx, scorer, read_tile(scene["other"]), "other")
    assert not loc.found and loc.polygon == [] and loc.polygon_crs is None
    assert loc.score is None or loc.score > scorer.threshold
    assert loc.as_dict(crs=True)["polygon_crs"] == []


def test_index_is_reused_then_rebuilt_when_the_scene_changes(scene, scorer, tmp_path):
    from siamese_core.scale.scene_index import scene_index
    p = tmp_path / "scene.tif"
    shutil.copy(scene["path"], p)
    ws = tmp_path / "ws"
    calls = []
    first = scene_index(scorer, p, ws, progress=lambda d, t: calls.append((d, t)))
    meta = first.meta
    assert first.status == "built" and calls and calls[-1][0] == calls[-1][1] == meta["count"] + meta["blocks"]
    assert len(first.keypoints) == first.keypoint_index.ntotal == meta["keypoint_count"] > 0
    assert first.path.parent.parent == ws / "scene-indexes"
    stamp = (first.path / "index.faiss").stat().st_mtime_ns
    again = scene_index(scorer, p, ws, progress=lambda d, t: pytest.fail("no rebuild expected"))
    assert again.status == "reused" and (again.path / "index.faiss").stat().st_mtime_ns == stamp
    write_geotiff(p, scene["img"][:, ::-1].copy())  # the scene file changes (a new mtime and content)
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = scene_index(scorer, p, ws)
    assert third.status == "rebuilt" and "scene file changed" in third.reason


def test_a_full_disk_while_indexing_is_one_line_and_keeps_the_previous_index(scene, scorer, tmp_path, monkeypatch):
    import errno

    from siamese_core.core.errors import SiameseError
    from siamese_core.scale import scene_index as S
    p = tmp_path / "scene.tif"
    shutil.copy(scene["path"], p)
    ws = tmp_path / "ws"
    first = S.scene_index(scorer, p, ws)
    kept = sorted(f.name for f in first.path.iterdir())
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the next call must rebuild

    def disk_full(tmp, *args, **kwargs):  # a write deep in the build fails as a full disk does
        (tmp / "part").write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(S, "_build_into", disk_full)
    with pytest.raises(SiameseError) as e:
        S.scene_index(scorer, p, ws)
    msg = str(e.value)
    assert "\n" not in msg and "No space left on device" in msg and "previous one" in msg and "scene index" in msg
    assert sorted(f.name for f in first.path.iterdir()) == kept  # the old index is whole
    assert not [f for f in first.path.parent.iterdir() if f.name.startswith(".tmp")]  # no temporary folder left


def test_index_is_rebuilt_when_the_keypoint_part_changes(scene, scorer, tmp_path, monkeypatch):
    """The keypoint part is in the cache key: other keypoint parameters, or an index of the format before it
    (FORMAT 1: windows only), are rebuilt."""
    from siamese_core.core.files import read_json, write_json_atomic
    from siamese_core.scale import scene_index as S
    p = tmp_path / "scene.tif"
    shutil.copy(scene["path"], p)
    ws = tmp_path / "ws"
    first = S.scene_index(scorer, p, ws)
    monkeypatch.setattr(S, "KP_PER_BLOCK", S.KP_PER_BLOCK // 2)
    second = S.scene_index(scorer, p, ws)
    assert second.status == "rebuilt" and "other window parameters" in second.reason
    assert second.meta["keypoints"]["per_block"] == S.KP_PER_BLOCK
    assert second.meta["keypoint_count"] < first.meta["keypoint_count"]
    old = read_json(second.path / "meta.json")
    for fmt in (1, 2):  # 2: the keypoint index was always flat
        write_json_atomic(second.path / "meta.json", {**old, "format": fmt})
        assert S.scene_index(scorer, p, ws).status == "rebuilt"
    assert second.meta["keypoint_index"] == {"kind": "flat"}  # a small scene's keypoints: the exhaustive index


def test_big_scene_keypoints_are_partitioned_and_still_place_a_tile(scene, scorer, tmp_path, monkeypatch):
    """Above KP_IVF_MIN keypoints the index is partitioned (IVF, nprobe cells a query; set again when loaded), and the
    keypoint votes through it still place a turned tile of another date. The switch forced low on the small scene;
    fails if the big-scene path is removed."""
    from siamese_core.scale import locate
    from siamese_core.scale import scene_index as S
    p = tmp_path / "scene.tif"
    shutil.copy(scene["path"], p)
    ws = tmp_path / "ws"
    monkeypatch.setattr(S, "KP_IVF_MIN", 500)
    idx = S.scene_index(scorer, p, ws)
    kind = idx.meta["keypoint_index"]
    assert kind["kind"] == "ivf" and idx.meta["keypoints"]["ivf_min"] == 500 and idx.meta["keypoint_count"] > 500
    assert idx.keypoint_index.ntotal == len(idx.keypoints) and idx.keypoint_index.nlist == kind["nlist"] > 1
    cx, cy = 520, 430
    tile = crop(another_date(scene["img"]), cx, cy, 45.0)
    for got in (idx, S.scene_index(scorer, p, ws)):  # as built, then loaded from disk
        assert got.keypoint_index.nprobe == min(S.KP_NPROBE, kind["nlist"])
        loc = locate.locate_tile(got, scorer, tile, "turned", check=0)
        assert loc.found and loc.source == "keypoint votes", loc
        assert np.hypot(loc.centre[0] - cx, loc.centre[1] - cy) <= 8, loc.centre
    assert got.status == "reused"


def another_date(img: np.ndarray) -> np.ndarray:
    """The same ground on "another date": other light (gamma, gain, a colour cast), a little blur and noise."""
    rng = np.random.default_rng(5)
    x = 255.0 * (img.astype(np.float64) / 255.0) ** 0.7 * np.array([0.8, 0.9, 1.05])
    x = cv2.GaussianBlur(x, (0, 0), 0.8) + rng.normal(0, 4, x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


def test_keypoint_votes_place_a_turned_tile_of_another_date_alone(scene, scorer):
    """The keypoint votes alone (no embedding hit checked) place a crop turned by 45° on another "date" within
    8 px; with neither pass there is nothing to check. Fails if the voting pass is removed."""
    from siamese_core.scale.locate import locate_tile, vote_regions
    from siamese_core.scale.scene_index import scene_index
    idx = scene_index(scorer, scene["path"], scene["ws"])
    cx, cy = 520, 430
    tile = crop(another_date(scene["img"]), cx, cy, 45.0)
    v = vote_regions(idx, tile)[0]
    assert np.hypot(v.x + v.side / 2 - cx, v.y + v.side / 2 - cy) <= 16 and 0.8 * 256 <= v.side <= 1.25 * 256
    assert v.transform is not None and v.inliers >= 8  # the matches voting for it agree on a similarity:
    c = v.transform @ np.float64([127.5, 127.5, 1.0])  # the tile's centre through it is the truth's
    assert np.hypot(c[0] - cx, c[1] - cy) <= 8
    loc = locate_tile(idx, scorer, tile, "turned", check=0)
    assert loc.found and loc.source == "keypoint votes" and loc.checked >= 1, loc
    assert np.hypot(loc.centre[0] - cx, loc.centre[1] - cy) <= 8, loc.centre
    none = locate_tile(idx, scorer, tile, "turned", check=0, votes=0)
    assert not none.found and none.checked == 0


def test_cli_json_one_list_in_order_and_geojson(scene, capsys):
    out = scene["dir"] / "found.geojson"
    tiles = [scene["tiles"][1], scene["other"], scene["tiles"][0]]
    assert cli("--workspace", scene["ws"], "locate", "--scene", scene["path"], *tiles, "--json",
               "--geojson", out) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["tile"] for r in res] == [str(t) for t in tiles]
    assert [r["found"] for r in res] == [True, False, True]
    for r in res:
        assert set(r) == {"tile", "found", "polygon", "score", "polygon_crs"}
        assert len(r["polygon"]) == (4 if r["found"] else 0) and len(r["polygon_crs"]) == len(r["polygon"])
    c = np.mean(res[0]["polygon"], axis=0)
    assert np.hypot(c[0] - CASES[1][0], c[1] - CASES[1][1]) <= 8
    gj = json.loads(out.read_text())
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == 2
    f = gj["features"][0]
    assert f["properties"]["tile"] == str(tiles[0]) and "EPSG:32633" in f["properties"]["coordinates"]
    ring = f["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and np.allclose(ring[:4], res[0]["polygon_crs"])
    # plain output: one line per tile
    assert cli("--workspace", scene["ws"], "locate", "--scene", scene["path"], *tiles) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and "found" in lines[0] and "not found" in lines[1]


def test_cli_errors_are_one_line_exit_2(scene, capsys, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert cli("--workspace", scene["ws"], "locate", "--scene", tmp_path / "missing.tif", scene["tiles"][0]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.tif" in err[0] and "no such file" in err[0] and "--scene" in err[0]
    assert cli("--workspace", scene["ws"], "locate", "--scene", scene["path"], bad) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "bad.png" in err[0] and "not an image" in err[0]


def test_big_scenes_get_a_coarser_stride():
    from siamese_core.scale.scene_index import MAX_WINDOWS, SIDES, stride_for, windows_of
    assert [stride_for(s, 2000, 2000) for s in SIDES] == [s // 4 for s in SIDES]
    big = windows_of(20000, 20000)
    assert all(len(xs) * len(ys) <= MAX_WINDOWS for _, _, (xs, ys) in big)
    assert big[0][1] > 32  # the 128 px windows are spaced wider than a quarter side
    small = windows_of(100, 80)  # smaller than a window: one window of the whole (short) side
    assert len(small) == 1 and small[0][0] == 80
    for side, _, (xs, ys) in windows_of(1000, 700):
        assert xs[0] == 0 and xs[-1] == 1000 - side and ys[-1] == 700 - side


def test_search_page_locate_tab(scene, tmp_path, monkeypatch):
    """The Locate tab: a scene path and a tile path give the polygon on the thumbnail, found, with the score; a
    tile of another scene says not found."""
    from apptools import open_app, ok, texts, widget
    monkeypatch.setenv("SIAMESE_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    at = open_app("search", {"run": "pretrained"})
    assert "Give a scene and a tile." in texts(at)
    widget(at, "text_input", "loc_scene_path").set_value(str(scene["path"])).run()
    widget(at, "text_input", "loc_tile_path").set_value(str(scene["tiles"][1])).run()
    ok(at)
    assert not at.error, [e.value for e in at.error]
    [s] = [e.value for e in at.success if "Found" in e.value]
    assert "score" in s and "EPSG:32633" in texts(at)
    fig = [c for c in at.get("plotly_chart")]
    assert fig and '"the tile"' in fig[0].proto.spec  # the polygon is drawn on the thumbnail
    widget(at, "text_input", "loc_tile_path").set_value(str(scene["other"])).run()
    ok(at)
    assert any("Not found" in e.value for e in at.warning)
    widget(at, "text_input", "loc_scene_path").set_value(str(tmp_path / "nope.tif")).run()
    assert any("nope.tif" in e.value and "no such file" in e.value for e in at.error)


def test_an_uploaded_scene_is_kept_once_by_content_and_refused_over_the_limit(tmp_path):
    from siamese_core.data.uploads import UploadError, keep_upload
    first = keep_upload(b"scene bytes", "Scene.TIF", tmp_path / "up", max_bytes=100)
    assert first.suffix == ".tif" and first.read_bytes() == b"scene bytes"
    assert keep_upload(b"scene bytes", "other.tif", tmp_path / "up", max_bytes=100) == first  # same content, one file
    assert keep_upload(b"another scene", "s.tif", tmp_path / "up", max_bytes=100) != first
    with pytest.raises(UploadError, match=r"big\.tif: file is .* upload limit"):
        keep_upload(b"x" * 101, "big.tif", tmp_path / "up2", max_bytes=100)
    assert not (tmp_path / "up2").exists()
