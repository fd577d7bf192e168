"""Pairs: how labelled pairs are drawn from the active dataset, their counts, and a preview."""

import numpy as np
import streamlit as st

from app_pages import figures, ui
from app_pages import views as dash
from siamese_core.core.config import PairsConfig, preset_defaults
from siamese_core.core.errors import SiameseError

st.title("Pairs")
st.caption("Training sees pairs of images, labelled **same place** (0: an image and a variant of the same tile) "
           "or **different places** (1: images of two different tiles). The split into **train**, **calibration** "
           "(the threshold is fitted on them) and **test** (never used for training or the threshold: what a run "
           "reports) is by tile, so no place is in two of them.")

ds = ui.require_dataset()
manifest = ds.manifest

DEFAULT = preset_defaults("default")[0]  # the Train page starts from the same preset's options
with st.form("pairs_form"):
    st.markdown("**Pair options** (they start as the `default` preset's, as on the Train page)")
    c1, c2, c3, c4, c5, c6 = st.columns(6)
    identical = c1.toggle("Identical pairs (i, i)", value=DEFAULT.identical, key="pairs_identical",
                          help="Also pair each image with itself as 'same' (the seed preset does; default does not).")
    val_fraction = c2.slider("Calibration fraction", 0.05, 0.5, float(DEFAULT.val_fraction), 0.05, key="pairs_val")
    test_fraction = c3.slider("Test fraction", 0.0, 0.5, float(DEFAULT.test_fraction), 0.05, key="pairs_test")
    negatives = c4.number_input("Different pairs per image", 1, 16, int(DEFAULT.negatives), key="pairs_negatives")
    seed = c5.number_input("Seed", 0, 1_000_000, int(DEFAULT.seed), key="pairs_seed")
    limit = c6.number_input("Anchor images (0 = all)", 0, None, int(DEFAULT.limit), step=100, key="pairs_limit")
    st.form_submit_button("Draw pairs", type="primary", key="pairs_go", icon=":material/shuffle:")

try:
    cfg = PairsConfig(identical=bool(identical), negatives=int(negatives), val_fraction=float(val_fraction),
                      test_fraction=float(test_fraction), seed=int(seed), limit=int(limit))
    p = ui.pairs(ds.name, cfg)
except SiameseError as e:
    ui.error(e)
    st.stop()

a, b, label, val, test = p["a"], p["b"], p["label"], p["val"], p["test"]
same_img = a == b
counts = p["counts"]
m1, m2, m3, m4, m5 = st.columns(5)
m1.metric("Pairs", f"{len(a):,}")
m2.metric("Same place", f"{int((label == 0).sum()):,}", help="including identical pairs")
m3.metric("Different places", f"{int((label == 1).sum()):,}")
m4.metric("Calibration pairs", f"{int(val.sum()):,}", help="same + different place; the threshold is fitted on them")
m5.metric("Test pairs", f"{int(test.sum()):,}", help="same + different place; never used for training or the threshold")
st.plotly_chart(figures.pairs_counts_figure(counts), key="pairs_chart")

st.subheader("Preview")
f1, f2, f3, f4 = st.columns([2, 2, 2, 1], vertical_alignment="bottom")
want_label = f1.segmented_control("Label", ["all", "same", "different"], default="all", key="pairs_label",
                                  required=True)
want_split = f2.segmented_control("Split", ["all", "train", "calibration", "test"], default="all", key="pairs_split",
                                  required=True)
hide_identical = f3.checkbox("Hide identical pairs", value=False, key="pairs_hide_identical")
per = f4.selectbox("Per page", [6, 12, 24], index=1, key="pairs_per_page")

pos = dash.filter_pairs(label, val, same_img, want_label or "all", want_split or "all", hide_identical, test=test)
pages = dash.n_pages(len(pos), per)
if st.session_state.get("pairs_page", 1) > pages:
    st.session_state["pairs_page"] = pages
g1, g2 = st.columns([1, 4], vertical_alignment="bottom")
page = g1.number_input(f"Page (of {pages})", 1, pages, step=1, key="pairs_page")
g2.caption(f"{len(pos):,} pairs match · dataset **{ds.name}**")
if len(pos) == 0:
    st.warning("No pair matches these filters.")
    st.stop()

shown = pos[(page - 1) * per: page * per]
images = ui.tiles(ds, np.concatenate([a[shown], b[shown]]))
groups = manifest["group"].to_numpy()
variants = manifest["variant"].to_numpy()
PER_ROW = 3
for start in range(0, len(shown), PER_ROW):
    cols = st.columns(PER_ROW)
    for col, k in zip(cols, shown[start:start + PER_ROW]):
        ia, ib = int(a[k]), int(b[k])
        with col.container(border=True):
            if label[k] == 0:
                st.badge("same place" + (" · identical" if ia == ib else ""), color="green",
                         icon=":material/check_circle:")
            else:
                st.badge("different places", color="orange", icon=":material/cancel:")
            i1, i2 = st.columns(2)
            i1.image(images[ia], caption=f"#{ia} · group {groups[ia]} · v{variants[ia]}", width="stretch")
            i2.image(images[ib], caption=f"#{ib} · group {groups[ib]} · v{variants[ib]}", width="stretch")
            st.caption(f"pair {int(k)} · {'calibration' if val[k] else 'test' if test[k] else 'train'}")
