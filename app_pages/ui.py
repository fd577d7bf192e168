"""Streamlit glue shared by the pages: workspace, active dataset/run, caches, messages.

Everything that is not about Streamlit lives in :mod:`app_pages.views`. Caches are keyed by
the workspace, the artifact's name and its file's modification time, so a rebuilt dataset, a new
model or a re-saved threshold is picked up without restarting the app. Nothing here imports
TensorFlow; the model is only loaded inside :func:`scorer` (a ``st.cache_resource``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from app_pages import views as dash
from siamese_core.core.config import workspace_dir
from siamese_core.core.errors import SiameseError
from siamese_core.core.keys import file_stamp

POLL_S = 1.5  # live refresh period of the Train page while a job runs

PAGES = {
    "home": "app_pages/home.py",
    "triplets": "app_pages/triplets.py",
    "pairs": "app_pages/pairs.py",
    "train": "app_pages/train.py",
    "compare": "app_pages/compare.py",
    "search": "app_pages/search.py",
    "map": "app_pages/map.py",
    "batch": "app_pages/batch.py",
    "threshold": "app_pages/threshold.py",
}


def workspace() -> Path:
    return workspace_dir(None)


# --- messages -----------------------------------------------------------------------------------

def error(err: BaseException, keep: tuple[str, ...] = ()) -> None:
    """Show an exception as one line (no traceback, no server paths)."""
    st.error(dash.user_message(err, workspace(), keep), icon=":material/error:")


def flash(kind: str, text: str) -> None:
    """A message to show at the top of the next run (survives st.rerun)."""
    st.session_state.setdefault("_flash", []).append((kind, text))


def show_flash() -> None:
    for kind, text in st.session_state.pop("_flash", []):
        getattr(st, kind, st.info)(text)


def delete_control(kind: str, names: list[str], key: str, delete, note: str = "") -> None:
    """A picker and a Delete button, then a confirmation step (Yes, delete / Cancel) before ``delete(name)``
    runs; a refusal (e.g. a job uses it) is one error line, and nothing is deleted."""
    pending = st.session_state.get(f"{key}_pending")
    if pending is None:
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        name = c1.selectbox(f"{kind.capitalize()} to delete", names, key=f"{key}_pick")
        if c2.button(f"Delete {kind}", key=f"{key}_delete", icon=":material/delete:", disabled=not names,
                     width="stretch"):
            st.session_state[f"{key}_pending"] = name
            st.rerun()
        return
    st.warning(f"Delete {kind} **{pending}**? {note} This cannot be undone.", icon=":material/warning:")
    c1, c2 = st.columns(2)
    if c1.button("Yes, delete", key=f"{key}_confirm", type="primary", icon=":material/delete_forever:"):
        st.session_state.pop(f"{key}_pending", None)
        try:
            delete(pending)
        except SiameseError as e:
            error(e)
            return
        flash("success", f"Deleted {kind} **{pending}**.")
        st.rerun()
    if c2.button("Cancel", key=f"{key}_cancel"):
        st.session_state.pop(f"{key}_pending", None)
        st.rerun()


def goto(page: str, label: str, icon: str | None = None) -> None:
    st.page_link(PAGES[page], label=label, icon=icon)


# --- active dataset and run (session state + ?dataset=..&run=..) ------------------------------------

def _pick(options: list[str], *candidates) -> str | None:
    for c in candidates:
        if c and c in options:
            return c
    return options[0] if options else None


def select_dataset(name: str) -> None:
    """Make ``name`` the active dataset from inside a page (applied at the top of the next run)."""
    st.session_state["_pending_dataset"] = name


def select_run(run_id: str) -> None:
    st.session_state["_pending_run"] = run_id


def bootstrap() -> None:
    """Run at the top of every page (from streamlit_app.py): demo data, the selectors, the URL."""
    ws = workspace()
    if not st.session_state.get("_swept"):  # what killed processes left in the workspace (their writers are gone)
        st.session_state["_swept"] = True
        from siamese_core.core.sweep import sweep_workspace
        sweep_workspace(ws)
    if not st.session_state.get("_demo_checked"):
        st.session_state["_demo_checked"] = True
        try:
            with st.spinner("First launch: creating a small synthetic dataset…"):
                made = dash.ensure_demo_dataset(ws)
            if made:
                flash("success", f"Created the synthetic dataset **{made}** ({dash.DEMO_TILES} tiles) so every "
                                 f"page has something to show. Import your own tiles on **Home / data**.")
        except (SiameseError, OSError) as e:
            error(e)

    datasets = [r["dataset"] for r in dash.dataset_rows(ws)]
    runs = dash.run_rows(ws)
    run_ids = [r["run"] for r in runs]
    qp = st.query_params
    first = "_selection_ready" not in st.session_state
    st.session_state["_selection_ready"] = True

    ds = _pick(datasets, st.session_state.pop("_pending_dataset", None), st.session_state.get("app_dataset"),
               qp.get("dataset") if first else None, st.session_state.get("active_dataset"))
    if ds is not None:
        st.session_state["app_dataset"] = ds
    rid = _pick(run_ids, st.session_state.pop("_pending_run", None), st.session_state.get("app_run"),
                qp.get("run") if first else None, st.session_state.get("active_run"), dash.default_run(runs, ds))
    if rid is not None:
        st.session_state["app_run"] = rid

    by_id = {r["run"]: r for r in runs}
    with st.sidebar:
        st.markdown("### Active selection")
        if datasets:
            st.selectbox("Dataset", datasets, key="app_dataset",
                         help="Used by Triplets, Pairs and Train. Kept in the URL (?dataset=…).")
        else:
            st.caption("No dataset yet — create one on **Home / data**.")
        if run_ids:
            st.selectbox("Run", run_ids, key="app_run",
                         format_func=lambda r: f"{r} · {by_id[r]['status']} · {by_id[r]['preset']}",
                         help="Used by Compare and Threshold. Kept in the URL (?run=…).")
        else:
            st.caption("No run yet — train one on **Train**.")
        job = _active_job(ws)
        if job:
            st.info(f"Training **{job}**…", icon=":material/model_training:")
        st.caption(f"Workspace: `{ws.name}` · lower score = more alike")

    st.session_state["active_dataset"] = st.session_state.get("app_dataset") if datasets else None
    st.session_state["active_run"] = st.session_state.get("app_run") if run_ids else None
    want = {"dataset": st.session_state["active_dataset"], "run": st.session_state["active_run"]}
    for k, v in want.items():
        if v and qp.get(k) != v:
            qp[k] = v
        elif not v and k in qp:
            del qp[k]


def _active_job(ws) -> str | None:
    from siamese_core.runs.lock import active_job
    try:
        return active_job(ws)
    except OSError:
        return None


def active_dataset() -> str | None:
    name = st.session_state.get("active_dataset")
    from siamese_core.data.store import list_datasets
    have = list_datasets(workspace())
    return name if name in have else (have[0] if have else None)


def active_run() -> str | None:
    rid = st.session_state.get("active_run")
    from siamese_core.runs.registry import list_runs
    have = list_runs(workspace())
    return rid if rid in have else (have[-1] if have else None)


def require_dataset():
    """The active Dataset, or a helpful message and st.stop()."""
    name = active_dataset()
    if name is None:
        st.info("There is no dataset yet. Create one on **Home / data** (synthetic tiles take one click).",
                icon=":material/info:")
        goto("home", "Go to Home / data", ":material/home:")
        st.stop()
    try:
        return dataset(name)
    except (SiameseError, OSError, ValueError) as e:
        error(e)
        st.stop()


def run(run_id: str):
    """The :class:`~siamese_core.runs.run.Run` of ``run_id`` in the workspace (not opened: it may be gone)."""
    from siamese_core.runs.registry import run_path
    from siamese_core.runs.run import Run
    return Run(run_path(run_id, workspace()))


def require_finished_run(scores: bool = True):
    """(run_id, Run, RunConfig) of the active run if it has a model (and, with ``scores``, scores to
    show: validation scores, or the fused scores of its calibration pairs), else a message and st.stop()."""
    rid = active_run()
    if rid is None:
        st.info("There is no trained run yet. Train one on **Train** (for a first try on a CPU, set a few epochs "
                "and a small number of steps per epoch).", icon=":material/info:")
        goto("train", "Go to Train", ":material/model_training:")
        st.stop()
    r = run(rid)
    try:
        cfg = r.config
    except (SiameseError, OSError, ValueError) as e:
        error(e)
        st.stop()
    has_scores = r.has_val_scores() or r.has_calibration_scores()
    if scores and r.has_model() and not has_scores and r.is_bundled:
        st.info(f"The bundled run **{rid}** ships without validation scores: its numbers are in its model card "
                f"(siamese_core/pretrained/MODEL_CARD.md). Train a run, or pick one in the sidebar, to tune a threshold "
                f"here; `python -m siamese_core calibrate --run {rid} --pairs LABELLED.csv --as NAME` fits it to "
                f"your imagery.", icon=":material/info:")
        st.stop()
    if not r.has_model() or (scores and not has_scores):
        status = r.status().get("status", "unknown")
        st.info(f"Run **{rid}** has no trained model yet (status: {status}). Wait for it to finish on **Train**, "
                f"or pick a finished run in the sidebar.", icon=":material/hourglass_top:")
        goto("train", "Go to Train", ":material/model_training:")
        st.stop()
    return rid, r, cfg


# --- caches -------------------------------------------------------------------------------------------

@st.cache_resource(max_entries=8, show_spinner=False)
def _dataset(ws: str, name: str, stamp: float):
    from siamese_core.data.store import open_dataset
    ds = open_dataset(name, ws)
    ds.manifest  # read once, kept with the memmap
    return ds


def dataset(name: str):
    from siamese_core.data.store import datasets_dir
    ws = workspace()
    return _dataset(str(ws), name, dash.mtime(datasets_dir(ws) / name / "dataset.json"))


@st.cache_data(max_entries=8, show_spinner=False)
def _group_table(ws: str, name: str, stamp: float):
    return dash.group_table(_dataset(ws, name, stamp).manifest)


def group_table(name: str):
    from siamese_core.data.store import datasets_dir
    ws = workspace()
    return _group_table(str(ws), name, dash.mtime(datasets_dir(ws) / name / "dataset.json"))


def tiles(ds, indices) -> dict[int, np.ndarray]:
    """Only the requested rows of the memmap (a page), never the whole array."""
    return dash.read_rows(ds.images, indices)


@st.cache_data(max_entries=16, show_spinner="Drawing pairs…")
def _pairs(ws: str, name: str, stamp: float, cfg: dict):
    from siamese_core.core.config import PairsConfig
    from siamese_core.data.pairs import make_pairs
    p = make_pairs(_dataset(ws, name, stamp).groups, PairsConfig.from_dict(cfg))
    return {"a": p.a, "b": p.b, "label": p.label, "val": p.val, "test": p.test, "counts": p.counts()}


def pairs(name: str, cfg) -> dict:
    from siamese_core.data.store import datasets_dir
    ws = workspace()
    return _pairs(str(ws), name, dash.mtime(datasets_dir(ws) / name / "dataset.json"), cfg.to_dict())


@st.cache_resource(max_entries=2, show_spinner="Loading the model (TensorFlow)…")
def _scorer(ws: str, run_id: str, stamp: tuple):
    from siamese_core.judge.inference import Scorer
    return Scorer.from_run(run_id, ws)


def scorer(run_id: str):
    """The run's Scorer, loaded once per model and verdict (key: workspace, run id, the mtimes of the model and of
    the verdict's files — a refitted fusion is picked up too)."""
    r = run(run_id)
    return _scorer(str(workspace()), run_id, (dash.mtime(r.model_path), *r.verdict_stamp()))


def bands_field(key: str):
    """A text field for which raster bands to read (as ``--bands`` takes them: ``4,3,2``, ``sentinel2``): the
    bands, or None (empty: each file's own red, green and blue, or its first bands). Text that is not bands is
    one error line, and the page stops there."""
    from siamese_core.data.rasters import BAND_PRESETS, parse_bands
    text = st.text_input("Raster bands", key=key, placeholder="e.g. 4,3,2 or sentinel2 (empty: each file's own RGB)",
                         help="For GeoTIFFs and other rasters with more than three bands: 1 band (grey) or 3 bands "
                              "(red,green,blue), counted from 1, as `--bands` takes them; presets: "
                              + ", ".join(f"{k} = {','.join(map(str, v))}" for k, v in BAND_PRESETS.items())
                              + ". Plain images (PNG, JPEG) ignore it.")
    try:
        return parse_bands(text)
    except SiameseError as e:
        error(e)
        st.stop()


def require_scorer(run_id: str):
    """:func:`scorer`, or the page stops here with the error's one line (a run that cannot be loaded)."""
    try:
        return scorer(run_id)
    except SiameseError as e:
        error(e)
        st.stop()


@st.cache_data(max_entries=8, show_spinner="Reading the run's scores…")
def _evaluation(ws: str, run_id: str, stamp: float, exclude_identical: bool, split: str = "val"):
    from siamese_core.learn.evaluate import ThresholdSweep, pr_curve, roc_auc, roc_curve, suggest_thresholds
    from siamese_core.runs.registry import run_path
    from siamese_core.runs.run import Run
    r = Run(run_path(run_id, ws))
    v = r.test_scores() if split == "test" else r.val_scores()
    keep = ~v["identical"] if exclude_identical and (~v["identical"]).any() else np.ones(len(v["score"]), bool)
    s, y = v["score"][keep], v["label"][keep]
    fpr, tpr, _ = roc_curve(s, y)
    prec, rec, _ = pr_curve(s, y)
    return {"scores": s, "labels": y, "a": v["a"][keep], "b": v["b"][keep], "n_identical": int(v["identical"].sum()),
            "sweep": ThresholdSweep(s, y), "roc": (fpr, tpr), "pr": (prec, rec), "auc": roc_auc(s, y),
            "suggest": suggest_thresholds(s, y), "distorted": v["distort_seed"] is not None, "n_all": len(v["score"])}


def evaluation(run_id: str, exclude_identical: bool, split: str = "val") -> dict:
    """The run's stored scores of its calibration (``val``) or ``test`` pairs, with the ThresholdSweep, curves and
    suggestions: computed once per version of the scores file."""
    r = run(run_id)
    path = r.test_scores_path if split == "test" else r.val_scores_path
    return _evaluation(str(workspace()), run_id, dash.mtime(path), exclude_identical, split)


@st.cache_data(max_entries=8, show_spinner="Reading calibration scores…")
def _calibration(ws: str, run_id: str, stamp: float, kinds: tuple | None):
    from siamese_core.learn.evaluate import ThresholdSweep, pr_curve, roc_auc, roc_curve, suggest_thresholds
    from siamese_core.runs.registry import run_path
    from siamese_core.runs.run import Run
    from siamese_core.runs.scores import CALIBRATION_KEYS
    v = Run(run_path(run_id, ws)).calibration_scores()
    n = len(v["score"])
    all_kinds = {str(k): int(c) for k, c in zip(*np.unique(v["kind"], return_counts=True))}
    keep = np.isin(v["kind"], list(kinds)) if kinds is not None else np.ones(n, bool)
    out = {k: v[k][keep] for k in CALIBRATION_KEYS}
    out.update(n_all=n, kinds=all_kinds, scores=out["score"], labels=out["label"])
    if keep.any():
        s, y = out["scores"], out["labels"]
        fpr, tpr, _ = roc_curve(s, y)
        prec, rec, _ = pr_curve(s, y)
        out.update(sweep=ThresholdSweep(s, y), roc=(fpr, tpr), pr=(prec, rec), auc=roc_auc(s, y),
                   suggest=suggest_thresholds(s, y))
    return out


def calibration(run_id: str, kinds=None) -> dict:
    """A fused run's calibration pairs (its calibration scores file): scores, labels, kind, image paths,
    evidence, and — for the pairs of the given ``kinds`` (all when None), if any — the ThresholdSweep, curves
    and suggestions. ``kinds`` maps every kind present to its number of pairs. Computed once per file
    version and kind selection (key: the file's mtime)."""
    key = None if kinds is None else tuple(sorted(str(k) for k in kinds))
    return _calibration(str(workspace()), run_id, dash.mtime(run(run_id).calibration_scores_path), key)


def score_note(preset: str | None, threshold: float | None = None, fused: bool = False) -> None:
    st.caption(dash.score_direction(preset, threshold, fused))


# --- scores to tune a threshold on (Threshold page) ---------------------------------------------------

def score_sources(run_id: str) -> dict:
    """What the Threshold page can sweep for this run, in order: {key: label}. ``val`` (the calibration pairs
    its threshold is fitted on; a run from before the test split: its validation pairs) for an unfused run,
    ``calibration`` (the labelled pairs its fusion was calibrated on) for a fused one, and ``eval:<stem>``
    for each stored evaluation (``evaluations/<stem>.npz``) scored the way the run scores now (fused or not)."""
    r = run(run_id)
    fused = r.has_calibration_scores()
    has_fusion = r.has_fusion()  # what the run's scorer outputs now: fused or not
    now = {"model": file_stamp(r.model_path), "fusion": r.verdict_key()}
    out = {}
    if fused:
        out["calibration"] = "Calibration pairs (fused scores, what the run was calibrated on)"
    elif r.has_val_scores():
        out["val"] = ("Calibration pairs (places held out from training; the threshold is fitted on them)"
                      if r.has_test_scores() else "Validation pairs (the threshold was fitted on them: optimistic)")
    for stem, info in r.stored_evaluations(workspace()).items():
        if bool(info.get("fused", has_fusion)) != has_fusion:  # scored before (or without) the run's fusion
            continue
        made = info.get("scored_with") or {}
        if made and (made.get("model") != now["model"] or made.get("fusion") != now["fusion"]):
            continue  # scored by an earlier model or fusion of this run: its numbers are not the run's now
        n = sum(e.get("pairs", 0) for k, e in info.get("kinds", {}).items() if k == "all" or len(info["kinds"]) == 1)
        when = str(info.get("created", ""))[:16].replace("T", " ")
        if info.get("dataset"):
            what = f"Dataset {info['dataset']}"
        else:
            what = f"Pairs {Path(str(info.get('pairs_csv', stem))).name}"
        out[f"eval:{stem}"] = f"{what}: {n or '?'} pairs (evaluated {when or '?'})"
    return out


@st.cache_data(max_entries=8, show_spinner="Reading the stored evaluation…")
def _stored_evaluation(ws: str, run_id: str, stem: str, stamp: float):
    from siamese_core.learn.evaluate import ThresholdSweep, pr_curve, roc_auc, roc_curve, suggest_thresholds
    from siamese_core.runs.registry import run_path
    from siamese_core.runs.run import Run
    v = Run(run_path(run_id, ws)).stored_evaluation(stem, ws)
    s, y = v["score"], v["label"]
    fpr, tpr, _ = roc_curve(s, y)
    prec, rec, _ = pr_curve(s, y)
    return {**v, "scores": s, "labels": y, "sweep": ThresholdSweep(s, y), "roc": (fpr, tpr), "pr": (prec, rec),
            "auc": roc_auc(s, y), "suggest": suggest_thresholds(s, y),
            "dataset": v["info"].get("dataset") if "a" in v and "b" in v else None}


def stored_evaluation(run_id: str, stem: str) -> dict:
    """A stored evaluation (``evaluations/<stem>.npz``): scores, labels, what to show its pairs with (dataset
    rows ``a``/``b`` and ``dataset``, or image paths), the ThresholdSweep, curves and suggestions; read once per
    file version."""
    ws = workspace()
    return _stored_evaluation(str(ws), run_id, stem, dash.mtime(run(run_id).stored_evaluation_path(stem, ws)))


def build_index(scorer, ds, what: str):
    """The search index of ``scorer``'s run over dataset ``ds``, built here with a progress bar when it is
    missing or stale (then a toast says why); a failure is one error line and stops the page."""
    from siamese_core.scale import search as srch
    bar = st.progress(0.0, text=f"{what}: {len(ds):,} images…")

    def progress(done, total):
        bar.progress(min(1.0, done / max(total, 1)), text=f"{what}: {done:,} / {total:,}")

    try:
        idx = srch.build_index(scorer, ds.name, workspace(), progress=progress)
    except SiameseError as e:
        bar.empty()
        error(e)
        st.stop()
    bar.empty()
    if idx.status != "reused":
        st.toast(idx.reason[:1].upper() + idx.reason[1:], icon=":material/database:")
    return idx
