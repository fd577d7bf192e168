"""Compare: upload two tiles and get the run's score and verdict, with the tiles as the model sees them."""

import streamlit as st

from app_pages import _ui
from siamese_core import dashboard as dash
from siamese_core.errors import SiameseError
from siamese_core.images import IMAGE_EXTENSIONS
from siamese_core.runs import read_threshold

TYPES = [e.lstrip(".") for e in IMAGE_EXTENSIONS]
MAX_MB = 50
IMG_W = 320

st.title("Compare two tiles")
rid, run_dir, cfg = _ui.require_finished_run()
try:
    threshold = read_threshold(run_dir)  # read fresh: the Threshold page may have saved a new one
except (OSError, ValueError, KeyError) as e:
    _ui.error(SiameseError(f"run {rid!r} has no readable threshold ({type(e).__name__}); re-run its evaluation"))
    st.stop()
st.markdown(f"Run **{rid}** ({cfg.model.preset} preset, trained on `{cfg.dataset}`, {cfg.model.size} px tiles). "
            f"Decision threshold **{threshold:.4f}** — change it on **Threshold**.")
_ui.score_note(cfg.model.preset, threshold)


def _read(upload):
    """Bytes of an upload, or a one-line error for an empty or oversized file."""
    data = upload.getvalue()
    if len(data) > MAX_MB * 1024 * 1024:
        raise SiameseError(f"{upload.name}: file is {len(data) / 1e6:.0f} MB, over the {MAX_MB} MB upload limit")
    return data


def _load_scorer():
    try:
        return _ui.scorer(rid)
    except SiameseError as e:
        _ui.error(e)
        st.stop()


cols = st.columns(2)
tiles = {}
for side, col in zip("ab", cols):
    with col:
        up = st.file_uploader(f"Tile {side.upper()}", type=TYPES, key=f"cmp_upload_{side}",
                              max_upload_size=MAX_MB, help="PNG, JPEG, TIFF, BMP or WebP; it is centre-cropped to "
                                                           "a square and resized like the training tiles.")
        if up is None:
            continue
        scorer = _load_scorer()
        try:
            tile = scorer.load(_read(up), up.name)
        except SiameseError as e:
            _ui.error(e)
            continue
        tiles[side] = tile
        st.image(tile, caption=f"{up.name} as the model sees it ({tile.shape[1]}×{tile.shape[0]} px)",
                 width=IMG_W)


def verdict(score: float) -> None:
    same = score <= threshold
    with st.container(border=True):
        v1, v2 = st.columns([1, 3], vertical_alignment="center")
        v1.metric("Score", f"{score:.4f}", help="lower = more alike")
        if same:
            v2.success("**Same place** (score ≤ threshold)", icon=":material/check_circle:")
        else:
            v2.warning("**Different places** (score > threshold)", icon=":material/cancel:")
        from siamese_core.inference import explain
        sentence = explain(score, threshold)
        st.markdown(sentence[:1].upper() + sentence[1:] + ".")


if len(tiles) == 2:
    scorer = _load_scorer()
    try:
        score = float(scorer.score_tiles(tiles["a"][None], tiles["b"][None])[0])
    except SiameseError as e:
        _ui.error(e)
    else:
        verdict(score)
elif not tiles:
    st.info("Upload two tiles to compare them.", icon=":material/upload:")

with st.expander("No tiles at hand? Compare two images of the run's dataset"):
    try:
        ds = _ui.dataset(cfg.dataset)
    except SiameseError as e:
        _ui.error(e)
    else:
        n = len(ds)
        x1, x2, x3 = st.columns([1, 1, 1], vertical_alignment="bottom")
        ia = x1.number_input("Image index A", 0, n - 1, 0, key="cmp_idx_a")
        ib = x2.number_input("Image index B", 0, n - 1, min(1, n - 1), key="cmp_idx_b",
                             help="Images of the same group (e.g. 0, 1, 2) show the same place.")
        if x3.button("Compare these", key="cmp_idx_go"):
            scorer = _load_scorer()
            imgs = _ui.tiles(ds, [ia, ib])
            ta, tb = imgs[int(ia)], imgs[int(ib)]
            if ta.shape[0] != scorer.size:
                from siamese_core.images import to_tile
                ta, tb = to_tile(ta, scorer.size), to_tile(tb, scorer.size)
            g = ds.groups
            y1, y2 = st.columns(2)
            y1.image(ta, caption=f"#{int(ia)} · group {int(g[ia])}", width=IMG_W)
            y2.image(tb, caption=f"#{int(ib)} · group {int(g[ib])}", width=IMG_W)
            st.caption("Truth: " + ("same place" if g[ia] == g[ib] else "different places"))
            verdict(float(scorer.score_tiles(ta[None], tb[None])[0]))
