"""Home / data: the workspace at a glance, the active dataset, importing tiles from every source, deleting datasets."""

import pandas as pd
import streamlit as st

from app_pages import ui
from app_pages import views as dash
from siamese_core.core.config import DISTORTIONS, DataConfig, check_import_path
from siamese_core.core.errors import SiameseError
from siamese_core.data.sources.hf import download_hub

ws = ui.workspace()
st.title("Do these two tiles show the same place?")
st.markdown(
    "A Siamese network compares two satellite or aerial tiles and gives a **score: lower = more alike**. "
    "Build a dataset of tiles and their rotated variants here, look at them on **Triplets** and **Pairs**, "
    "train on **Train**, then judge your own tiles on **Compare** and choose the decision threshold on "
    "**Threshold**.")

datasets = dash.dataset_rows(ws)
runs = dash.run_rows(ws)
c1, c2, c3 = st.columns(3)
c1.metric("Datasets", len(datasets))
c2.metric("Runs", len(runs))
c3.metric("Finished runs", sum(r["has_model"] for r in runs))

# --- the active dataset ------------------------------------------------------------------------------
active = ui.active_dataset()
if active:
    row = next((r for r in datasets if r["dataset"] == active), None)
    with st.container(border=True):
        st.subheader(f"Active dataset: {dash.md_escape(active)}")
        if row:
            st.caption(f"{row['images']} images from {row['tiles']} tiles · {row['size']} px · "
                       f"{row['variants']} rotated variant(s) per tile · source {row['source']}"
                       + (f" · {row['skipped']} file(s) skipped" if row["skipped"] else ""))
        try:
            ds = ui.dataset(active)
            gt = ui.group_table(active)
            head = gt.head(8)
            imgs = ui.tiles(ds, head["first"])
            cols = st.columns(8)
            for col, (_, g) in zip(cols, head.iterrows()):
                col.image(imgs[int(g["first"])], caption=f"tile {int(g['group'])}", width="stretch")
        except (SiameseError, OSError, ValueError) as e:
            ui.error(e)
        ui.goto("triplets", "Browse its tiles and variants on Triplets", ":material/grid_view:")
else:
    st.info("No dataset yet: create one below (synthetic tiles take one click).", icon=":material/info:")

if datasets:
    with st.expander(f"All datasets ({len(datasets)})", expanded=False):
        st.dataframe(pd.DataFrame(datasets).drop(columns=["_mtime"]), hide_index=True, width="stretch")
        from siamese_core.runs.delete import delete_dataset
        ui.delete_control("dataset", [r["dataset"] for r in datasets], "home_del",
                           lambda name: delete_dataset(name, ws),
                           note="Runs trained on it keep their models, but can no longer resume.")

# --- create a dataset ----------------------------------------------------------------------------------
st.header("Create a dataset")
st.caption("Every tile is stored with rotated variants (and optional distortions): a tile and its variants show "
           "the same place. A dataset is written completely or not at all.")
taken = [r["dataset"] for r in datasets]


def options(prefix: str, default_name: str, default_limit: int = 0, limit_help: str = "0 = all"):
    """Name and build options shared by every source form; returns a dict of DataConfig fields."""
    name = st.text_input("Dataset name", value=dash.unique_name(default_name, taken), key=f"{prefix}_name",
                         help="Letters, digits, '.', '_' or '-'.")
    a, b, c = st.columns(3)
    limit = a.number_input("Max tiles", min_value=0, value=default_limit, step=50, key=f"{prefix}_limit",
                           help=limit_help)
    size = b.number_input("Tile size (px)", min_value=16, max_value=1024, value=128, step=16, key=f"{prefix}_size")
    variants = c.number_input("Rotated variants per tile", min_value=0, max_value=16, value=2, key=f"{prefix}_variants")
    distort = st.multiselect("Extra distortions on every variant", DISTORTIONS, key=f"{prefix}_distort")
    return name.strip(), dict(limit=int(limit), size=int(size), variants=int(variants), distortions=tuple(distort))


def build(name: str, cfg_fields: dict, *, zip_upload=None, keep: tuple = ()):
    """Build with a progress bar; one-line errors; make the new dataset active."""
    from siamese_core.data.store import build_dataset
    bar = st.progress(0.0, text="Starting…")
    skipped: list[tuple[str, str]] = []

    def progress(done, total):
        if total:
            bar.progress(min(1.0, done / total), text=f"Importing tiles: {done} / {total}")
        else:
            bar.progress((done % 100) / 100, text=f"Importing tiles: {done}")

    try:
        if zip_upload is not None:
            from siamese_core.data.uploads import build_from_zip
            ds, res = build_from_zip(zip_upload, name, ws, zip_name=zip_upload.name, progress=dash.Throttle(progress),
                                     on_skip=lambda f, why: skipped.append((f, why)), **cfg_fields)
            skipped[:0] = res.skipped
        else:
            if cfg_fields.get("path"):
                check_import_path(cfg_fields["path"], ws)  # server paths: only under the configured roots
            cfg = DataConfig(**cfg_fields)
            ds = build_dataset(cfg, name, ws, progress=dash.Throttle(progress),
                               on_skip=lambda f, why: skipped.append((f, why)))
    except (SiameseError, OSError) as e:
        bar.empty()
        ui.error(e, keep=keep)
        return
    bar.empty()
    info = ds.info
    ui.flash("success", f"Dataset **{dash.md_escape(name)}** created: {info['images']} images from "
                        f"{info['groups']} tiles" + (f"; {len(skipped)} file(s) skipped" if skipped else "")
                        + ". It is now the active dataset.")
    if skipped:
        lines = "\n".join(f"- {dash.md_escape(dash.scrub_paths(why, ws, keep))}" for _, why in skipped[:10])
        more = f"\n- … and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        ui.flash("warning", f"Skipped files:\n{lines}{more}")
    ui.select_dataset(name)
    st.rerun()


def path_form(prefix: str, source: str, button: str, placeholder: str, missing: str) -> None:
    """A form for a source read from a folder on the server (folder, pix2pix)."""
    with st.form(f"{prefix}_form"):
        path = st.text_input("Folder path on the server", key=f"{prefix}_path", placeholder=placeholder,
                             help="Only inside the workspace or a folder listed in SIAMESE_IMPORT_ROOTS "
                                  "(set before starting the dashboard)")
        name, fields = options(prefix, source)
        go = st.form_submit_button(button, type="primary", key=f"{prefix}_go")
    if go:
        if not path.strip():
            st.error(missing)
        else:
            build(name, dict(source=source, path=path.strip(), **fields), keep=(path.strip(),))


tabs = st.tabs(["Synthetic", "Folder", "Zip upload", "pix2pix", "Parquet", "Hugging Face hub"])

with tabs[0]:
    st.markdown("Procedural aerial-looking tiles, generated offline in seconds. Good for trying the whole tool.")
    with st.form("home_syn_form"):
        name, fields = options("home_syn", "synthetic", 600, "Synthetic tiles to draw (0 = 600)")
        seed = st.number_input("Seed", min_value=0, value=0, key="home_syn_seed")
        go = st.form_submit_button("Create synthetic dataset", type="primary", key="home_syn_go",
                                   icon=":material/auto_awesome:")
    if go:
        build(name, dict(source="synthetic", seed=int(seed), **fields))

with tabs[1]:
    st.markdown("Any folder of image tiles on the server (searched recursively: JPEG, PNG, TIFF, BMP, WebP). "
                "Unreadable files are skipped and listed.")
    path_form("home_folder", "folder", "Import folder", "/data/tiles", "Enter the folder that holds the tiles.")

with tabs[2]:
    from siamese_core.data.uploads import MAX_MEMBERS, MAX_TOTAL_BYTES
    st.markdown(f"A .zip of image tiles from your computer (up to 500 MB). It is unpacked into a temporary "
                f"folder that is removed afterwards. For safety, archives with paths outside the archive "
                f"(`../`, absolute), nested archives or more than {MAX_MEMBERS:,} files / "
                f"{MAX_TOTAL_BYTES / 1024 ** 3:g} GB uncompressed are refused; symbolic links are skipped.")
    with st.form("home_zip_form"):
        up = st.file_uploader("Zip of tiles", type=["zip"], key="home_zip_upload", max_upload_size=500)
        name, fields = options("home_zip", "upload")
        go = st.form_submit_button("Import zip", type="primary", key="home_zip_go")
    if go:
        if up is None:
            st.error("Choose a .zip file first.")
        else:
            build(name, fields, zip_upload=up)

with tabs[3]:
    st.markdown("A pix2pix-style folder: each image is a satellite | map pair side by side; the left "
                "(satellite) half is used.")
    path_form("home_p2p", "pix2pix", "Import pix2pix folder", "/data/maps/train",
              "Enter the folder that holds the side-by-side images.")

with tabs[4]:
    st.markdown("Local parquet files in the Hugging Face `huggan/maps` layout (an image column of "
                "`{bytes, path}` structs). A file or a folder searched for `*.parquet`.")
    with st.form("home_pq_form"):
        path = st.text_input("Parquet file or folder on the server", key="home_pq_path",
                             placeholder="/data/huggan-maps/data")
        column = st.text_input("Image column", key="home_pq_column", placeholder="imageA (detected when empty)")
        name, fields = options("home_pq", "parquet")
        go = st.form_submit_button("Import parquet", type="primary", key="home_pq_go")
    if go:
        if not path.strip():
            st.error("Enter a parquet file or a folder of parquet files.")
        else:
            build(name, dict(source="hf-parquet", path=path.strip(), column=column.strip(), **fields),
                  keep=(path.strip(),))

with tabs[5]:
    st.markdown("Download a dataset's parquet files from the Hugging Face hub (about 1.9 GB for "
                "`huggan/maps`; cached and resumable), then import it. Needs network access.")
    with st.form("home_hub_form"):
        repo = st.text_input("Hub dataset", value="huggan/maps", key="home_hub_repo")
        name, fields = options("home_hub", "maps", 1000)
        go = st.form_submit_button("Download and import", type="primary", key="home_hub_go",
                                   icon=":material/cloud_download:")
    if go:
        bar = st.progress(0.0, text="Contacting the hub…")

        def dl(done, total):
            bar.progress(min(1.0, done / total) if total else 0.0, text=f"Downloading files: {done} / {total or '?'}")

        try:
            download_hub(repo.strip(), progress=dl)
        except SiameseError as e:
            bar.empty()
            ui.error(e)
        else:
            bar.empty()
            build(name, dict(source="hf-hub", repo_id=repo.strip(), **fields))
