"""Compare: upload two tiles and get the run's score and verdict, the evidence behind it (the learned
distance and a geometric second opinion: keypoints that one rotation, scale and shift explain, drawn,
and tile B laid onto tile A), and the tiles as the model sees them.

The judgement comes from one library call (``Scorer.judge``); it is kept in the session per upload pair
(bytes hash + run + model and fusion file times), so moving the blend slider only redraws.
"""

import hashlib

import numpy as np
import streamlit as st

from app_pages import geometry_view as gv
from app_pages import ui
from app_pages import views as dash
from siamese_core.core.errors import SiameseError
from siamese_core.data.images import IMAGE_EXTENSIONS
from siamese_core.data.store import list_datasets

TYPES = [e.lstrip(".") for e in IMAGE_EXTENSIONS]
MAX_MB = 50
IMG_W = 320

st.title("Compare two tiles")
rid, run, cfg = ui.require_finished_run(scores=False)
try:
    threshold = run.threshold()  # read fresh: the Threshold page may have saved a new one
except SiameseError as e:
    ui.error(e)
    st.stop()
st.markdown(f"Run **{rid}** ({cfg.model.preset} preset, trained on `{cfg.dataset}`, {cfg.model.size} px tiles). "
            f"Decision threshold **{threshold:.4f}** — change it on **Threshold**.")
ui.score_note(cfg.model.preset, threshold, fused=run.has_fusion())


def _read(upload):
    """Bytes of an upload, or a one-line error for an empty or oversized file."""
    data = upload.getvalue()
    if len(data) > MAX_MB * 1024 * 1024:
        raise SiameseError(f"{upload.name}: file is {len(data) / 1e6:.0f} MB, over the {MAX_MB} MB upload limit")
    return data


def _stamp() -> tuple:
    """What a cached judgement depends on besides the tiles: workspace, run, model and fusion files."""
    return str(ui.workspace()), rid, dash.mtime(run.model_path), run.verdict_stamp()


CACHE_ENTRIES = 8


def _cached(key, make):
    """``make()`` once per key in this session (a few entries, oldest dropped first)."""
    cache = st.session_state.setdefault("_compare_cache", {})
    if key not in cache:
        value = make()
        cache[key] = value
        while len(cache) > CACHE_ENTRIES:
            cache.pop(next(iter(cache)))
    return cache[key]


def _prepare(data: bytes, name: str, bands=None):
    """(Prepared tile, its cache key) for uploaded bytes read through ``bands``; raises SiameseError for a bad
    file (or a band it lacks)."""
    key = ("prep", *_stamp(), hashlib.sha1(data).hexdigest(), bands)
    return _cached(key, lambda: ui.require_scorer(rid).prepare(data, name, bands=bands)), key


def _judge(pa, pb, key=None):
    """The run's Judgement of a prepared pair (cached under ``key`` when given)."""
    def make():
        return ui.require_scorer(rid).judge([(pa, pb)], threshold)[0]
    return _cached(("judge", *key), make) if key else make()


bands = ui.bands_field("cmp_bands")
cols = st.columns(2)
tiles = {}
for side, col in zip("ab", cols):
    with col:
        up = st.file_uploader(f"Tile {side.upper()}", type=TYPES, key=f"cmp_upload_{side}",
                              max_upload_size=MAX_MB, help="PNG, JPEG, TIFF (GeoTIFF, COG: any bands, 16-bit, "
                                                           "float), BMP or WebP; it is centre-cropped to a square and "
                                                           "resized like the training tiles.")
        if up is None:
            continue
        try:
            data = _read(up)
            prep, pkey = _prepare(data, up.name, bands)
        except SiameseError as e:
            ui.error(e)
            continue
        tiles[side] = (prep, pkey, data, up.name)
        tile = prep.tile
        st.image(tile, caption=f"{dash.md_escape(up.name)} as the model sees it ({tile.shape[1]}×{tile.shape[0]} px)",
                 width=IMG_W)


def verdict(j) -> None:
    """The verdict on a Judgement ``j``: same place, different places, or cannot tell (with the reason)."""
    with st.container(border=True):
        v1, v2 = st.columns([1, 3], vertical_alignment="center")
        v1.metric("Score", f"{j.score:.4f}",
                  help=("1 − P(same place), fused from the learned distance and the keypoint evidence; "
                        if j.contributions else "the model's own output; ") + "lower = more alike")
        if j.verdict == "uncertain":
            v2.info(f"**Cannot tell** (score within the uncertain band around the threshold): {j.reason}",
                    icon=":material/help:")
        elif j.verdict == "same":
            v2.success("**Same place** (score ≤ threshold)", icon=":material/check_circle:")
        else:
            v2.warning("**Different places** (score > threshold)", icon=":material/cancel:")
        from siamese_core.judge.inference import explain
        sentence = explain(j.score, threshold, ui.require_scorer(rid).band)
        st.markdown(sentence[:1].upper() + sentence[1:] + ".")


def familiarity_note(pa, pb) -> None:
    """One warning line under the verdict for each tile unlike the run's training tiles (nothing when the run
    has no reference.npz)."""
    try:
        fam = ui.require_scorer(rid).familiarity([pa, pb]) or []
    except (SiameseError, ValueError) as e:
        st.caption(f"Could not compare the tiles with the training tiles: {e}")
        return
    for side, f in zip("AB", fam):
        if f.unfamiliar:
            st.warning(f"Tile {side} is unlike anything this model was trained on: {f.reason}; treat the verdict "
                       f"with caution.", icon=":material/help:")


def evidence(j, pa, pb, interactive: bool = True) -> None:
    """The evidence behind a judgement: one sentence each, what pushed the verdict, the matches drawn
    and (``interactive``) tile B warped onto tile A with a blend slider."""
    geo = j.geo
    st.subheader("The evidence")
    st.markdown(f"**Keypoints:** {geo.sentence()}.  \n"
                f"**Learned distance:** {j.distance:.4f} (the network's own output; lower = more alike)")
    if j.contributions:
        st.markdown("**What pushed the verdict** (log-odds: + toward *same place*, − toward *different places*)")
        st.dataframe(gv.contribution_rows(j.contributions), hide_index=True, width="content",
                     column_config={"log-odds push": st.column_config.NumberColumn(format="%+.2f")})
    else:
        st.caption("This run has no fusion (it was not calibrated): its score is the learned distance alone and the "
                   "keypoints are a second opinion beside it. Fit one on labelled pairs with `calibrate`.")
    if not geo.found:
        st.info(f"No matches to draw and nothing to align: {geo.reason or 'no transform found'}.",
                icon=":material/scatter_plot:")
        return
    m1, m2 = st.columns(2)
    with m1:
        drawn = len(gv.pick_lines(len(geo.points_a)))
        st.image(gv.matches_image(pa.image, pb.image, geo.points_a, geo.points_b,
                                  pa.features.factor, pb.features.factor),
                 caption=f"Matches: tile A (left), tile B (right); {drawn} of {geo.inliers} inliers drawn",
                 width="stretch")
        st.image(gv.footprint_image(pa.image, geo.polygon, pa.features.factor), width=IMG_W,
                 caption=f"Where tile B lies on tile A: it covers {geo.overlap:.0%} of A's ground (outlined)")
    if not interactive:
        return
    from siamese_core.judge.geometry import warp_onto
    with m2:
        alpha = st.slider("Blend: 0 = tile A, 1 = tile B warped onto A", 0.0, 1.0, 0.5, 0.05, key="compare_blend")
        warped = warp_onto(pa.image, pb.image, geo, working=True)
        covered = warp_onto(pa.image, np.full_like(pb.image, 255), geo, working=True)
        st.image(gv.blend(pa.image, warped, alpha, covered), width=IMG_W,
                 caption="Tile B laid onto tile A by the transform found (tile A alone where B does not reach)")


def georeferencing(a, b, key) -> None:
    """A short section when both uploads are georeferenced rasters: where the imagery puts tile B against where
    its metadata does (B reprojected into A's CRS first when they differ)."""
    from siamese_core.judge.georef import is_georeferenced, judge_georeferenced
    try:
        if not (is_georeferenced(a[2], a[3]) and is_georeferenced(b[2], b[3])):
            return
        _, g = _cached(("georef", *key), lambda: judge_georeferenced(ui.require_scorer(rid), a[2], b[2], a[3], b[3],
                                                                     bands=bands, threshold=threshold))
    except SiameseError as e:
        ui.error(e)
        return
    st.subheader("Georeferencing")
    st.markdown(f"**{g['sentence'][:1].upper() + g['sentence'][1:]}.**")
    c1, c2 = st.columns(2)
    c1.metric("Offset", "–" if g["offset_m"] is None else f"{g['offset_m']:.1f} m",
              help="distance between B's centre placed by the imagery (keypoints onto A) and by B's own geotransform")
    c2.metric("CRS", g["crs"], help="tile A's; tile B was reprojected into it" if g["reprojected"] else "both tiles'")


if len(tiles) == 2:
    (pa, ka, *_), (pb, kb, *_) = tiles["a"], tiles["b"]
    try:
        judgement = _judge(pa, pb, (ka, kb))
    except SiameseError as e:
        ui.error(e)
    else:
        verdict(judgement)
        familiarity_note(pa, pb)
        georeferencing(tiles["a"], tiles["b"], (ka, kb))
        evidence(judgement, pa, pb)
elif not tiles:
    st.info("Upload two tiles to compare them.", icon=":material/upload:")

# the run's own dataset, else the one active in the sidebar (the bundled model's training data is not here)
_pick_ds = cfg.dataset if cfg.dataset in list_datasets(ui.workspace()) else ui.active_dataset()
with st.expander(f"No tiles at hand? Compare two images of dataset `{_pick_ds}`" if _pick_ds
                 else "No tiles at hand? Make a dataset on Home / data, then compare two of its images here"):
    try:
        ds = ui.dataset(_pick_ds) if _pick_ds else None
    except SiameseError as e:
        ui.error(e)
        ds = None
    if ds is not None:
        n = len(ds)
        x1, x2, x3 = st.columns([1, 1, 1], vertical_alignment="bottom")
        ia = x1.number_input("Image index A", 0, n - 1, 0, key="cmp_idx_a")
        ib = x2.number_input("Image index B", 0, n - 1, min(1, n - 1), key="cmp_idx_b",
                             help="Images of the same group (e.g. 0, 1, 2) show the same place.")
        if x3.button("Compare these", key="cmp_idx_go"):
            scorer = ui.require_scorer(rid)
            imgs = ui.tiles(ds, [ia, ib])
            pa, pb = scorer.prepare(np.asarray(imgs[int(ia)])), scorer.prepare(np.asarray(imgs[int(ib)]))
            g = ds.groups
            y1, y2 = st.columns(2)
            y1.image(pa.tile, caption=f"#{int(ia)} · group {int(g[ia])}", width=IMG_W)
            y2.image(pb.tile, caption=f"#{int(ib)} · group {int(g[ib])}", width=IMG_W)
            st.caption("Truth: " + ("same place" if g[ia] == g[ib] else "different places"))
            j = _judge(pa, pb)
            verdict(j)
            familiarity_note(pa, pb)
            evidence(j, pa, pb, interactive=False)
