"""Rasters with more than three bands on the pages, with Streamlit's AppTest: Compare, Batch and Search read every
uploaded raster through the bands typed in "Raster bands" (as ``--bands`` takes them), exactly as the command line
and the library do, and text that is not bands is one error line.

The tiles are real 4-band 16-bit GeoTIFFs written by rasterio, stored NIR, blue, green, red (so red, green, blue are
bands 4, 3, 2 and the file's first three bands are the wrong ones); the workspace is a copy of ``tiny_ws``.
"""

from __future__ import annotations

import csv
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streamlit.testing.v1 import AppTest  # noqa: E402

from apptools import ok, open_app, widget  # noqa: E402
from test_rasters import four_band, write_tif  # noqa: E402

RUN = "def1"
NBGR = [3, 2, 1, 0]  # stored NIR, blue, green, red


@pytest.fixture
def rasters(tmp_path) -> dict[str, bytes]:
    """a.tif, b.tif (a turned a quarter), c.tif (another place), pairs.csv: the files as bytes."""
    d = tmp_path / "rasters"
    d.mkdir()
    write_tif(d / "a.tif", four_band(256, 3)[NBGR])
    write_tif(d / "b.tif", np.rot90(four_band(256, 3)[NBGR], 1, axes=(1, 2)).copy())
    write_tif(d / "c.tif", four_band(256, 8)[NBGR])
    (d / "pairs.csv").write_text("image_a,image_b\na.tif,b.tif\na.tif,c.tif\n")
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def _batch(files: dict[str, bytes], bands: str) -> AppTest:
    at = open_app("batch", {"run": RUN})
    widget(at, "text_input", "batch_bands").set_value(bands)
    widget(at, "file_uploader", "batch_csv").set_value(("pairs.csv", files["pairs.csv"], "text/csv"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in ("a.tif", "b.tif", "c.tif"):
            zf.writestr(name, files[name])
    widget(at, "file_uploader", "batch_zip").set_value(("tiles.zip", buf.getvalue(), "application/zip"))
    at.run()
    if [b for b in at.button if b.key == "batch_go"]:  # text that is not bands stops the page before the button
        widget(at, "button", "batch_go").click()
        at.run()
    return at


def _distances(at: AppTest) -> list[float]:
    table = [d for d in at.dataframe if d.key == "batch_table"][0].value
    return [float(v) for v in table.distance]


def test_batch_reads_every_raster_through_the_bands_typed_as_score_pairs_does(app_ws, rasters, tmp_path):
    from siamese_core.judge.inference import Scorer, score_csv
    d = tmp_path / "rasters"
    score_csv(Scorer.from_run(RUN, app_ws), d / "pairs.csv", d / "out.csv", bands=(4, 3, 2))
    cli = [float(r["distance"]) for r in csv.DictReader(open(d / "out.csv"))]

    asked = _batch(rasters, "4,3,2")
    ok(asked)
    assert _distances(asked) == pytest.approx(cli, abs=1e-4)
    assert any("bands 4,3,2" in c.value for c in asked.caption)
    preset = _batch(rasters, "sentinel2")  # the preset names the same bands
    assert _distances(preset) == pytest.approx(cli, abs=1e-4)
    default = _batch(rasters, "")  # the file's first three bands: NIR, blue, green
    ok(default)
    assert _distances(default) != pytest.approx(cli, abs=1e-3)


def test_batch_refuses_text_that_is_not_bands_in_one_line(app_ws, rasters):
    at = _batch(rasters, "4,3")
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "'4,3'" in errors[0] and "\n" not in errors[0], errors
    assert not [d for d in at.dataframe if d.key == "batch_table"] and not [b for b in at.button if b.key == "batch_go"]
    assert "batch_result" not in at.session_state


def _compare(files: dict[str, bytes], bands: str) -> AppTest:
    at = open_app("compare", {"run": RUN})
    widget(at, "text_input", "cmp_bands").set_value(bands)
    widget(at, "file_uploader", "cmp_upload_a").set_value(("a.tif", files["a.tif"], "image/tiff"))
    widget(at, "file_uploader", "cmp_upload_b").set_value(("b.tif", files["b.tif"], "image/tiff"))
    at.run()
    return at


def _score(at: AppTest) -> float:
    return float([m for m in at.metric if m.label == "Score"][0].value)


def test_compare_reads_both_rasters_through_the_bands_typed(app_ws, rasters):
    from siamese_core.judge.inference import Scorer
    scorer = Scorer.from_run(RUN, app_ws)
    want = scorer.judge([tuple(scorer.prepare(rasters[n], n, bands=(4, 3, 2)) for n in ("a.tif", "b.tif"))])[0]
    asked = _compare(rasters, "4,3,2")
    ok(asked)
    assert _score(asked) == pytest.approx(want.score, abs=1e-3)
    default = _compare(rasters, "")
    ok(default)
    assert _score(default) != pytest.approx(want.score, abs=1e-3)
    bad = _compare(rasters, "0,1,2")
    errors = [e.value for e in bad.error]
    assert len(errors) == 1 and "'0,1,2'" in errors[0], errors
    assert not [m for m in bad.metric if m.label == "Score"]


def test_search_embeds_the_query_raster_through_the_bands_typed(app_ws, rasters):
    """The nearest images of the query read as 4,3,2 are at the distances of that query's embedding."""
    from siamese_core.judge.inference import Scorer
    from siamese_core.scale import search as srch

    def distances(bands: str) -> list[float]:
        at = open_app("search", {"run": RUN, "dataset": "tiny"})
        widget(at, "text_input", "search_bands").set_value(bands)
        widget(at, "file_uploader", "search_upload").set_value(("a.tif", rasters["a.tif"], "image/tiff"))
        at.run()
        ok(at)
        tables = [d for d in at.dataframe if d.key == "search_table"] or at.dataframe[:1]
        return [float(v) for v in tables[0].value.distance]

    scorer = Scorer.from_run(RUN, app_ws)
    query = scorer.prepare(rasters["a.tif"], "a.tif", bands=(4, 3, 2)).tile
    asked = distances("4,3,2")
    want = [h.distance for h in srch.search(srch.build_index(scorer, "tiny", app_ws), query, len(asked))[0]]
    assert asked == pytest.approx(want, abs=1e-3)
    assert distances("") != pytest.approx(asked, abs=1e-3)
