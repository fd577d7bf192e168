"""The dashboard's view helpers that do not need Streamlit: tables, filters, messages (figures: :mod:`figures`).

The pages (``app_pages/*.py``) only lay out widgets; what they show is shaped here, on the app side of
the line (the library, ``siamese_core``, holds no view code), so it can be tested without a browser.
This module never imports Streamlit or TensorFlow; Plotly and pandas are imported inside the functions
that need them.

Score direction everywhere: **lower score = more alike**. A pair is judged "same place" when
``score <= threshold`` (see :mod:`siamese_core.learn.evaluate`).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import numpy as np

from app_pages.safe_text import md_code, md_escape  # noqa: F401  (the pages reach them here too, as dash.md_*)
from siamese_core.core.config import DataConfig, workspace_dir
from siamese_core.core.errors import SiameseError

DEMO_DATASET = "demo"
DEMO_TILES = 200


# --- messages --------------------------------------------------------------------------------------

_ABS_PATH = re.compile(r"(?<![\w:/.~-])(/[^\s'\"`,;:()\[\]{}<>]+)")


def scrub_paths(text: str, workspace=None, keep: tuple[str, ...] = ()) -> str:
    """``text`` without absolute server paths: the workspace becomes ``workspace``, other absolute
    paths are cut to their last two components (``…/datasets/demo``). Strings in ``keep`` (e.g. a
    path the user typed) are left as they are."""
    text = str(text)
    saved = {}
    for i, k in enumerate(sorted({k for k in keep if k}, key=len, reverse=True)):
        token = f"\x00{i}\x00"
        saved[token] = k
        text = text.replace(k, token)
    try:
        ws = str(workspace_dir(workspace))
        text = text.replace(ws + os.sep, "workspace/").replace(ws, "workspace")
    except Exception:  # pragma: no cover - an unusable workspace path
        pass

    def cut(m: re.Match) -> str:
        parts = [p for p in m.group(1).split("/") if p]
        return "…/" + "/".join(parts[-2:]) if len(parts) > 2 else m.group(1)

    text = _ABS_PATH.sub(cut, text)
    for token, k in saved.items():
        text = text.replace(token, k)
    return text


def user_message(err: BaseException, workspace=None, keep: tuple[str, ...] = ()) -> str:
    """One line for the user, as Markdown (:func:`md_escape`: it may name a user's file): a SiameseError's message, or
    a generic line for anything else."""
    if isinstance(err, SiameseError):
        msg = str(err)
    else:
        msg = f"unexpected problem ({type(err).__name__}); see the server log for details"
    return md_escape(scrub_paths(msg.splitlines()[0] if msg else type(err).__name__, workspace, keep))


def score_direction(preset: str | None, threshold: float | None = None, fused: bool = False) -> str:
    """The sentence every page that shows scores carries."""
    t = f" (threshold {threshold:.4f})" if threshold is not None else ""
    if fused:
        what = (f"this run's score is **fused**: 1 − P(same place) in [0, 1]{t} from the learned distance and the "
                f"keypoint evidence, calibrated on labelled pairs")
    elif preset == "seed":
        what = f"this run uses the **seed** preset: its score is a sigmoid in [0, 1]{t}, 0.2 by default"
    elif preset == "default":
        what = f"this run uses the **default** preset: its score is an embedding distance in [0, 2]{t}, calibrated on held-out calibration pairs"
    else:
        what = "the seed preset scores in [0, 1] (threshold 0.2), the default preset scores a distance in [0, 2] (calibrated threshold)"
    return f"**Lower score = more alike.** A pair is judged the same place when score ≤ threshold; {what}."


def format_eta(seconds) -> str:
    if seconds is None or not np.isfinite(seconds):
        return "–"
    s = int(round(float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def mtime(path) -> float:
    """Modification time of ``path`` (0.0 when it does not exist): the cache key of an artifact."""
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0


# --- workspace overview ------------------------------------------------------------------------------

def dataset_rows(workspace=None) -> list[dict]:
    """One row per dataset, newest first: name, images, tiles, size, source, skipped, created."""
    from siamese_core.data.store import datasets_dir, list_datasets
    rows = []
    for name in list_datasets(workspace):
        p = datasets_dir(workspace) / name / "dataset.json"
        try:
            info = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        cfg = info.get("config", {})
        src = cfg.get("source", "?")
        if cfg.get("path") and str(cfg["path"]).startswith("upload:"):
            src = f"zip ({str(cfg['path'])[7:]})"
        rows.append({"dataset": name, "images": info.get("images"), "tiles": info.get("groups"),
                     "size": cfg.get("size"), "variants": cfg.get("variants"), "source": src,
                     "skipped": info.get("skipped", 0), "created": info.get("created", ""),
                     "_mtime": mtime(p)})
    rows.sort(key=lambda r: r["_mtime"], reverse=True)
    return rows


def run_rows(workspace=None) -> list[dict]:
    """One row per run, newest first: id, status, preset, dataset, progress, threshold, error."""
    from siamese_core.runs.registry import list_runs, run_path
    from siamese_core.runs.run import Run
    rows = []
    for rid in list_runs(workspace):
        run = Run(run_path(rid, workspace))
        try:
            cfg = run.config
        except (OSError, ValueError, KeyError, SiameseError):
            continue
        st = run.status()
        thr_info = run.threshold_info() or {}
        thr, thr_src = thr_info.get("threshold"), thr_info.get("source", "")
        epochs = st.get("epochs") or cfg.train.epochs
        res = run_result(run)
        rows.append({"run": rid, "status": st.get("status", "unknown"), "preset": cfg.model.preset,
                     "dataset": cfg.dataset, "epoch": f"{st.get('epoch') or 0}/{epochs}",
                     "threshold": thr, "threshold_source": thr_src,
                     "accuracy": res["accuracy"] if res else None, "roc_auc": res["roc_auc"] if res else None,
                     "measured_on": res["label"] if res else "", "device": st.get("device") or "",
                     "started": st.get("started") or "", "ended": st.get("ended") or "",
                     "error": st.get("error") or "", "has_model": run.has_model(),
                     "bundled": run.is_bundled, "_mtime": run.created()})
    # newest first; the bundled model last (any run trained here is closer to the user's imagery)
    rows.sort(key=lambda r: (not r["bundled"], r["_mtime"], r["run"]), reverse=True)
    return rows


def run_result(run) -> dict | None:
    """A finished run's reported numbers (``evaluation.json``, written when training ended) and which pairs they
    come from: ``{"accuracy", "roc_auc", "pairs", "threshold", "threshold_source", "split", "label"}`` (identical
    pairs left out when there are others), or None before its evaluation."""
    ev = run.evaluation()
    m = ev.get("without_identical") or ev.get("all")
    if not m:
        return None
    info = run.evaluation_pairs()
    metrics = m.get("metrics") or {}
    return {"accuracy": metrics.get("accuracy"), "roc_auc": m.get("roc_auc"), "pairs": m.get("n_pairs"),
            "threshold": metrics.get("threshold"), "threshold_source": ev.get("threshold_source", ""),
            "split": info["split"], "label": info["label"]}


def result_text(res: dict) -> str:
    """'Accuracy **0.944** · ROC-AUC **0.981** on 36 pairs — test pairs: 2 places never used … (at threshold
    0.5300, fitted on the calibration pairs)'."""
    def num(x):
        return "n/a" if x is None else f"{x:.3f}"
    how = {"calibrated": ", fitted on the calibration pairs", "preset": ", the preset's", "user": ", saved by you"}
    t = res.get("threshold")
    thr = f" (at threshold {t:.4f}{how.get(res.get('threshold_source'), '')})" if t is not None else ""
    return (f"Accuracy **{num(res['accuracy'])}** · ROC-AUC **{num(res['roc_auc'])}** on {res['pairs']} pairs — "
            f"{res['label']}{thr}")


def pair_counts_text(counts: dict | None, fit_pairs: int | None = None, preset: str = "") -> str:
    """The pair counts a run trains and is measured on, each named: '180 training · 18 calibration · 18 test
    pairs (same + different place)', with the identical ones and, for the in-batch preset, what one epoch fits."""
    if not counts:
        return ""
    tot = {k: c.get("same", 0) + c.get("different", 0) for k, c in counts.items()}
    text = (f"{tot.get('train', 0):,} training · {tot.get('calibration', 0):,} calibration · "
            f"{tot.get('test', 0):,} test pairs (same + different place)")
    ident = {k: c.get("identical", 0) for k, c in counts.items()}
    if any(ident.values()):
        text += (f", of which identical (an image with itself): {ident.get('train', 0):,} · "
                 f"{ident.get('calibration', 0):,} · {ident.get('test', 0):,}")
    if fit_pairs and preset != "seed":
        text += f"; each epoch fits {fit_pairs:,} same-place training pairs (in-batch negatives)"
    return text


def default_run(rows: list[dict], dataset: str | None = None) -> str | None:
    """The newest finished run (on ``dataset`` if there is one), else the newest run."""
    done = [r for r in rows if r["has_model"]]
    for pool in ([r for r in done if r["dataset"] == dataset], done, rows):
        if pool:
            return pool[0]["run"]
    return None


def unique_name(base: str, taken) -> str:
    taken = set(taken)
    if base not in taken:
        return base
    k = 2
    while f"{base}-{k}" in taken:
        k += 1
    return f"{base}-{k}"


def ensure_demo_dataset(workspace=None, tiles: int = DEMO_TILES, progress=None) -> str | None:
    """On a fresh workspace (no ``datasets`` folder yet) build a small synthetic dataset.

    Returns its name, or None when the workspace already has a datasets folder (even an empty one:
    then the user removed their datasets on purpose) or ``$SIAMESE_AUTO_DATASET`` is ``0``.
    """
    from siamese_core.core.errors import DatasetError
    from siamese_core.data.store import build_dataset, datasets_dir, list_datasets
    if os.environ.get("SIAMESE_AUTO_DATASET", "1") == "0" or datasets_dir(workspace).exists():
        return None
    try:
        build_dataset(DataConfig(limit=tiles), DEMO_DATASET, workspace, progress=progress)
    except DatasetError:
        if DEMO_DATASET not in list_datasets(workspace):  # not a lost race with another session
            raise
    return DEMO_DATASET


class Throttle:
    """Call ``fn(done, total)`` at most every ``every_s`` seconds (and always at the end)."""

    def __init__(self, fn, every_s: float = 0.25):
        self.fn, self.every_s, self._last = fn, every_s, 0.0

    def __call__(self, done, total):
        now = time.monotonic()
        if now - self._last >= self.every_s or (total and done >= total):
            self._last = now
            self.fn(done, total)


# --- triplets (groups of a source tile and its variants) ------------------------------------------

def source_kind(source: str) -> str:
    """``synthetic:seed=0:index=3`` → ``synthetic``; ``folder:a/b.png`` → ``folder``."""
    return str(source).split(":", 1)[0]


def group_table(manifest):
    """One row per group: group, tile_id, source, kind, first image index, number of images."""
    g = manifest.groupby("group", sort=True)
    out = g.agg(tile_id=("tile_id", "first"), source=("source", "first"), first=("index", "min"),
                images=("index", "size")).reset_index()
    out["kind"] = out["source"].map(source_kind)
    return out


def filter_groups(groups_df, kinds=None, query: str = "") -> np.ndarray:
    """Group ids matching the source kinds and a query (a group number, or text in tile id / source)."""
    m = np.ones(len(groups_df), bool)
    if kinds:
        m &= groups_df["kind"].isin(list(kinds)).to_numpy()
    q = (query or "").strip()
    if q:
        text = (groups_df["tile_id"].astype(str) + " " + groups_df["source"].astype(str)).str.lower()
        hit = text.str.contains(q.lower(), regex=False).to_numpy()
        if q.isdigit():
            hit = hit | (groups_df["group"] == int(q)).to_numpy()
        m &= hit
    return groups_df["group"].to_numpy()[m]


def n_pages(n: int, per_page: int) -> int:
    return max(1, math.ceil(n / max(1, per_page)))


def page_for_group(group_ids: np.ndarray, group: int, per_page: int) -> int | None:
    """1-based page holding ``group`` in the filtered list, or None when it is filtered out."""
    pos = np.flatnonzero(np.asarray(group_ids) == group)
    return int(pos[0] // per_page) + 1 if len(pos) else None


def variant_caption(row) -> str:
    """``original`` or ``variant 2 · 97.1° · blur σ=1.2`` from a manifest row."""
    if int(row["variant"]) == 0:
        head = "original"
    else:
        head = f"variant {int(row['variant'])} · {float(row['angle']):.1f}°"
    try:
        tr = json.loads(row["transforms"] or "{}")
    except (TypeError, ValueError):
        tr = {}
    bits = []
    for kind, p in tr.items():
        if kind == "flip":
            bits.append("mirror ↔" if p.get("axis") == 1 else "mirror ↕")
        elif kind == "scale":
            bits.append(f"zoom ×{p.get('scale', 1):.2f}")
        elif kind == "affine":
            bits.append(f"shear {p.get('shear', 0):+.2f}")
        elif kind == "blur":
            bits.append(f"blur σ={p.get('sigma', 0):.1f}")
        elif kind == "occlude":
            bits.append(f"occluded {100 * p.get('frac', 0):.0f}%")
        elif kind == "brightness":
            bits.append(f"exposure {p.get('brightness', 0):+.2f}/×{p.get('contrast', 1):.2f}")
        else:
            bits.append(str(kind))
    return " · ".join([head] + bits)


def read_rows(images: np.ndarray, indices) -> dict[int, np.ndarray]:
    """``{index: tile}`` for just these rows of a (memory-mapped) image array."""
    idx = np.unique(np.asarray(list(indices), dtype=np.int64))
    idx = idx[(idx >= 0) & (idx < len(images))]
    if len(idx) == 0:
        return {}
    block = np.asarray(images[idx])
    return {int(i): block[k] for k, i in enumerate(idx)}


# --- pairs ------------------------------------------------------------------------------------------

def pairs_counts_rows(counts: dict) -> list[dict]:
    """Pairs.counts() → long rows (split, label, pairs) for a bar chart, identical shown apart."""
    rows = []
    for split, c in counts.items():
        rows.append({"split": split, "label": "same (distinct images)", "pairs": c["same"] - c.get("identical", 0)})
        rows.append({"split": split, "label": "same (identical image)", "pairs": c.get("identical", 0)})
        rows.append({"split": split, "label": "different", "pairs": c["different"]})
    return rows


def filter_pairs(label: np.ndarray, val: np.ndarray, identical: np.ndarray,
                 want_label: str = "all", want_split: str = "all", hide_identical: bool = False,
                 test: np.ndarray | None = None) -> np.ndarray:
    """Positions of the pairs matching label (all|same|different), split (all|train|calibration|test);
    ``val`` marks the calibration pairs, ``test`` the test pairs (None: none)."""
    test = np.zeros(len(label), bool) if test is None else np.asarray(test, bool)
    m = np.ones(len(label), bool)
    if want_label == "same":
        m &= label == 0
    elif want_label == "different":
        m &= label == 1
    if want_split == "train":
        m &= ~val & ~test
    elif want_split == "calibration":
        m &= val
    elif want_split == "test":
        m &= test
    if hide_identical:
        m &= ~identical
    return np.flatnonzero(m)


# --- training ---------------------------------------------------------------------------------------

def split_metrics(records: list[dict], steps: int | None = None):
    """metrics.jsonl records → (batch DataFrame with a global ``step``, epoch DataFrame)."""
    import pandas as pd
    b = [r for r in records if r.get("kind") == "batch"]
    e = [r for r in records if r.get("kind") == "epoch"]
    bdf = pd.DataFrame(b)
    edf = pd.DataFrame(e)
    if len(bdf):
        per = steps or int(bdf.get("steps", pd.Series([0])).max() or bdf["step"].max())
        bdf["global_step"] = (bdf["epoch"] - 1) * per + bdf["step"]
        # a resumed run appends again: keep the last record of each global step
        bdf = bdf.drop_duplicates("global_step", keep="last").sort_values("global_step")
    if len(edf):
        per = steps or (int(bdf["steps"].max()) if len(bdf) and "steps" in bdf else 1)
        edf = edf.drop_duplicates("epoch", keep="last").sort_values("epoch")
        edf["global_step"] = edf["epoch"] * per
    return bdf, edf


def progress_info(status: dict) -> tuple[float, str]:
    """(fraction done, 'epoch 2/10 · batch 17/40 · ETA 1 min 05 s') from a run's status."""
    epochs = int(status.get("epochs") or 0)
    steps = int(status.get("steps") or 0)
    epoch = int(status.get("epoch") or 0)
    step = int(status.get("step") or 0)
    if status.get("status") == "finished":
        return 1.0, f"finished · {epochs} epoch(s)"
    if not epochs or not steps:
        return 0.0, "starting… (loading TensorFlow and the dataset)"
    done = max(0, epoch - 1) * steps + min(step, steps)
    frac = min(1.0, done / max(1, epochs * steps))
    return frac, f"epoch {epoch}/{epochs} · batch {step}/{steps} · ETA {format_eta(status.get('eta_s'))}"


# --- threshold --------------------------------------------------------------------------------------

def _nice_step(span: float, n: int = 400) -> float:
    raw = max(span, 1e-9) / n
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag  # pragma: no cover


def slider_spec(scores: np.ndarray, extra=()) -> tuple[float, float, float]:
    """(min, max, step) for a threshold slider covering the scores and any extra thresholds."""
    vals = [float(np.min(scores)), float(np.max(scores))] + [float(x) for x in extra if x is not None and np.isfinite(x)]
    lo, hi = min(vals), max(vals)
    span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.1
    step = _nice_step(span)
    lo = math.floor((lo - 0.02 * span) / step) * step
    hi = math.ceil((hi + 0.02 * span) / step) * step
    digits = max(0, -math.floor(math.log10(step)))
    return round(lo, digits), round(hi, digits), step


def histogram_data(scores: np.ndarray, labels: np.ndarray, lo: float, hi: float, bins: int = 40) -> dict:
    """Bin counts per label on shared edges (so the figure never ships every score)."""
    edges = np.linspace(lo, hi, bins + 1)
    same, _ = np.histogram(scores[labels == 0], bins=edges)
    diff, _ = np.histogram(scores[labels == 1], bins=edges)
    return {"edges": edges, "same": same, "different": diff}


def misclassified(scores, labels, threshold: float, limit: int = 12, mask=None) -> dict:
    """Positions of the worst mistakes at ``threshold``: ``{"fn": [...], "fp": [...]}``, most wrong first.

    ``fn``: truly same pairs judged different (score > threshold); ``fp``: truly different pairs
    judged same (score <= threshold). ``mask`` limits the pairs considered.
    """
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels)
    keep = np.ones(len(scores), bool) if mask is None else np.asarray(mask, bool)
    out = {}
    for key, sel in (("fn", (labels == 0) & (scores > threshold)), ("fp", (labels == 1) & (scores <= threshold))):
        pos = np.flatnonzero(sel & keep)
        order = np.argsort(-np.abs(scores[pos] - threshold), kind="stable")
        out[key] = pos[order][:limit].tolist()
        out[f"n_{key}"] = int(len(pos))
    return out
