"""Locate in a scene with more than three bands: the bands asked for (library ``bands=``, ``locate --bands``, the
Locate tab's "Raster bands" field) are the ones the scene's windows, stretch and keypoints and the raster tiles are
read with; the index records them and is rebuilt when they change.

The scene is a 6-band GeoTIFF whose bands 1-3 show one place and bands 4-6 another: a tile of the second place is
found only when the scene is read through bands 4,5,6.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import cli
from test_locate import ORIGIN, RES, crop, mosaic, save_png

CX, CY, ANGLE = 600, 500, 37.0
HIDDEN = (4, 5, 6)


def write_six_band(path: Path, first: np.ndarray, second: np.ndarray) -> None:
    import rasterio
    from affine import Affine
    data = np.concatenate([first, second], 2).transpose(2, 0, 1)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=6, dtype="uint8",
                       crs="EPSG:32633", transform=Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1]), tiled=True,
                       blockxsize=256, blockysize=256) as d:
        d.write(data)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("locate_bands")
    hidden = mosaic(3)
    write_six_band(d / "scene.tif", mosaic(9), hidden)
    tile = save_png(d / "tile.png", crop(hidden, CX, CY, ANGLE))
    return {"dir": d, "path": d / "scene.tif", "tile": tile, "ws": d / "ws"}


@pytest.fixture(scope="module")
def scorer(scene):
    from siamese_core.judge.inference import Scorer
    return Scorer.from_run(None, scene["ws"])


def _near(loc) -> bool:
    return loc.found and np.hypot(loc.centre[0] - CX, loc.centre[1] - CY) <= 8


def test_the_tile_is_found_only_through_the_bands_asked_for(scene, scorer):
    from siamese_core.scale.locate import locate
    idx, [loc] = locate(scene["path"], [scene["tile"]], scorer, scene["ws"], bands=HIDDEN)
    assert idx.bands == HIDDEN and idx.meta["bands"] == list(HIDDEN)
    assert _near(loc), loc
    idx, [loc] = locate(scene["path"], [scene["tile"]], scorer, scene["ws"])  # the file's first three bands
    assert idx.bands is None and "bands" not in idx.meta
    assert not _near(loc), loc


def test_the_index_is_rebuilt_when_the_bands_change_and_reused_when_they_do_not(scene, scorer, tmp_path):
    from siamese_core.scale.scene_index import scene_index
    ws = tmp_path / "ws"
    first = scene_index(scorer, scene["path"], ws)
    assert first.status == "built"
    second = scene_index(scorer, scene["path"], ws, bands=HIDDEN)
    assert second.status == "rebuilt" and "other raster bands" in second.reason and "4,5,6" in second.reason
    again = scene_index(scorer, scene["path"], ws, bands=list(HIDDEN),
                        progress=lambda d, t: pytest.fail("no rebuild expected"))
    assert again.status == "reused" and again.bands == HIDDEN
    back = scene_index(scorer, scene["path"], ws)
    assert back.status == "rebuilt" and "the file's own now" in back.reason


def test_cli_bands_find_the_tile_and_bad_bands_are_one_line(scene, capsys):
    assert cli("--workspace", scene["ws"], "locate", "--scene", scene["path"], scene["tile"], "--bands", "4,5,6",
               "--json") == 0
    [r] = json.loads(capsys.readouterr().out)
    assert r["found"] and np.hypot(*(np.mean(r["polygon"], axis=0) - (CX, CY))) <= 8, r
    for bad, why in (("7", "band 7 requested, but the file has 6 band(s)"), ("red", "red")):
        assert cli("--workspace", scene["ws"], "locate", "--scene", scene["path"], scene["tile"], "--bands", bad) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
        assert len(err) == 1 and why in err[0], err


def test_locate_tab_reads_the_scene_through_the_bands_typed(scene, tmp_path, monkeypatch):
    from apptools import ok, open_app, widget
    monkeypatch.setenv("SIAMESE_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    at = open_app("search", {"run": "pretrained"})
    widget(at, "text_input", "loc_bands").set_value("4,5,6")
    widget(at, "text_input", "loc_scene_path").set_value(str(scene["path"]))
    widget(at, "text_input", "loc_tile_path").set_value(str(scene["tile"])).run()
    ok(at)
    assert not at.error, [e.value for e in at.error]
    assert [e.value for e in at.success if "Found" in e.value]
    widget(at, "text_input", "loc_bands").set_value("4,5,nine").run()
    assert len(at.error) == 1 and "nine" in at.error[0].value
