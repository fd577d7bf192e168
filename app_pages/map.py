"""Map: the active dataset seen through the active run's eyes — every tile's embedding laid out in 2-D (PCA),
coloured by place or source, with near-duplicates (two places closer than two views of one place usually are)
and outliers (tiles with no close neighbour) marked and listed. Click or lasso points to see their tiles.

The embeddings are those of the search index (``siamese_core.scale.search.build_index``: cached in the workspace,
rebuilt when the model or the dataset changes); the arithmetic is in :mod:`siamese_core.judge.collection`.
"""

import html
import importlib.util

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app_pages import ui
from app_pages import views as dash
from siamese_core.judge import collection as col
from siamese_core.scale import search as srch

MAX_POINTS = 5000      # more tiles than this: a seeded sample is mapped
MAX_LEGEND = 20        # more colours than this: one colour scale, no legend
MAX_SHOWN = 12         # tiles shown for a selection
MAX_LISTED = 50        # rows of each table
PER_ROW = 6
HAS_UMAP = importlib.util.find_spec("umap") is not None
COLOURS = {"place": "Place (group)", "source": "Source"}

st.title("Map of the collection")
ds = ui.require_dataset()
rid, run, cfg = ui.require_finished_run(scores=False)
st.markdown(f"Every image of dataset **{ds.name}** ({len(ds):,} images) as run **{rid}** embeds it, laid out in two "
            f"dimensions: nearby points look alike to the model. Near-duplicates and outliers are marked; click or "
            f"lasso points to see their tiles.")


def _index() -> srch.Index:
    """The search index of the active run over the active dataset (its embeddings are what is mapped)."""
    scorer = ui.require_scorer(rid)
    return ui.build_index(scorer, ds, "Embedding the dataset")


@st.cache_data(max_entries=4, show_spinner="Laying out the map…")
def _layout(path: str, built: str, count: int, method: str, max_points: int, _groups: np.ndarray) -> dict:
    """Coordinates, near-duplicates and outliers of (a sample of) the index's embeddings; keyed by the index's
    folder and build time, so a rebuilt index is laid out again."""
    emb = np.load(f"{path}/embeddings.npy", mmap_mode="r")
    rows = col.sample_rows(len(emb), max_points)
    x = np.asarray(emb[rows], np.float32)
    g = np.asarray(_groups)[rows]
    explained = None
    if method == "UMAP":
        import umap
        coords = umap.UMAP(n_components=2, random_state=0).fit_transform(x)
    else:
        proj = col.pca(x, 2)
        coords, explained = proj.coords, proj.explained
    dup = col.near_duplicates(x, g)
    out = col.outliers(x, g)
    return {"rows": rows, "coords": np.asarray(coords), "explained": explained,
            "dup_pairs": rows[dup.pairs] if len(dup.pairs) else np.zeros((0, 2), np.int64),
            "dup_dist": dup.distances, "dup_threshold": dup.threshold,
            "out_rows": rows[out.rows], "out_dist": out.distances}


index = _index()
groups = np.asarray(index.groups)
c1, c2 = st.columns([1, 1])
colour_by = c1.selectbox("Colour by", list(COLOURS), key="map_color", format_func=COLOURS.get,
                         help="Place: the dataset's group (views and variants of one place share it). Source: "
                              "where the tile came from (the source kind and its first folder).")
methods = ["PCA"] + (["UMAP"] if HAS_UMAP else [])
method = c2.radio("Layout", methods, key="map_method", horizontal=True,
                  help="PCA: the two directions along which the embeddings vary most (fast, exact). UMAP keeps "
                       "neighbourhoods better; it needs the umap-learn package.")
lay = _layout(str(index.path), str(index.meta.get("built")), len(index), method, MAX_POINTS, groups)
rows, xy = lay["rows"], lay["coords"]

manifest = ds.manifest
has_place = "place" in manifest.columns
place = (manifest["place"].astype(str).to_numpy() if has_place
         else np.array([f"group {g}" for g in groups], dtype=object))
source = (col.coarse_labels(manifest["source"].astype(str).to_numpy(), MAX_LEGEND) if "source" in manifest.columns
          else np.array(["unknown"] * len(ds), dtype=object))
labels = (place if colour_by == "place" else source)[rows]

if lay["explained"] is not None:
    e = lay["explained"]
    how = f"PCA of the {index.meta['dim']}-d embeddings: the axes explain {e[0]:.0%} and {e[1]:.0%} of their variance."
else:
    how = "UMAP of the embeddings (axes have no units)."
if not HAS_UMAP:
    how += " UMAP would need the umap-learn package, which is not installed, so the map is a PCA."
if len(rows) < len(ds):
    how += f" {len(rows):,} of {len(ds):,} images are mapped (a seeded sample)."
st.caption(how)

# --- the scatter ---------------------------------------------------------------------------------------------

# names come from file names: Plotly renders some HTML in hover text and legends, so they are escaped
custom = np.stack([rows, groups[rows], [html.escape(str(x)) for x in source[rows]],
                   [html.escape(str(x)) for x in place[rows]]], axis=1).astype(object)
hover = ("row %{customdata[0]}<br>group %{customdata[1]}" + (" · %{customdata[3]}" if has_place else "")
         + "<br>%{customdata[2]}<extra></extra>")
fig = go.Figure()
trace_rows: list[np.ndarray] = []
cats, codes = np.unique(labels.astype(str), return_inverse=True)
if len(cats) <= MAX_LEGEND:
    for k, name in enumerate(cats):
        m = codes == k
        fig.add_trace(go.Scattergl(x=xy[m, 0], y=xy[m, 1], mode="markers", name=html.escape(str(name)),
                                   customdata=custom[m],
                                   hovertemplate=hover, marker={"size": 7, "opacity": 0.8}))
        trace_rows.append(rows[m])
else:
    fig.add_trace(go.Scattergl(x=xy[:, 0], y=xy[:, 1], mode="markers", name="tiles", customdata=custom,
                               hovertemplate=hover, showlegend=False,
                               marker={"size": 7, "opacity": 0.8, "color": codes, "colorscale": "Turbo"}))
    trace_rows.append(rows)
pos = {int(r): k for k, r in enumerate(rows)}
dups, outs = lay["dup_pairs"], lay["out_rows"]
if len(dups):
    seg = np.full((3 * len(dups), 2), np.nan)
    seg[0::3] = xy[[pos[int(a)] for a in dups[:, 0]]]
    seg[1::3] = xy[[pos[int(b)] for b in dups[:, 1]]]
    fig.add_trace(go.Scattergl(x=seg[:, 0], y=seg[:, 1], mode="lines", hoverinfo="skip", showlegend=False,
                               line={"color": "crimson", "width": 1}))
    trace_rows.append(np.zeros(0, np.int64))
    d_rows = np.unique(dups)
    m = np.array([pos[int(r)] for r in d_rows])
    fig.add_trace(go.Scattergl(x=xy[m, 0], y=xy[m, 1], mode="markers", name="near-duplicate", customdata=custom[m],
                               hovertemplate=hover, marker={"symbol": "diamond-open", "size": 13, "color": "crimson",
                                                            "line": {"width": 2}}))
    trace_rows.append(d_rows)
if len(outs):
    m = np.array([pos[int(r)] for r in outs])
    fig.add_trace(go.Scattergl(x=xy[m, 0], y=xy[m, 1], mode="markers", name="outlier", customdata=custom[m],
                               hovertemplate=hover, marker={"symbol": "x", "size": 12, "color": "black"}))
    trace_rows.append(np.asarray(outs))
fig.update_layout(height=560, margin={"l": 10, "r": 10, "t": 30, "b": 10}, dragmode="lasso",
                  legend={"title": {"text": COLOURS[colour_by]}, "itemsizing": "constant"},
                  xaxis={"title": "axis 1", "zeroline": False}, yaxis={"title": "axis 2", "zeroline": False})
event = st.plotly_chart(fig, on_select="rerun", key="map_plot", selection_mode=("points", "box", "lasso"),
                        width="stretch")


def _picked_rows(ev) -> list[int]:
    """Dataset rows of the points selected on the chart (by customdata, else by trace and point index)."""
    try:
        points = ev.selection.points
    except AttributeError:
        try:
            points = ev["selection"]["points"]
        except (KeyError, TypeError):
            return []
    out = []
    for p in points or []:
        cd = p.get("customdata")
        if cd is not None and len(cd):
            out.append(int(cd[0]))
            continue
        c, i = p.get("curve_number"), p.get("point_index", p.get("point_number"))
        if c is not None and i is not None and c < len(trace_rows) and i < len(trace_rows[c]):
            out.append(int(trace_rows[c][i]))
    return list(dict.fromkeys(out))


selected = _picked_rows(event)

# --- near-duplicates and outliers --------------------------------------------------------------------------------

t1, t2 = st.columns(2)
with t1:
    st.markdown(f"**Near-duplicates** ({len(dups):,})")
    if lay["dup_threshold"] is None:
        st.caption("No place has two images here, so there is no same-place distance to compare with.")
    else:
        st.caption(f"Images of different places closer than {lay['dup_threshold']:.4f}, the 1st percentile of the "
                   f"distances between images of one place: probably one place filed twice.")
    dup_df = pd.DataFrame({"row a": dups[:MAX_LISTED, 0], "row b": dups[:MAX_LISTED, 1],
                           "group a": groups[dups[:MAX_LISTED, 0]], "group b": groups[dups[:MAX_LISTED, 1]],
                           "distance": np.round(lay["dup_dist"][:MAX_LISTED], 4)})
    dup_event = st.dataframe(dup_df, key="map_dups", hide_index=True, on_select="rerun", selection_mode="single-row",
                             width="stretch", height=min(240, 38 + 35 * max(1, len(dup_df))))
with t2:
    st.markdown(f"**Outliers** ({len(outs):,})")
    st.caption("The 1 % of images farthest from their nearest neighbour of another place: unlike the rest of the "
               "collection (a cloud, a blank or corrupt tile, other imagery).")
    out_df = pd.DataFrame({"row": outs[:MAX_LISTED], "group": groups[outs[:MAX_LISTED]],
                           "source": source[outs[:MAX_LISTED]],
                           "nearest neighbour": np.round(lay["out_dist"][:MAX_LISTED], 4)})
    out_event = st.dataframe(out_df, key="map_outliers", hide_index=True, on_select="rerun",
                             selection_mode="single-row", width="stretch",
                             height=min(240, 38 + 35 * max(1, len(out_df))))


def _table_rows(ev, df: pd.DataFrame, cols: list[str]) -> list[int]:
    try:
        sel = ev.selection.rows
    except AttributeError:
        return []
    return [int(df.iloc[i][c]) for i in sel if i < len(df) for c in cols]


selected += [r for r in _table_rows(dup_event, dup_df, ["row a", "row b"]) + _table_rows(out_event, out_df, ["row"])
             if r not in selected]

# --- the selected tiles ------------------------------------------------------------------------------------------

st.subheader("Selected tiles")
if not selected:
    st.caption("Click a point (or draw a lasso or a box around several) on the map, or pick a row of a table, to see "
               "the tiles here.")
    st.stop()
shown = selected[:MAX_SHOWN]
st.caption(f"{len(selected):,} selected" + (f"; the first {MAX_SHOWN} are shown" if len(selected) > MAX_SHOWN else ""))
thumbs = ui.tiles(ds, shown)
dup_set, out_set = set(map(int, np.unique(dups))), set(map(int, outs))
for start in range(0, len(shown), PER_ROW):
    for c, r in zip(st.columns(PER_ROW), shown[start:start + PER_ROW]):
        with c:
            mark = " · near-duplicate" if r in dup_set else (" · outlier" if r in out_set else "")
            st.image(np.asarray(thumbs[r]), caption=f"row {r} · group {int(groups[r])}"
                     + (f" · {dash.md_escape(place[r])}" if has_place else "") + mark,
                     width="stretch")
