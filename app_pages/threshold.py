"""Threshold: choose the run's decision threshold on stored scores and save it.

The scores to tune on ("Scores to tune on"): an unfused run's calibration pairs (where its threshold is fitted;
the test pairs' numbers at the same threshold are shown beside them: places never used for training or the
threshold; a run from before the test split has validation pairs only); a fused run's calibration
pairs (one calibrated on labelled pairs, with ``calibration_scores.npz``: the fused scores, what ``score``
and Compare output), optionally restricted to some kinds of pair; and any stored evaluation of the run
(``evaluate --run R --dataset D`` or ``--pairs CSV``). The bundled run, which ships without validation
scores, can be evaluated on the active dataset from here. The model is not run again to sweep.

"Drag to explore" is a Plotly figure with its own slider: its steps are precomputed, so the matrix and
its counts follow the handle in the browser while it is dragged; the Streamlit slider below it sets (and
saves) the threshold on release.
"""

from pathlib import Path

import numpy as np
import streamlit as st

from app_pages import figures, ui
from app_pages import views as dash
from siamese_core.core.errors import SiameseError
from siamese_core.judge.fusion import band_of

THUMB = 256  # longest side of a calibration image in the mistakes gallery


@st.cache_data(max_entries=256, show_spinner=False)
def _thumb(path: str, stamp: float):
    """(small RGB array, None) of an image file, or (None, one-line reason): never raises."""
    if not path:
        return None, "no image path stored with this run"
    try:
        import cv2

        from siamese_core.data.images import decode_image
        img = decode_image(path, max_side=THUMB)
        h, w = img.shape[:2]
        if max(h, w) > THUMB:
            f = THUMB / max(h, w)
            img = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        return img, None
    except Exception as e:  # noqa: BLE001 - a gallery cell shows a caption, never a traceback
        return None, dash.user_message(e, ui.workspace())


def _kind_label(kind: str) -> str:
    return kind or "no kind"


st.title("Threshold")
rid, run, cfg = ui.require_finished_run(scores=False)
bundled = run.is_bundled
saved_info = run.threshold_info() or {"source": "none", "threshold": None}
saved = saved_info["threshold"]
sources = ui.score_sources(rid)
active_ds = ui.active_dataset()
offer_demo = bundled and active_ds is not None and f"eval:dataset-{active_ds}" not in sources


def _evaluate_demo() -> None:
    """The button that scores the bundled run on pairs of the active dataset (stored in the workspace)."""
    if not st.button(f"Evaluate the bundled model on dataset {active_ds}", key="thr_eval_demo",
                     icon=":material/play_arrow:", type="secondary" if sources else "primary",
                     help="Scores up to 2,000 pairs drawn from the dataset (each image with another view of its "
                          "place, and with an image of another place) the way Compare does, once; the scores are "
                          "stored in the workspace (the bundled run is read-only)."):
        return
    bar = st.progress(0.0, text="Loading the model…")
    try:
        from siamese_core.judge.calibration import evaluate_dataset
        scorer = ui.scorer(rid)
        res = evaluate_dataset(scorer, ui.dataset(active_ds), ui.workspace(), progress=dash.Throttle(
            lambda d, n: bar.progress(min(1.0, d / max(n, 1)), text=f"Scoring pairs of {active_ds}: {d}/{n}")))
    except (SiameseError, OSError) as e:
        bar.empty()
        ui.error(e)
        return
    st.session_state["_thr_eval_pending"] = f"eval:dataset-{active_ds}"
    ui.flash("success", f"Evaluated **{rid}** on {res['kinds']['all']['pairs']} pairs of dataset **{active_ds}**; "
                         f"tune on them below.")
    st.rerun()


st.markdown(f"Run **{rid}** ({cfg.model.preset} preset on `{cfg.dataset}`). Saved threshold: "
            + (f"**{saved:.4f}** ({saved_info.get('source', '?')})" if saved is not None else "none yet") + ".")
if not sources:
    if offer_demo:
        st.info(f"The bundled run **{rid}** ships without validation scores: its numbers are in its model card "
                f"(siamese_core/pretrained/MODEL_CARD.md). Evaluate it on dataset **{active_ds}** to tune a threshold "
                f"on its scores here (`python -m siamese_core evaluate --dataset {active_ds}` does the same).",
                icon=":material/info:")
        _evaluate_demo()
        st.stop()
    ui.require_finished_run()  # today's message for a run with nothing to sweep; stops
    st.stop()

keys = list(sources)
default = keys[0]
if st.session_state.get("thr_eval_for") != rid or st.session_state.get("thr_eval") not in keys:
    st.session_state["thr_eval_for"] = rid
    st.session_state["thr_eval"] = default
pending = st.session_state.pop("_thr_eval_pending", None)
if pending in keys:
    st.session_state["thr_eval"] = pending
choice = st.selectbox("Scores to tune on", keys, key="thr_eval", format_func=lambda k: sources[k],
                      help="The sweep, the matrix, the curves and the mistakes below use these pairs' stored scores. "
                           "Store more with `python -m siamese_core evaluate --run RUN --dataset NAME` "
                           "(or `--pairs LABELLED.csv`).")
if offer_demo:
    _evaluate_demo()
fused = choice == "calibration"
gallery_dataset = None  # the dataset whose rows ev["a"], ev["b"] are (val and dataset evaluations)
if fused:
    try:
        cal_all = ui.calibration(rid)
    except SiameseError as e:
        ui.error(e)
        st.stop()
    what = (f"Everything below sweeps the fused scores of {cal_all['n_all']} calibration pairs: learned distance "
            f"+ keypoints (what `score` and Compare output); the model is not run again.")
    word = "calibration"
elif choice == "val":
    has_test = run.has_test_scores()
    if has_test:
        what = ("Everything below sweeps the run's stored scores of its **calibration pairs** (places held out from "
                "training; the threshold is fitted on them); the **test pairs**' numbers at the same threshold "
                "follow the matrix. The model is not run again.")
        word = "calibration"
    else:
        what = ("Everything below uses the run's stored scores of its **validation pairs** (the threshold was fitted "
                "on them: optimistic; this run has no test pairs). The model is not run again.")
        word = "validation"
    gallery_dataset = cfg.dataset
else:
    try:
        ev = ui.stored_evaluation(rid, choice.split(":", 1)[1])
    except SiameseError as e:
        ui.error(e)
        st.stop()
    info = ev["info"]
    when = str(info.get("created", "?"))[:16].replace("T", " ")
    how = "fused scores (learned distance + keypoints)" if info.get("fused") else "scores"
    if ev["dataset"]:
        gallery_dataset = ev["dataset"]
        what = (f"Everything below sweeps the stored {how} of {len(ev['scores'])} pairs drawn from dataset "
                f"`{ev['dataset']}` (evaluated {when}); the model is not run again.")
    else:
        what = (f"Everything below sweeps the stored {how} of {len(ev['scores'])} labelled pairs of "
                f"`{Path(str(info.get('pairs_csv', choice))).name}` (evaluated {when}); the model is not run again.")
    word = "evaluation"
st.markdown(what)
ui.score_note(cfg.model.preset, saved, fused=run.has_fusion() if not fused else True)

if fused:
    kinds_all = cal_all["kinds"]
    ev = cal_all
    if len(kinds_all) > 1:
        options = list(kinds_all)
        if st.session_state.get("thr_kinds_for") != rid or "thr_kinds" not in st.session_state:
            st.session_state["thr_kinds_for"] = rid
            st.session_state["thr_kinds"] = options
        st.session_state["thr_kinds"] = [k for k in st.session_state["thr_kinds"] if k in kinds_all]
        chosen = st.multiselect("Kinds of pair to sweep", options, key="thr_kinds",
                                format_func=lambda k: f"{_kind_label(k)} ({kinds_all[k]})",
                                help="A threshold that suits one kind of pair (e.g. two dates) may not suit another "
                                     "(e.g. rotated copies); the saved threshold applies to every pair.")
        if not chosen:
            st.info("Pick at least one kind of pair to sweep.", icon=":material/info:")
            st.stop()
        if set(chosen) != set(options):
            ev = ui.calibration(rid, chosen)
    if "sweep" not in ev:  # pragma: no cover - an empty selection stops above
        st.info("No calibration pairs of the chosen kinds.", icon=":material/info:")
        st.stop()
elif choice == "val":
    try:
        ev_all = ui.evaluation(rid, False)
    except SiameseError as e:
        ui.error(e)
        st.stop()
    exclude = False
    if ev_all["n_identical"] and ev_all["n_identical"] < len(ev_all["scores"]):
        exclude = st.toggle(f"Leave out the {ev_all['n_identical']} identical pairs (an image with itself)", value=True,
                            key="thr_exclude_identical",
                            help="They are trivially 'same' and flatter every metric; the calibration leaves them out too.")
    ev = ui.evaluation(rid, True) if exclude else ev_all
    if ev.get("distorted"):
        st.caption("Tile B of each pair carries a seeded training distortion (the same in every run), so the "
                   "threshold is fitted on pairs like those the model learned from.")
left_out = ev["n_all"] - len(ev["scores"]) if choice == "val" else 0
sweep, sug, scores, labels = ev["sweep"], ev["suggest"], ev["scores"], ev["labels"]
if saved is None:
    saved = float(sug.best_accuracy)
lo, hi, step = dash.slider_spec(scores, [saved, sug.best_f1, sug.best_accuracy, sug.target_precision])

slider_for = (rid, choice)
if st.session_state.get("thr_for") != slider_for or "thr_slider" not in st.session_state:
    st.session_state["thr_for"] = slider_for
    st.session_state["thr_slider"] = float(saved)
st.session_state["thr_slider"] = float(min(max(st.session_state["thr_slider"], lo), hi))
t_now = float(st.session_state["thr_slider"])


def _snap(value: float) -> None:
    st.session_state["thr_slider"] = float(value)


# --- drag to explore: the matrix follows the handle in the browser ------------------------------------------
st.subheader("Drag to explore")
st.caption("Drag the handle under the matrix: the counts follow it in your browser while you drag, over 101 "
           "thresholds across the scores plus the saved and suggested ones. It starts at the threshold set below; "
           "to save one, set it with the slider below.")
d1, d2 = st.columns(2)
smin, smax = sweep.score_range
d1.plotly_chart(figures.live_confusion_figure(sweep, [*np.linspace(smin, smax, 101), sug.best_f1, sug.best_accuracy,
                                                   sug.target_precision], saved, active=t_now), key="thr_live")
hist = dash.histogram_data(scores, labels, lo, hi)
band = band_of(run.fusion_dict()) if fused else None  # the uncertain band moves with the threshold
d2.plotly_chart(figures.histogram_figure(hist, t_now, band), key="thr_hist")

snaps = [("Saved", saved, "thr_snap_saved", "the threshold saved for this run"),
         ("Best F1", sug.best_f1, "thr_snap_f1", "highest F1 for 'same place'"),
         ("Best accuracy", sug.best_accuracy, "thr_snap_acc", "highest accuracy"),
         (f"Precision ≥ {sug.target:g}", sug.target_precision, "thr_snap_prec",
          "the most recall with precision for 'same place' at or above the target")]
with st.container(border=True):
    t = st.slider("Threshold (score ≤ threshold → same place)", min_value=lo, max_value=hi, step=step,
                  format="%.4f", key="thr_slider")
    bcols = st.columns(len(snaps) + 1)
    for col, (label, value, key, help_) in zip(bcols, snaps):
        col.button(f"{label}: {value:.4f}" if value is not None else f"{label}: n/a", key=key, on_click=_snap,
                   args=(value,), disabled=value is None, help=help_, width="stretch")
    read_only = (f"The bundled run is read-only: calibrate a copy for your imagery with `python -m siamese_core "
                 f"calibrate --run {rid} --pairs LABELLED.csv --as NAME`, then tune and save its threshold here.")
    if bcols[-1].button("Save this threshold", key="thr_save", type="primary", icon=":material/save:",
                        width="stretch", disabled=bundled,
                        help=read_only if bundled else "Compare and the command line use the saved threshold"):
        try:
            run.save_threshold(float(t), source="user")
        except SiameseError as e:
            ui.error(e)
            st.caption(read_only)
        except OSError as e:
            ui.error(SiameseError(f"cannot save the threshold ({e.strerror or e})"))
        else:
            ui.flash("success", f"Saved threshold {t:.4f} for run {rid}; Compare and `score` now use it.")
            st.rerun()
    if bundled:
        st.caption(read_only)

m = sweep.at(t)
base = sweep.at(saved)


def _delta(now: float, then: float):
    return None if abs(t - saved) < 1e-12 else f"{now - then:+.3f} vs saved"


k1, k2, k3, k4, k5 = st.columns(5)
k1.metric("Accuracy", f"{m.accuracy:.3f}", _delta(m.accuracy, base.accuracy))
k2.metric("Precision (same)", f"{m.precision:.3f}", _delta(m.precision, base.precision),
          help="of the pairs judged same place, the fraction truly the same")
k3.metric("Recall (same)", f"{m.recall:.3f}", _delta(m.recall, base.recall),
          help="of the truly same pairs, the fraction judged same")
k4.metric("F1", f"{m.f1:.3f}", _delta(m.f1, base.f1))
k5.metric("ROC-AUC", "n/a" if ev["auc"] != ev["auc"] else f"{ev['auc']:.3f}", help="independent of the threshold")
st.markdown(f"<div id='thr-counts'>At {m.threshold:.4f}: <b>TP {m.tp}</b> · <b>FN {m.fn}</b> · <b>FP {m.fp}</b> · "
            f"<b>TN {m.tn}</b> of {m.n} {word} pairs"
            + (f" ({left_out} identical pairs left out)" if left_out else "") + "</div>", unsafe_allow_html=True)
if band is not None:
    und = band.outcome(scores, labels, t)
    st.markdown(f"<div id='thr-band'>Uncertain band {t - band.below:.4f}–{t + band.above:.4f} (the verdict says "
                f"<i>cannot tell</i> inside it): <b>{und['undecided']}</b> of {und['n']} {word} pairs undecided "
                f"({und['share']:.1%}); the {und['n'] - und['undecided']} decided are right for "
                f"<b>{und['accuracy']:.1%}</b>.</div>", unsafe_allow_html=True)

if choice == "val" and has_test:
    try:
        tev = ui.evaluation(rid, exclude, split="test")
    except SiameseError as e:
        ui.error(e)
        st.stop()
    tm = tev["sweep"].at(t)
    label = run.evaluation_pairs()["label"] if run.evaluation_pairs()["split"] == "test" else "test pairs"
    with st.container(border=True, key="thr_test"):
        st.markdown(f"**Test pairs at the same threshold** — {label}")
        q1, q2, q3, q4, q5 = st.columns(5)
        q1.metric("Test accuracy", f"{tm.accuracy:.3f}")
        q2.metric("Test precision (same)", f"{tm.precision:.3f}")
        q3.metric("Test recall (same)", f"{tm.recall:.3f}")
        q4.metric("Test F1", f"{tm.f1:.3f}")
        q5.metric("Test ROC-AUC", "n/a" if tev["auc"] != tev["auc"] else f"{tev['auc']:.3f}")
        t_left = tev["n_all"] - tm.n
        st.markdown(f"<div id='thr-test-counts'>At {tm.threshold:.4f}: <b>TP {tm.tp}</b> · <b>FN {tm.fn}</b> · "
                    f"<b>FP {tm.fp}</b> · <b>TN {tm.tn}</b> of {tm.n} test pairs"
                    + (f" ({t_left} identical pairs left out)" if t_left else "") + "</div>", unsafe_allow_html=True)

fpr_now = m.fp / (m.fp + m.tn) if (m.fp + m.tn) else float("nan")
g3, g4 = st.columns(2)
g3.plotly_chart(figures.roc_figure(*ev["roc"], point=(fpr_now, m.recall)), key="thr_roc")
g4.plotly_chart(figures.pr_figure(*ev["pr"], point=(m.recall, m.precision) if m.tp + m.fp else None), key="thr_pr")

def _mistakes(wrong: dict, card) -> None:
    """The two tabs of misclassified pairs, PER_ROW cards a row; ``card(k)`` draws pair ``k`` in its card."""
    tab_fn, tab_fp = st.tabs([f"Same place judged different ({wrong['n_fn']})",
                              f"Different places judged same ({wrong['n_fp']})"])
    for tab, key in ((tab_fn, "fn"), (tab_fp, "fp")):
        with tab:
            pos = wrong[key]
            if not pos:
                st.caption("None at this threshold.")
                continue
            if wrong[f"n_{key}"] > len(pos):
                st.caption(f"The {len(pos)} most confident mistakes of {wrong[f'n_{key}']}.")
            for start in range(0, len(pos), PER_ROW):
                for col, k in zip(st.columns(PER_ROW), pos[start:start + PER_ROW]):
                    with col.container(border=True):
                        card(k)


# --- mistakes at this threshold ---------------------------------------------------------------------------
st.subheader("Pairs misclassified at this threshold")
wrong = dash.misclassified(scores, labels, t, limit=12)
PER_ROW = 4
if gallery_dataset is None:  # pairs of image files (calibration or a labelled CSV): their paths, if stored
    no_images = not any(map(len, ev["path_a"])) and not any(map(len, ev["path_b"]))
    if no_images:
        st.caption("This run does not store the paths of its calibration images (the bundled run ships without "
                   "them), so each mistake shows its kind, score and keypoint inliers only." if fused else
                   "These pairs were stored without their image paths, so each mistake shows its kind, score and "
                   "keypoint inliers only.")
    def _paths_card(k):
        c1, c2 = st.columns(2) if not no_images else (None, None)
        for c, side in (((c1, "a"), (c2, "b")) if not no_images else ()):
            path = str(ev[f"path_{side}"][k])
            img, why = _thumb(path, dash.mtime(path) if path else 0.0)
            if img is None:
                c.caption(f"image {side.upper()} not shown: {why}")
            else:
                c.image(img, caption=dash.md_escape(Path(path).name), width="stretch")
        inl = ev["inliers"][k]
        st.caption(f"{dash.md_escape(_kind_label(str(ev['kind'][k])))} · score {scores[k]:.4f} "
                   f"({'>' if scores[k] > t else '≤'} {t:.4f}) · "
                   + ("inliers n/a" if not np.isfinite(inl) else f"{int(inl)} inliers"))

    _mistakes(wrong, _paths_card)
    st.stop()
try:
    ds = ui.dataset(gallery_dataset)
except SiameseError as e:
    st.info(f"Dataset `{gallery_dataset}` is not available, so the images of these pairs cannot be shown "
            f"({dash.user_message(e, ui.workspace())}).")
    st.stop()
changed = run.dataset_change(ui.workspace()) if choice == "val" else None
if changed:
    st.warning(f"{changed}: the images shown may not be the {word} pairs that were scored.",
               icon=":material/warning:")
elif choice == "val" and ds.size != cfg.model.size:
    st.caption(f"Note: dataset `{cfg.dataset}` now holds {ds.size} px tiles; the run was trained on {cfg.model.size} px.")
if choice != "val" and ev["info"].get("dataset_images") not in (None, len(ds.groups)):
    st.caption(f"Note: dataset `{gallery_dataset}` has changed since this evaluation ({ev['info']['dataset_images']} "
               f"images then, {len(ds.groups)} now): the images shown may not be the pairs that were scored.")
groups = ds.groups
imgs = ui.tiles(ds, sorted({int(x) for k in wrong["fn"] + wrong["fp"] for x in (ev["a"][k], ev["b"][k])}))


def _dataset_card(k):
    i, j = int(ev["a"][k]), int(ev["b"][k])
    if i not in imgs or j not in imgs:
        st.caption(f"images #{i}, #{j} are not in the dataset any more")
        return
    c1, c2 = st.columns(2)
    c1.image(imgs[i], caption=f"#{i} · g{groups[i]}", width="stretch")
    c2.image(imgs[j], caption=f"#{j} · g{groups[j]}", width="stretch")
    st.caption(f"score {scores[k]:.4f} ({'>' if scores[k] > t else '≤'} {t:.4f})")


_mistakes(wrong, _dataset_card)
