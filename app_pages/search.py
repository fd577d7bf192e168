"""Search: which tile of the active dataset is this? Upload a tile (or pick a dataset image) and see the k
nearest images by embedding distance, optionally with the run's fused verdict from the geometric check.

Every image of the dataset is embedded once into a FAISS index (``siamese_core.scale.search``), saved in the
workspace and kept in memory for all sessions; it is rebuilt, with a progress bar, when the run's model or
the dataset changes. The second tab, **Locate in a scene** (``app_pages/locate_tab.py``), finds where a tile lies in a
large scene (``siamese_core.scale.locate``).
"""

import hashlib

import numpy as np
import streamlit as st

from app_pages import locate_tab, ui
from app_pages import views as dash
from siamese_core.core.errors import SiameseError
from siamese_core.data.images import IMAGE_EXTENSIONS
from siamese_core.scale import search as srch

TYPES = [e.lstrip(".") for e in IMAGE_EXTENSIONS]
MAX_MB = 50
QUERY_W = 256
PER_ROW = 5
K_MAX = 20

st.title("Search the archive")
rid, run, cfg = ui.require_finished_run(scores=False)
tab_search, tab_locate = st.tabs(["Search a dataset", "Locate in a scene"])
with tab_locate:  # first: the Search tab stops the script when there is no dataset
    locate_tab.show(rid)

with tab_search:
    ds = ui.require_dataset()
    st.markdown(f"Which image of dataset **{ds.name}** ({len(ds):,} images) shows this place? Run **{rid}** embeds "
                f"the query and finds the nearest images by **embedding distance** (lower = more alike); the "
                f"geometric check then judges each hit with keypoints and the run's fused verdict.")


    @st.cache_resource(max_entries=1, show_spinner=False)
    def _loaded() -> dict:
        """Indexes in memory, shared by every session: key (workspace, run, dataset, file stamps) → Index."""
        return {}


    def _index() -> srch.Index:
        """The index of the active run over the active dataset: from memory, else from disk, else built here."""
        scorer = ui.require_scorer(rid)
        stamp = srch.source_stamp(scorer, ds)
        key = (str(ui.workspace()), rid, ds.name, repr(sorted(stamp.items())))
        cache = _loaded()
        if key in cache:
            return cache[key]
        idx = ui.build_index(scorer, ds, "Embedding the dataset for search")
        for old in [k for k in cache if k[:3] == key[:3]]:
            cache.pop(old)
        while len(cache) >= 4:
            cache.pop(next(iter(cache)))
        cache[key] = idx
        return idx


    c1, c2 = st.columns([3, 2])
    with c1:
        up = st.file_uploader("Query tile", type=TYPES, key="search_upload", max_upload_size=MAX_MB,
                              help="PNG, JPEG, TIFF (GeoTIFF: any bands), BMP or WebP; centre-cropped to a square "
                                   "and resized like the training tiles.")
        bands = ui.bands_field("search_bands")
    with c2:
        row = st.number_input("…or an image of the dataset (row)", 0, len(ds) - 1, 0, key="search_row",
                              help="Used when no tile is uploaded. Images of the same group show the same place.",
                              disabled=up is not None)
        k = st.slider("Nearest images (k)", 1, min(K_MAX, len(ds)), min(5, len(ds)), key="search_k")
        check = st.checkbox("Geometric check of the hits (keypoints + fused verdict; slower)", value=False,
                            key="search_check")

    index = _index()
    prepared = None
    try:
        if up is not None:
            data = up.getvalue()
            if len(data) > MAX_MB * 1024 * 1024:
                raise SiameseError(f"{up.name}: file is {len(data) / 1e6:.0f} MB, over the {MAX_MB} MB upload limit")
            pkey = ("_search_prep", rid, hashlib.sha1(data).hexdigest(), bands)
            if st.session_state.get("_search_prep_key") != pkey:
                st.session_state["_search_prep"] = index.scorer.prepare(data, up.name, bands=bands)
                st.session_state["_search_prep_key"] = pkey
            prepared = st.session_state["_search_prep"]
            query, query_rows, label = prepared.tile, None, f"{dash.md_escape(up.name)} as the model sees it"
        else:
            query = srch.dataset_row(index, row)
            query_rows = [int(row)]
            label = f"row {int(row)} · group {int(index.groups[int(row)])}"
        with st.spinner("Judging the hits (keypoints)…" if check else "Searching…"):
            hits = srch.search(index, query, int(k), query_rows=query_rows, check=bool(check),
                               prepared=None if prepared is None else [prepared])[0]
    except SiameseError as e:
        ui.error(e)
        st.stop()

    q1, q2 = st.columns([1, 3])
    with q1:
        st.image(np.asarray(query).reshape(query.shape[-3:]), caption=f"Query: {label}", width=QUERY_W)
    with q2:
        kind = ("exact search" if index.kind == "flat"
                else f"approximate IVF search (nlist {index.meta['nlist']}, nprobe {index.meta['nprobe']})")
        st.caption(f"Index: {len(index):,} images, {index.meta['dim']}-dim embeddings, {kind}; built "
                   f"{index.meta.get('built')}. Embedding distance: 0 = identical, lower = more alike.")
        if check:
            t = index.scorer.threshold
            n_same = sum(bool(h.same_place) for h in hits)
            st.markdown(f"Geometric check: **{n_same} of {len(hits)}** hits judged **the same place** "
                        f"(fused score ≤ threshold {t:.4f}).")
        table = [{"rank": h.rank, "row": h.row, "distance": round(h.distance, 4), "group": h.group,
                  **({"same group": h.same_group} if h.same_group is not None else {}),
                  **({"score": round(h.score, 4), "verdict": "same place" if h.same_place else "different places",
                      "keypoints": h.evidence} if h.score is not None else {})} for h in hits]
        st.dataframe(table, hide_index=True, key="search_table")

    st.subheader(f"The {len(hits)} nearest images")
    thumbs = ui.tiles(ds, [h.row for h in hits])
    for start in range(0, len(hits), PER_ROW):
        cols = st.columns(PER_ROW)
        for col, h in zip(cols, hits[start:start + PER_ROW]):
            with col:
                cap = f"#{h.rank} · row {h.row} · d {h.distance:.3f} · group {h.group}"
                if h.same_group:
                    cap += " (same place)"
                st.image(np.asarray(thumbs[h.row]), caption=cap, width="stretch")
                if h.score is not None:
                    (st.success if h.same_place else st.warning)(
                        f"{'Same place' if h.same_place else 'Different'} · score {h.score:.3f}",
                        icon=":material/check_circle:" if h.same_place else ":material/cancel:")
