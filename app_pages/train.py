"""Train: launch a background training job, watch its curves live, stop it, list, resume and delete runs."""

import pandas as pd
import streamlit as st

from app_pages import figures, ui
from app_pages import views as dash
from siamese_core.core.config import PRECISIONS, PRESETS, RunConfig, preset_defaults
from siamese_core.core.errors import SiameseError
from siamese_core.learn.devices import resolve_devices
from siamese_core.runs.delete import delete_run
from siamese_core.runs.jobs import launch_background
from siamese_core.runs.lock import active_job
from siamese_core.runs.registry import open_run

ws = ui.workspace()
st.title("Train")
st.caption("Training runs in a separate process (one job per workspace): you can leave this page, close the "
           "browser or use the other pages meanwhile. Curves refresh about every "
           f"{ui.POLL_S:g} s while a job runs.")

DEVICE_CHOICES = ["1", "2", "3", "4", "8", "all"]
PRESET_HELP = {
    "seed": "the reference model exactly: sigmoid score in [0, 1], threshold 0.2, RMSprop, no augmentation",
    "default": "this project's model: rotation-invariant embedding distance in [0, 2], calibrated threshold, "
               "Adam, on-the-fly augmentation",
}


def _defaults(preset: str) -> dict:
    pairs, _, train = preset_defaults(preset)
    return {"train_epochs": train.epochs, "train_batch": train.batch_size, "train_lr": float(train.learning_rate),
            "train_steps": 0, "train_identical": pairs.identical, "train_val": float(pairs.val_fraction),
            "train_test": float(pairs.test_fraction),
            "train_negatives": pairs.negatives, "train_pair_limit": pairs.limit, "train_seed": 0,
            "train_augment": bool(train.augment), "train_precision": train.precision,
            "train_devices": str(train.devices)}


def _reset_form():
    st.session_state.update(_defaults(st.session_state.get("train_preset") or "default"))


# --- launch ----------------------------------------------------------------------------------------
dataset = ui.active_dataset()
if dataset is None:
    st.info("Create a dataset on **Home / data** first; training needs one.", icon=":material/info:")
    ui.goto("home", "Go to Home / data", ":material/home:")
else:
    with st.container(border=True):
        st.markdown(f"**New run on dataset `{dataset}`** (change the dataset in the sidebar)")
        if "train_preset" not in st.session_state:
            st.session_state["train_preset"] = "default"
        preset = st.segmented_control("Preset", list(PRESETS), key="train_preset", required=True,
                                      on_change=_reset_form)
        st.caption(f"**{preset}**: {PRESET_HELP[preset]}.")
        if "train_epochs" not in st.session_state:
            _reset_form()
        with st.form("train_form", enter_to_submit=False):  # a launch costs minutes: only the button starts one
            c1, c2, c3, c4 = st.columns(4)
            c1.number_input("Epochs", 1, 1000, key="train_epochs")
            c2.number_input("Batch size", 1, 4096, key="train_batch")
            c3.number_input("Learning rate", 0.0, 1.0, step=0.0005, format="%.5f", key="train_lr",
                            help="0 = the optimizer's default (0.001)")
            c4.number_input("Steps per epoch", 0, None, step=10, key="train_steps",
                            help="0 = one pass over the training pairs; a small number gives a quick trial run")
            d1, d2, d3, d4, d5 = st.columns(5)
            d1.toggle("Identical pairs (i, i)", key="train_identical")
            d2.slider("Calibration fraction", 0.05, 0.5, step=0.05, key="train_val",
                      help="Share of the places held out as calibration pairs: the validation loss, and the "
                           "threshold is fitted on them")
            d3.slider("Test fraction", 0.0, 0.5, step=0.05, key="train_test",
                      help="Share of the places held out as test pairs, never used for training or the threshold: "
                           "the run's reported accuracy comes from them (0 = none: then it is measured on the "
                           "calibration pairs, optimistic)")
            d4.number_input("Different pairs per image", 1, 16, key="train_negatives")
            d5.number_input("Anchor images (0 = all)", 0, None, step=100, key="train_pair_limit")
            e1, e2, e3, e5, e4 = st.columns([1, 1, 1, 1, 2])
            e1.number_input("Seed", 0, 1_000_000, key="train_seed")
            e2.checkbox("Augment on the fly", key="train_augment", disabled=preset == "seed",
                        help="Random rotation, mirror, zoom, exposure, blur and occlusion (default preset only)")
            e3.selectbox("Precision", PRECISIONS, key="train_precision",
                         help="mixed_float16 speeds up training on NVIDIA GPUs with tensor cores; "
                              "float32 is fastest on a CPU")
            e5.selectbox("Devices", DEVICE_CHOICES, key="train_devices",
                         help="GPUs to train on (tf.distribute.MirroredStrategy): each batch is split across them. "
                              "all = every GPU of this server, or 1 CPU device without a GPU")
            e4.text_input("Run id (optional)", key="train_run_id", placeholder="e.g. default-12ep; empty = time + preset")
            launch = st.form_submit_button("Launch training", type="primary", key="train_launch",
                                           icon=":material/play_arrow:")
        if launch:
            s = st.session_state
            try:
                cfg = RunConfig.build(dataset, preset, epochs=int(s.train_epochs), batch_size=int(s.train_batch),
                                      learning_rate=float(s.train_lr) or None, steps_per_epoch=int(s.train_steps),
                                      seed=int(s.train_seed), augment=bool(s.train_augment) and preset != "seed",
                                      precision=s.train_precision, identical=bool(s.train_identical),
                                      val_fraction=float(s.train_val), test_fraction=float(s.train_test),
                                      negatives=int(s.train_negatives),
                                      pair_limit=int(s.train_pair_limit), devices=s.train_devices)
                resolve_devices(cfg.train.devices)  # more devices than this server has: one line, nothing launched
                run = launch_background(cfg, ws, run_id=(s.get("train_run_id") or "").strip() or None)
            except SiameseError as e:
                ui.error(e)
            else:
                st.session_state["train_watch"] = run.name
                ui.flash("success", f"Launched run **{run.name}** ({preset} preset on {dataset}).")
                st.rerun()

# --- live view -----------------------------------------------------------------------------------------
all_runs = dash.run_rows(ws)
trained_here = [r for r in all_runs if not r["bundled"]]  # the bundled model was not trained in this workspace
job = active_job(ws)
watch = job or st.session_state.get("train_watch") or (trained_here[0]["run"] if trained_here else None)
if watch and watch not in [r["run"] for r in trained_here]:
    watch = trained_here[0]["run"] if trained_here else None


def _preset_of(run) -> str:
    try:
        return run.config.model.preset
    except (SiameseError, OSError, ValueError, KeyError):
        return ""


@st.fragment(run_every=ui.POLL_S if job else None)
def live(run_id: str) -> None:
    current = active_job(ws)
    run_id = current or run_id
    run = ui.run(run_id)
    status = run.status()
    state = status.get("status", "unknown")
    if st.session_state.get("train_was_running") and not current:
        # the job just ended: make its result the active run and refresh the whole page once
        st.session_state["train_was_running"] = False
        if run.has_model():
            ui.select_run(run_id)
        st.rerun(scope="app")
    st.session_state["train_was_running"] = bool(current)

    st.subheader(f"Run {run_id}")
    frac, text = dash.progress_info(status)
    colors = {"running": "blue", "queued": "gray", "finished": "green", "failed": "red", "stopped": "orange",
              "interrupted": "orange"}
    h1, h2, h3 = st.columns([1, 2, 1], vertical_alignment="center")
    h1.badge(state, color=colors.get(state, "gray"))
    h2.caption(f"Device: {status.get('device') or '–'}")
    if state in ("running", "queued") and current == run_id:
        if h3.button("Stop", key="train_stop", icon=":material/stop_circle:",
                     help="Stop after the current batch; the model so far is kept and evaluated"):
            with st.spinner("Stopping after the current batch…"):
                run.stop(wait_s=30)
            st.rerun(scope="app")
    st.progress(frac, text=text)
    counts = dash.pair_counts_text(status.get("pair_counts"), status.get("fit_pairs"), _preset_of(run))
    if counts:
        st.caption(f"Pairs: {counts}.")
    res = dash.run_result(run) if state == "finished" else None
    if res:
        st.markdown(f":material/task_alt: {dash.result_text(res)}")
    if status.get("error") and state not in ("running", "queued", "finished"):
        st.error(dash.md_escape(dash.scrub_paths(status["error"], ws)))
    records = run.metrics()
    if records:
        st.plotly_chart(figures.training_figure(records, status.get("steps")), key="train_curves")
    elif state in ("running", "queued"):
        st.caption("Waiting for the first batch…")
    else:
        st.caption("No metrics were recorded for this run.")


if watch:
    with st.container(border=True):
        live(watch)
else:
    st.info("No runs yet: launch one above.", icon=":material/info:")

# --- all runs --------------------------------------------------------------------------------------------
if all_runs:
    st.subheader("Runs")
    table = pd.DataFrame(all_runs)
    table["error"] = table["error"].map(lambda e: dash.scrub_paths(e, ws))
    st.dataframe(table[["run", "status", "preset", "dataset", "epoch", "threshold", "threshold_source", "accuracy",
                        "roc_auc", "measured_on", "device", "started", "ended", "error"]],
                 hide_index=True, width="stretch", key="train_runs_table",
                 column_config={"accuracy": st.column_config.NumberColumn("accuracy", format="%.3f",
                                                                          help="at the run's threshold, on the pairs "
                                                                               "named in 'measured on'"),
                                "roc_auc": st.column_config.NumberColumn("ROC-AUC", format="%.3f"),
                                "measured_on": st.column_config.TextColumn("measured on")})
    if trained_here:
        with st.expander("Delete a run"):
            ui.delete_control("run", [r["run"] for r in trained_here], "train_del",
                               lambda rid: delete_run(rid, ws),
                               note="Its model, scores, threshold and stored evaluations go with it.")
    resumable = [r["run"] for r in all_runs if r["status"] in ("stopped", "interrupted", "failed")]
    if resumable and not job:
        with st.expander("Resume a stopped or interrupted run"):
            rid = st.selectbox("Run", resumable, key="train_resume_run")
            if st.button("Resume from its last checkpoint", key="train_resume"):
                try:
                    run = open_run(rid, ws)
                    run.resume_check(ws)
                    launch_background(run.config, ws, run_id=rid, resume=True)
                except SiameseError as e:
                    ui.error(e)
                else:
                    st.session_state["train_watch"] = rid
                    st.rerun()
