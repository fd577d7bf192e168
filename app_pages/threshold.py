"""Threshold: choose the run's decision threshold on its validation pairs and save it."""

import json

import streamlit as st

from app_pages import _ui
from siamese_core import dashboard as dash
from siamese_core.errors import SiameseError
from siamese_core.runs import save_threshold

st.title("Threshold")
rid, run_dir, cfg = _ui.require_finished_run()
try:
    saved_info = json.loads((run_dir / "threshold.json").read_text())
    saved = float(saved_info["threshold"])
except (OSError, ValueError, KeyError, TypeError):
    saved_info, saved = {"source": "none"}, None
st.markdown(f"Run **{rid}** ({cfg.model.preset} preset on `{cfg.dataset}`). Saved threshold: "
            + (f"**{saved:.4f}** ({saved_info.get('source', '?')})" if saved is not None else "none yet")
            + ". Everything below uses the run's stored validation scores; the model is not run again.")
_ui.score_note(cfg.model.preset, saved)

try:
    ev_all = _ui.evaluation(rid, False)
except SiameseError as e:
    _ui.error(e)
    st.stop()
exclude = False
if ev_all["n_identical"] and ev_all["n_identical"] < len(ev_all["scores"]):
    exclude = st.toggle(f"Leave out the {ev_all['n_identical']} identical pairs (an image with itself)", value=True,
                        key="thr_exclude_identical",
                        help="They are trivially 'same' and flatter every metric; the calibration leaves them out too.")
ev = _ui.evaluation(rid, True) if exclude else ev_all
sweep, sug, scores, labels = ev["sweep"], ev["suggest"], ev["scores"], ev["labels"]
if saved is None:
    saved = float(sug.best_accuracy)
lo, hi, step = dash.slider_spec(scores, [saved, sug.best_f1, sug.best_accuracy, sug.target_precision])

if st.session_state.get("thr_for") != rid or "thr_slider" not in st.session_state:
    st.session_state["thr_for"] = rid
    st.session_state["thr_slider"] = float(saved)
st.session_state["thr_slider"] = float(min(max(st.session_state["thr_slider"], lo), hi))


def _snap(value: float) -> None:
    st.session_state["thr_slider"] = float(value)


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
    if bcols[-1].button("Save this threshold", key="thr_save", type="primary", icon=":material/save:",
                        width="stretch", help="Compare and the command line use the saved threshold"):
        try:
            save_threshold(run_dir, float(t), source="user")
        except OSError as e:
            _ui.error(SiameseError(f"cannot save the threshold ({e.strerror or e})"))
        else:
            _ui.flash("success", f"Saved threshold {t:.4f} for run {rid}; Compare and `score` now use it.")
            st.rerun()

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
            f"<b>TN {m.tn}</b> of {m.n} validation pairs</div>", unsafe_allow_html=True)

g1, g2 = st.columns(2)
g1.plotly_chart(dash.confusion_figure(m), key="thr_matrix")
hist = dash.histogram_data(scores, labels, lo, hi)
g2.plotly_chart(dash.histogram_figure(hist, t), key="thr_hist")
fpr_now = m.fp / (m.fp + m.tn) if (m.fp + m.tn) else float("nan")
g3, g4 = st.columns(2)
g3.plotly_chart(dash.roc_figure(*ev["roc"], point=(fpr_now, m.recall)), key="thr_roc")
g4.plotly_chart(dash.pr_figure(*ev["pr"], point=(m.recall, m.precision) if m.tp + m.fp else None), key="thr_pr")

# --- mistakes at this threshold ---------------------------------------------------------------------------
st.subheader("Pairs misclassified at this threshold")
wrong = dash.misclassified(scores, labels, t, limit=12)
try:
    ds = _ui.dataset(cfg.dataset)
except SiameseError as e:
    st.info(f"The run's dataset is not available, so its images cannot be shown ({dash.user_message(e, _ui.workspace())}).")
    st.stop()
if ds.size != cfg.model.size:
    st.caption(f"Note: dataset `{cfg.dataset}` now holds {ds.size} px tiles; the run was trained on {cfg.model.size} px.")
tab_fn, tab_fp = st.tabs([f"Same place judged different ({wrong['n_fn']})",
                          f"Different places judged same ({wrong['n_fp']})"])
groups = ds.groups
for tab, key in ((tab_fn, "fn"), (tab_fp, "fp")):
    with tab:
        pos = wrong[key]
        if not pos:
            st.caption("None at this threshold.")
            continue
        if wrong[f"n_{key}"] > len(pos):
            st.caption(f"The {len(pos)} most confident mistakes of {wrong[f'n_{key}']}.")
        a, b = ev["a"][pos], ev["b"][pos]
        valid = [(int(i), int(j)) for i, j in zip(a, b)]
        imgs = _ui.tiles(ds, [x for pair in valid for x in pair])
        PER_ROW = 4
        for start in range(0, len(pos), PER_ROW):
            cols = st.columns(PER_ROW)
            for col, k, (i, j) in zip(cols, pos[start:start + PER_ROW], valid[start:start + PER_ROW]):
                with col.container(border=True):
                    if i not in imgs or j not in imgs:
                        st.caption(f"images #{i}, #{j} are not in the dataset any more")
                        continue
                    c1, c2 = st.columns(2)
                    c1.image(imgs[i], caption=f"#{i} · g{groups[i]}", width="stretch")
                    c2.image(imgs[j], caption=f"#{j} · g{groups[j]}", width="stretch")
                    st.caption(f"score {scores[k]:.4f} ({'>' if scores[k] > t else '≤'} {t:.4f})")
