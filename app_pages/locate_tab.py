"""The Locate tab of the Search page: where in a large scene does this tile lie?

Why this file exists: the Search page's second tab, kept out of ``search.py`` so that each file lays out one screen.
Pick a scene (a path on the server, or an upload) and one tile; the scene's index (windows and keypoints) is built once (with a
progress bar) and cached on disk by :mod:`siamese_core.scale.scene_index` (an uploaded scene is kept on disk by
:func:`~siamese_core.data.uploads.keep_upload`, so it too is read window by window); the answer is drawn on the scene's thumbnail
(:func:`app_pages.figures.locate_figure`) with the fused score. "Raster bands" (as ``locate --bands`` takes them)
chooses the bands the scene, its thumbnail and the tile are read with. TensorFlow is loaded only once both are given.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app_pages import figures, ui
from siamese_core.core.errors import SiameseError
from siamese_core.data.uploads import keep_upload

THUMB = 900
MAX_MB = 200


@st.cache_data(max_entries=4, show_spinner="Reading the scene's thumbnail…")
def _thumb(path: str, stamp: float, bands=None):
    from siamese_core.data.rasters import read_raster, stretch_limits
    return read_raster(path, bands=bands, out_side=THUMB, limits=stretch_limits(path, bands=bands)).image


def show(rid: str) -> None:
    st.markdown("Where in a large scene (GeoTIFF, PNG, JPEG; up to 20,000 × 20,000 px) does a tile lie, taken on "
                "another date, at another resolution, turned by any angle? The scene's windows are embedded once "
                "into an index (cached); the best hits get the keypoint check and the run's fused verdict.")
    c1, c2 = st.columns(2)
    with c1:
        path = st.text_input("Scene: a path on this server", key="loc_scene_path")
        up = st.file_uploader("…or upload a scene", type=["tif", "tiff", "png", "jpg", "jpeg"], key="loc_scene_upload",
                              max_upload_size=MAX_MB)
    with c2:
        tile_path = st.text_input("Tile: a path on this server", key="loc_tile_path")
        tile_up = st.file_uploader("…or upload the tile to locate", type=["tif", "tiff", "png", "jpg", "jpeg"],
                                   key="loc_tile")
    bands = ui.bands_field("loc_bands")
    if not (path.strip() or up) or not (tile_path.strip() or tile_up):
        st.caption("Give a scene and a tile.")
        return
    from siamese_core.scale.locate import locate_tile, read_tile
    from siamese_core.scale.scene_index import scene_index
    try:
        scene = (keep_upload(up.getvalue(), up.name, ui.workspace() / "scene-uploads", MAX_MB * 2**20)
                 if up is not None else Path(path.strip()).expanduser())
        if not scene.is_file():
            raise SiameseError(f"scene {scene}: no such file; give the path of a GeoTIFF, PNG or JPEG on this server")
        if tile_up is not None:
            tile_name = tile_up.name
            tile = read_tile(tile_up.getvalue(), name=tile_name, bands=bands)
        else:
            tile_name = Path(tile_path.strip()).name
            tile = read_tile(Path(tile_path.strip()).expanduser(), bands=bands)
        scorer = ui.require_scorer(rid)
        bar = st.progress(0.0, text="Indexing the scene (windows' embeddings, then keypoints)…")
        index = scene_index(scorer, scene, ui.workspace(),
                            progress=lambda d, t: bar.progress(d / max(1, t), text=f"Indexing the scene {d:,}/{t:,}"),
                            bands=bands)
        bar.empty()
        with st.spinner("Locating the tile (keypoint votes, then the best hits, checked by keypoints)…"):
            loc = locate_tile(index, scorer, tile, tile_name)
    except SiameseError as e:
        ui.error(e)
        return
    thumb = _thumb(str(index.scene), index.scene.stat().st_mtime, bands)
    if loc.found:
        cx, cy = loc.centre
        st.success(f"Found: centre ({cx:.0f}, {cy:.0f}) px of the scene, score {loc.score:.4f} "
                   f"(threshold {scorer.threshold:.4f}); {loc.evidence}", icon=":material/check_circle:")
        if loc.polygon_crs:
            st.caption("Corners in the scene's CRS " + f"({index.info.crs}): " +
                       "; ".join(f"({x:.2f}, {y:.2f})" for x, y in loc.polygon_crs))
    else:
        s = "" if loc.score is None else f" (best score {loc.score:.4f}, threshold {scorer.threshold:.4f})"
        st.warning(f"Not found in this scene{s}.", icon=":material/cancel:")
    st.caption(f"{index.reason}; {loc.checked} hit(s) checked in {loc.seconds:.2f} s.")
    st.plotly_chart(figures.locate_figure(thumb, loc.polygon, index.info.width / thumb.shape[1]), key="loc_figure")
    st.image(tile, caption=f"Tile: {tile_name}", width=256)
