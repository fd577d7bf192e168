"""Batch: which of these pairs show the same place?

The analyst uploads a pairs CSV (``image_a,image_b[,…]``) and a zip of the tiles it names — or draws N
random pairs from the active dataset — and the active run judges every pair through the code path of
``python -m siamese_core score --pairs`` (:func:`siamese_core.data.pairs_csv.read_pairs_csv` and
:func:`~siamese_core.judge.inference.judge_rows`, the same output columns as
:func:`~siamese_core.judge.inference.score_csv`). The zip is unpacked by :func:`siamese_core.data.uploads.extract_zip`
(limits, no path traversal) into a temporary folder removed afterwards; the CSV's paths are resolved to the
zip's members only (relative to the zip's root, else by a unique base name), never to other server files.

The result (table, scored CSV, problems) is kept in the session, so filtering and sorting do not rescore.
"""

from __future__ import annotations

import csv
import io
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import streamlit as st

from app_pages import ui
from app_pages import views as dash
from siamese_core.core.errors import SiameseError
from siamese_core.core.files import make_temp_dir, remove
from siamese_core.data.images import decode_image, encode_png
from siamese_core.data.pairs_csv import csv_text, read_pairs_csv
from siamese_core.data.uploads import extract_zip, safe_relpath
from siamese_core.judge.inference import OUT_COLUMNS, Judgement, explain, judge_rows, scored_rows

MAX_CSV_MB = 50
MAX_ZIP_MB = 1024
MAX_PROBLEM_LINES = 50
IMG_W = 300
STATE = "batch_result"
VERDICTS = {"all": "All", "same": "Same place", "different": "Different places", "uncertain": "Uncertain",
            "errors": "Errors"}


# --- the work (no widgets) ----------------------------------------------------------------------------

def _members(folder: Path) -> list[str]:
    """Relative POSIX paths of the files extract_zip wrote."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _resolver(folder: Path, skipped: list, zip_name: str):
    """``resolve(name) -> (relative path in folder, None) | (None, reason)`` for a CSV cell: a member's
    path relative to the zip's root, else a member with that unique base name. Nothing outside the
    extracted members can come out of it (absolute paths and '..' only ever match by base name)."""
    have = set(_members(folder))
    by_base = defaultdict(list)
    for m in have:
        by_base[PurePosixPath(m).name].append(m)
    refused = {}
    for member, reason in skipped:
        rel = safe_relpath(member)
        if rel is not None:
            refused[str(rel)] = reason
            refused.setdefault(rel.name, reason)

    def resolve(name: str):
        rel = safe_relpath(name)
        if rel is not None and str(rel) in have:
            return str(rel), None
        base = PurePosixPath(name.replace("\\", "/")).name
        hits = by_base.get(base, [])
        if len(hits) == 1:
            return hits[0], None
        if len(hits) > 1:
            return None, (f"{name}: {len(hits)} files in {zip_name} are named {base!r}; "
                          f"write its path inside the zip")
        why = refused.get(str(rel)) if rel is not None else None
        why = why or refused.get(base)
        if why:
            return None, f"{name}: {why.replace(' (skipped)', '')} (in {zip_name})"
        return None, f"{name}: not in {zip_name}"

    return resolve


def score_upload(scorer, threshold: float, csv_bytes: bytes, csv_name: str, zip_bytes: bytes, zip_name: str,
                 tmp_root: Path | None = None, progress=None, bands=None) -> dict:
    """Score the pairs of an uploaded CSV against the tiles of an uploaded zip, every raster read through
    ``bands`` (as ``score --pairs --bands`` reads them; None: each file's own RGB).

    Raises SiameseError (one line) for a CSV without image_a/image_b or a zip that is not one; a row
    whose tile is missing, not an image or unreadable keeps an empty score and says why in ``error``."""
    try:
        tmp = make_temp_dir(tmp_root if tmp_root is not None else tempfile.gettempdir(), ".batch-")
    except OSError:
        tmp = make_temp_dir(tempfile.gettempdir(), ".batch-")
    try:  # owner-tagged: removed below, or by the workspace sweep if this server is killed meanwhile
        csv_path = tmp / "pairs.csv"
        csv_path.write_bytes(csv_bytes)
        try:
            rows, cols, lines = read_pairs_csv(csv_path)
        except SiameseError as e:
            raise SiameseError(str(e).replace(str(csv_path), csv_name)) from None
        folder = tmp / "tiles"
        res = extract_zip(zip_bytes, folder, name=zip_name)
        resolve = _resolver(folder, res.skipped, zip_name)
        results: list = [None] * len(rows)
        members: list = [(None, None)] * len(rows)
        todo, todo_rows = [], []
        for i, r in enumerate(rows):
            a, b = r.get("image_a", "").strip(), r.get("image_b", "").strip()
            if not a or not b:
                results[i] = "empty image_a or image_b"
                continue
            (ma, ea), (mb, eb) = resolve(a), resolve(b)
            members[i] = (ma, mb)
            if ea or eb:
                results[i] = "; ".join(e for e in (ea, eb) if e)
                continue
            todo.append(i)
            todo_rows.append({**r, "image_a": ma, "image_b": mb})
        for i, j in zip(todo, judge_rows(scorer, todo_rows, folder, threshold, progress, bands=bands)):
            results[i] = j if isinstance(j, Judgement) else str(j).replace(str(folder) + "/", "")
        unfamiliar = _unfamiliar(scorer, folder, members, results, bands)
    finally:
        remove(tmp)
    out, out_cols, failed = scored_rows(rows, cols, lines, results)
    return {"csv": csv_text(out, out_cols).encode("utf-8"), "rows": out, "cols": cols, "lines": lines, "failed": failed,
            "members": members, "zip": zip_bytes, "threshold": threshold, "unfamiliar": unfamiliar, "bands": bands}


def _unfamiliar(scorer, folder: Path, members: list, results: list, bands=None, chunk: int = 256) -> dict | None:
    """Which tiles of the scored rows are unlike the run's training tiles: ``{"rows": [bool per row],
    "why": {member: reason}}``; None when the run has no reference.npz (nothing is shown then)."""
    check = getattr(scorer, "familiarity", None)
    if check is None or check([]) is None:
        return None
    used = sorted({m for (ma, mb), r in zip(members, results) if isinstance(r, Judgement) for m in (ma, mb)})
    why = {}
    for lo in range(0, len(used), chunk):
        names, tiles = [], []
        for m in used[lo:lo + chunk]:
            try:
                tiles.append(scorer.load(folder / m, m, bands))
                names.append(m)
            except SiameseError:
                pass
        for m, f in zip(names, check(tiles) or []):
            if f.unfamiliar:
                why[m] = f.reason
    return {"rows": [isinstance(r, Judgement) and (ma in why or mb in why) for (ma, mb), r in zip(members, results)],
            "why": why}


def random_pairs(ds, n: int, seed: int) -> tuple[bytes, bytes]:
    """(CSV bytes, zip bytes) for ``n`` random pairs of the dataset: about half of the same place (same
    group), the rest of two places; a ``truth`` column says which."""
    rng = np.random.default_rng(seed)
    groups = np.asarray(ds.groups)
    by_group = defaultdict(list)
    for i, g in enumerate(groups):
        by_group[int(g)].append(i)
    multi = [g for g, ix in by_group.items() if len(ix) > 1]
    pairs = []
    for k in range(n):
        if k % 2 == 0 and multi:
            a, b = rng.choice(by_group[multi[rng.integers(len(multi))]], 2, replace=False)
        else:
            a, b = rng.integers(len(groups)), rng.integers(len(groups))
            for _ in range(20):
                if groups[a] != groups[b]:
                    break
                b = rng.integers(len(groups))
        pairs.append((int(a), int(b)))
    used = sorted({i for p in pairs for i in p})
    tiles = ui.tiles(ds, used)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_STORED) as zf:
        for i in used:
            zf.writestr(f"tile_{i:06d}.png", encode_png(np.asarray(tiles[i])))
    cbuf = io.StringIO(newline="")
    w = csv.writer(cbuf)
    w.writerow(["image_a", "image_b", "truth"])
    for a, b in pairs:
        w.writerow([f"tile_{a:06d}.png", f"tile_{b:06d}.png", "same" if groups[a] == groups[b] else "different"])
    return cbuf.getvalue().encode("utf-8"), zbuf.getvalue()


def table(res: dict) -> pd.DataFrame:
    """The result as a typed table (index = row number in the CSV's order)."""
    df = pd.DataFrame(res["rows"], columns=res["cols"] + [c for c in OUT_COLUMNS if c not in res["cols"]])
    df.insert(0, "line", res["lines"])
    for c in ("score", "distance", "inliers", "angle", "scale", "overlap", "structure"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    words = {"same": "same place", "different": "different places", "uncertain": "uncertain"}
    df["verdict"] = np.where(df["error"].astype(str) != "", "error", df["verdict"].map(words).fillna("error"))
    if res.get("unfamiliar"):  # a tile unlike the run's training tiles (only for a run with reference.npz)
        df["unfamiliar"] = np.asarray(res["unfamiliar"]["rows"], bool)
    return df


# --- the page -------------------------------------------------------------------------------------------

st.title("Batch: which of these pairs match?")
rid, run, cfg = ui.require_finished_run(scores=False)
try:
    threshold = run.threshold()
except SiameseError as e:
    ui.error(e)
    st.stop()
st.markdown(f"Every pair is judged by run **{rid}** ({cfg.model.preset} preset) at threshold **{threshold:.4f}**, "
            f"exactly as `python -m siamese_core score --pairs` does; the download has the same columns.")
ui.score_note(cfg.model.preset, threshold, fused=run.has_fusion())


def _run(csv_bytes: bytes, csv_name: str, zip_bytes: bytes, zip_name: str, source: str, bands=None) -> None:
    st.session_state.pop(STATE, None)
    try:
        scorer = ui.scorer(rid)
    except SiameseError as e:
        ui.error(e)
        return
    bar = st.progress(0.0, text="Scoring pairs…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Scored {done:,} of {total:,} pairs")

    try:
        res = score_upload(scorer, threshold, csv_bytes, csv_name, zip_bytes, zip_name,
                           tmp_root=ui.workspace() / ".uploads", progress=progress, bands=bands)
    except (SiameseError, OSError) as e:
        bar.empty()
        ui.error(e)
        return
    bar.empty()
    res.update(run=rid, source=source, name=Path(csv_name).stem or "pairs")
    st.session_state[STATE] = res


up_tab, rnd_tab = st.tabs(["Upload a CSV and a zip", "Random pairs from the dataset"])
with up_tab:
    c1, c2 = st.columns(2)
    up_csv = c1.file_uploader("Pairs CSV (columns image_a, image_b; others are kept)", type=["csv", "txt"],
                              key="batch_csv", max_upload_size=MAX_CSV_MB)
    up_zip = c2.file_uploader("Zip of the tiles it names", type=["zip"], key="batch_zip", max_upload_size=MAX_ZIP_MB,
                              help="Paths in the CSV are relative to the zip's root; a path that is not found "
                                   "there matches a file of the same name if only one has it.")
    bands = ui.bands_field("batch_bands")
    if st.button("Score these pairs", key="batch_go", type="primary", disabled=not (up_csv and up_zip)):
        _run(up_csv.getvalue(), up_csv.name, up_zip.getvalue(), up_zip.name, f"{up_csv.name} + {up_zip.name}", bands)
with rnd_tab:
    ds_name = ui.active_dataset()
    if ds_name is None:
        st.info("There is no dataset yet — create one on **Home / data**.", icon=":material/info:")
    else:
        r1, r2, r3 = st.columns([1, 1, 1], vertical_alignment="bottom")
        n = r1.number_input("Pairs", 2, 500, 20, key="batch_n")
        seed = r2.number_input("Seed", 0, 10 ** 6, 0, key="batch_seed")
        if r3.button(f"Score {int(n)} random pairs of `{ds_name}`", key="batch_random_go"):
            try:
                c, z = random_pairs(ui.dataset(ds_name), int(n), int(seed))
            except (SiameseError, OSError, ValueError) as e:
                ui.error(e)
            else:
                _run(c, f"{ds_name}_random.csv", z, f"{ds_name}.zip", f"{int(n)} random pairs of {ds_name}")

res = st.session_state.get(STATE)
if res is None:
    st.stop()

df = table(res)
counts = {"all": len(df), "same": int((df.verdict == "same place").sum()),
          "different": int((df.verdict == "different places").sum()), "uncertain": int((df.verdict == "uncertain").sum()),
          "errors": int((df.verdict == "error").sum())}
st.subheader("Results")
bands_note = f" · bands {','.join(map(str, res['bands']))}" if res.get("bands") else ""
st.caption(f"{dash.md_escape(res['source'])} · run **{res['run']}** · threshold {res['threshold']:.4f}{bands_note}"
           f" · {len(df) - counts['errors']:,} of {len(df):,} pairs scored")
if res["failed"]:
    with st.container(border=True):
        st.markdown(f"**{len(res['failed'])} row(s) could not be scored** (the others are below):")
        for n_line, why in res["failed"][:MAX_PROBLEM_LINES]:
            st.markdown(f"- line {n_line}: {dash.md_escape(why)}")
        if len(res["failed"]) > MAX_PROBLEM_LINES:
            st.caption(f"…and {len(res['failed']) - MAX_PROBLEM_LINES} more: see the `error` column of the download.")
if "truth" in df.columns:
    known = df[(df.verdict != "error") & df.truth.isin(["same", "different"])]
    decided = known[known.verdict != "uncertain"]
    if len(known):
        right = int(((decided.verdict == "same place") == (decided.truth == "same")).sum())
        st.caption(f"Verdict agrees with the dataset's truth for {right} of {len(decided)} decided pairs"
                   + (f" ({len(known) - len(decided)} uncertain)." if len(known) > len(decided) else "."))

f1, f2, f3 = st.columns([3, 1, 1], vertical_alignment="bottom")
verdict = f1.radio("Show", list(VERDICTS), key="batch_filter", horizontal=True,
                   format_func=lambda k: f"{VERDICTS[k]} ({counts[k]})")
order = f2.selectbox("Sort", ["CSV order", "score ↑ (most alike first)", "score ↓"], key="batch_sort")
f3.download_button("Download scored CSV", res["csv"], file_name=f"{res['name']}_scored.csv", mime="text/csv",
                   key="batch_download", icon=":material/download:",
                   help="The columns `python -m siamese_core score --pairs` writes; bad rows keep an empty score "
                        "and say why in `error`.")

view = df if verdict == "all" else df[df.verdict == {"same": "same place", "different": "different places",
                                                     "uncertain": "uncertain", "errors": "error"}[verdict]]
if order != "CSV order":
    view = view.sort_values("score", ascending=order.startswith("score ↑"), na_position="last", kind="stable")
shown = [c for c in ("line", "image_a", "image_b", "truth", "verdict", "unfamiliar", "score", "distance", "inliers",
                     "angle", "scale", "overlap", "geometry", "reason", "error") if c in view.columns]
st.caption(f"Showing {len(view):,} of {len(df):,} pairs. Click a row (or pick it below) to see its tiles.")
if view.empty:
    st.info(f"No pairs with verdict “{VERDICTS[verdict]}”.", icon=":material/filter_alt_off:")
    st.stop()
event = st.dataframe(view[shown], key="batch_table", on_select="rerun", selection_mode="single-row",
                     hide_index=True, width="stretch",
                     column_config={"score": st.column_config.NumberColumn(format="%.4f"),
                                    "distance": st.column_config.NumberColumn(format="%.4f")})
options = list(view.index)
picked = None
try:
    sel = event.selection.rows
    picked = options[sel[0]] if sel else None
except (AttributeError, IndexError, TypeError):
    pass
if picked is not None and st.session_state.get("_batch_picked") != picked:
    st.session_state["_batch_picked"] = picked
    st.session_state["batch_row"] = picked
if st.session_state.get("batch_row") not in options:
    st.session_state["batch_row"] = options[0]
i = st.selectbox("Pair", options, key="batch_row",
                 format_func=lambda k: f"line {df.line[k]} · {df.image_a[k]} ↔ {df.image_b[k]} · "
                                       + (f"{df.score[k]:.4f}" if df.verdict[k] != "error" else "error"))
row = df.loc[i]
ma, mb = res["members"][i]
zf = zipfile.ZipFile(io.BytesIO(res["zip"]))
members = {str(safe_relpath(info.filename)): info.filename for info in zf.infolist()
           if not info.is_dir() and safe_relpath(info.filename) is not None}
cols = st.columns(2)
for col, member, label in ((cols[0], ma, row.image_a), (cols[1], mb, row.image_b)):
    with col:
        if member is None or member not in members:
            st.caption(f"{dash.md_escape(label)}: not in the zip")
            continue
        try:
            st.image(decode_image(zf.read(members[member]), name=member, max_side=1024, bands=res.get("bands")),
                     caption=dash.md_escape(label), width=IMG_W)
        except (SiameseError, zipfile.BadZipFile, OSError, ValueError) as e:
            st.caption(dash.user_message(e, ui.workspace()))
if row.verdict == "error":
    st.warning(f"Not scored: {dash.md_escape(row.error)}", icon=":material/error:")
else:
    show, icon = {"same place": (st.success, ":material/check_circle:"),
                  "uncertain": (st.info, ":material/help:")}.get(row.verdict, (st.warning, ":material/cancel:"))
    show(f"**{row.verdict.capitalize()}** · score {row.score:.4f}" + (f" · {row.reason}" if row.reason else ""),
         icon=icon)
    for side, member in (("A", ma), ("B", mb)):
        if member in (res.get("unfamiliar") or {}).get("why", {}):
            st.warning(f"Tile {side} is unlike anything this model was trained on: "
                       f"{dash.md_escape(res['unfamiliar']['why'][member])}; "
                       f"treat the verdict with caution.", icon=":material/help:")
    sentence = (f"score {row.score:.4f} is too close to the threshold {res['threshold']:.4f} to decide"
                if row.verdict == "uncertain" else explain(float(row.score), float(res["threshold"])))
    st.markdown(sentence[:1].upper() + sentence[1:] + ".  \n"
                f"**Keypoints:** {row.geometry}.  \n**Learned distance:** {row.distance:.4f}")
