"""Triplets: each source tile (group) with its rotated variants, a page at a time."""

import numpy as np
import streamlit as st

from app_pages import ui
from siamese_core.data import augment
from app_pages import views as dash

st.title("Triplets")
st.caption("Each group is one place: the original tile and its rotated (and optionally distorted) variants. "
           "Pairs inside a group are labelled *same place*; pairs across groups *different places*.")

ds = ui.require_dataset()
name = ds.name
gt = ui.group_table(name)
manifest = ds.manifest
kinds = sorted(gt["kind"].unique().tolist())
PER_ROW = 2


def _filtered():
    return dash.filter_groups(gt, st.session_state.get("tri_source") or None, st.session_state.get("tri_query", ""))


def _jump():
    """Go to the page holding image index ``tri_jump`` (clearing filters that hide it)."""
    idx = int(st.session_state.get("tri_jump", 0))
    if not 0 <= idx < len(manifest):
        st.session_state["tri_notice"] = f"index {idx} is out of range (0–{len(manifest) - 1})"
        return
    group = int(manifest["group"].iloc[idx])
    per = int(st.session_state.get("tri_per_page", 8))
    page = dash.page_for_group(_filtered(), group, per)
    if page is None:
        st.session_state["tri_source"] = []
        st.session_state["tri_query"] = ""
        page = dash.page_for_group(gt["group"].to_numpy(), group, per)
        st.session_state["tri_notice"] = f"filters cleared to show image {idx}"
    st.session_state["tri_page"] = page
    st.session_state["tri_highlight"] = idx


with st.container(border=True):
    f1, f2, f3, f4 = st.columns([2, 2, 1, 2], vertical_alignment="bottom")
    f1.multiselect("Source", kinds, key="tri_source", placeholder="all sources",
                   help="Where the tiles came from (synthetic, folder, pix2pix, hf-parquet…).")
    f2.text_input("Group or tile id", key="tri_query", placeholder="e.g. 12 or a file name",
                  help="A group number, or text found in the tile id or its source.")
    f3.selectbox("Groups per page", [4, 8, 12, 24], index=1, key="tri_per_page")
    with f4:
        j1, j2 = st.columns([3, 2], vertical_alignment="bottom")
        j1.number_input("Jump to image index", min_value=0, max_value=max(0, len(manifest) - 1), step=1,
                        key="tri_jump")
        j2.button("Go", key="tri_jump_go", on_click=_jump, icon=":material/arrow_forward:")

if notice := st.session_state.pop("tri_notice", None):
    st.info(notice[:1].upper() + notice[1:])

groups = _filtered()
per = int(st.session_state["tri_per_page"])
pages = dash.n_pages(len(groups), per)
if st.session_state.get("tri_page", 1) > pages:
    st.session_state["tri_page"] = pages
p1, p2 = st.columns([1, 4], vertical_alignment="bottom")
page = p1.number_input(f"Page (of {pages})", min_value=1, max_value=pages, step=1, key="tri_page")
p2.caption(f"{len(groups)} of {len(gt)} groups · {len(manifest)} images · {ds.size} px tiles · dataset **{name}**")

if len(groups) == 0:
    st.warning("No group matches these filters.")
    st.stop()

shown = groups[(page - 1) * per: page * per]
rows = manifest[manifest["group"].isin(shown)]
images = ui.tiles(ds, rows["index"])  # only this page is read from the memory map
highlight = st.session_state.get("tri_highlight")

for start in range(0, len(shown), PER_ROW):
    cols = st.columns(PER_ROW)
    for col, g in zip(cols, shown[start:start + PER_ROW]):
        members = rows[rows["group"] == g]
        first = members.iloc[0]
        with col.container(border=True):
            st.markdown(f"**Group {int(g)}** · {dash.md_code(first['tile_id'])}")
            st.caption(dash.md_escape(dash.scrub_paths(first["source"])))
            per_line = min(len(members), 4)
            for k in range(0, len(members), per_line):
                icols = st.columns(per_line)
                for icol, (_, r) in zip(icols, members.iloc[k:k + per_line].iterrows()):
                    cap = f"#{int(r['index'])} · {dash.variant_caption(r)}"
                    if highlight is not None and int(r["index"]) == int(highlight):
                        cap = "▶ " + cap
                    icol.image(images[int(r["index"])], caption=cap, width="stretch")

with st.expander("What a new acquisition looks like"):
    st.caption("Two tiles of one place are often two acquisitions: another season, sensor, sun or footprint. "
               "One tile of this page through each distortion that models that (`prepare --distort …`), "
               "then through a random few of them at once, as a second date might show it.")
    a1, a2, a3 = st.columns([3, 1, 2], vertical_alignment="bottom")
    tile = a1.selectbox("Tile", [int(i) for i in rows["index"]], key="triplets_acq_tile",
                        format_func=lambda i: f"#{i} · group {int(manifest['group'].iloc[i])}")
    seed = a2.number_input("Seed", min_value=0, step=1, key="triplets_acq_seed",
                           help="Draws the distortions' parameters; the same seed gives the same images.")
    if a3.toggle("Show the distortions", key="triplets_acq_show"):
        img = images[int(tile)]
        shown_acq = [("original", img)]
        shown_acq += [(f"{kind} · {augment.describe(p)}", out)
                      for kind, p, out in augment.each_distortion(img, np.random.default_rng(int(seed)))]
        both, params = augment.acquisition(img, np.random.default_rng(int(seed)))
        shown_acq.append((f"second date: {' + '.join(params)}", both))
        for k in range(0, len(shown_acq), 4):
            for gcol, (cap, out) in zip(st.columns(4), shown_acq[k:k + 4]):
                gcol.image(out, caption=cap, width="stretch")
