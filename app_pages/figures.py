"""The dashboard's Plotly figures: pair counts, training curves, confusion matrices, ROC and PR curves, histograms.

Like :mod:`views`, this module never imports Streamlit (the pages draw what it returns), so every figure can be
built and checked in a test; Plotly is imported inside the functions. Colours are shared by every page: same
place, different places, and the accent of lines and matrices.
"""

from __future__ import annotations

import numpy as np

from app_pages import views

SAME_COLOR = "#2a9d8f"
DIFF_COLOR = "#e76f51"
ACCENT = "#1f5f8b"
MAX_CURVE_POINTS = 2000


def pairs_counts_figure(counts: dict):
    import plotly.graph_objects as go
    rows = views.pairs_counts_rows(counts)
    colors = {"same (distinct images)": SAME_COLOR, "same (identical image)": "#8ecdc4", "different": DIFF_COLOR}
    fig = go.Figure()
    for label in colors:
        r = [x for x in rows if x["label"] == label]
        fig.add_bar(x=[x["split"] for x in r], y=[x["pairs"] for x in r], name=label,
                    marker_color=colors[label], text=[x["pairs"] for x in r], textposition="auto")
    fig.update_layout(barmode="stack", height=300, margin=dict(l=10, r=10, t=30, b=10),
                      title="Pairs per split and label", legend=dict(orientation="h", y=-0.2),
                      yaxis_title="pairs")
    return fig


def _thin(df, n: int = MAX_CURVE_POINTS):
    if len(df) <= n:
        return df
    idx = np.unique(np.linspace(0, len(df) - 1, n).round().astype(int))
    return df.iloc[idx]


def training_figure(records: list[dict], steps: int | None = None):
    """Loss (per batch and per epoch) and, per epoch, the calibration pairs' accuracy at the run's threshold
    and ROC-AUC: the quantities the Threshold page shows (:class:`~siamese_core.learn.callbacks.CalibrationMetrics`).
    Keras' own accuracy (in-batch, at a fixed score 0.5, not the run's threshold) is drawn thin and named so;
    a run recorded before the calibration metric shows its Keras validation accuracy, named so too."""
    from plotly.subplots import make_subplots
    bdf, edf = views.split_metrics(records, steps)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy and ROC-AUC"), horizontal_spacing=0.08)
    if len(bdf) and "loss" in bdf:
        t = _thin(bdf)
        fig.add_scatter(x=t["global_step"], y=t["loss"], mode="lines+markers" if len(t) < 60 else "lines",
                        name="train loss (per batch)", line=dict(color="#9bb7cf", width=1), marker=dict(size=4),
                        row=1, col=1)
    if len(edf) and "loss" in edf:
        fig.add_scatter(x=edf["global_step"], y=edf["loss"], mode="lines+markers", name="train loss (per epoch)",
                        line=dict(color=ACCENT, width=2), row=1, col=1)
    if len(edf) and "val_loss" in edf:
        fig.add_scatter(x=edf["global_step"], y=edf["val_loss"], mode="lines+markers",
                        name="calibration pairs' loss (per epoch)", line=dict(color=DIFF_COLOR, width=2, dash="dot"),
                        row=1, col=1)
    if len(bdf) and "accuracy" in bdf:
        t = _thin(bdf)
        fig.add_scatter(x=t["global_step"], y=t["accuracy"], mode="lines", opacity=0.6,
                        name="train batches: Keras accuracy at score 0.5 (not the run's threshold)",
                        line=dict(color="#c9c9c9", width=1), row=1, col=2)
    has_cal = len(edf) and "cal_accuracy" in edf and edf["cal_accuracy"].notna().any()
    if has_cal:
        fig.add_scatter(x=edf["global_step"], y=edf["cal_accuracy"], mode="lines+markers",
                        name="calibration pairs: accuracy at the run's threshold (per epoch)",
                        line=dict(color=DIFF_COLOR, width=2), row=1, col=2)
        if "cal_roc_auc" in edf:
            fig.add_scatter(x=edf["global_step"], y=edf["cal_roc_auc"], mode="lines+markers",
                            name="calibration pairs: ROC-AUC (per epoch)", line=dict(color=SAME_COLOR, width=2),
                            row=1, col=2)
    elif len(edf) and "val_accuracy" in edf:
        fig.add_scatter(x=edf["global_step"], y=edf["val_accuracy"], mode="lines+markers",
                        name="validation: Keras accuracy at score 0.5 (per epoch; recorded before the calibration metric)",
                        line=dict(color=DIFF_COLOR, width=2, dash="dot"), row=1, col=2)
    for col in (1, 2):
        fig.update_xaxes(title_text="batch", row=1, col=col)
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.3))
    return fig


def _thin_xy(*arrays):
    n = len(arrays[0])
    if n <= MAX_CURVE_POINTS:
        return arrays
    idx = np.unique(np.linspace(0, n - 1, MAX_CURVE_POINTS).round().astype(int))
    return tuple(np.asarray(a)[idx] for a in arrays)


def confusion_figure(m):
    """Heatmap of ``Metrics.matrix`` (rows true, cols predicted) with counts and row rates."""
    import plotly.graph_objects as go
    mat = np.asarray(m.matrix, dtype=float)
    rows = mat.sum(axis=1, keepdims=True)
    rates = np.divide(mat, rows, out=np.zeros_like(mat), where=rows > 0)
    names = [["TP", "FN"], ["FP", "TN"]]
    text = [[f"<b>{int(mat[i, j])}</b><br>{names[i][j]} · {100 * rates[i, j]:.1f}% of row" for j in range(2)]
            for i in range(2)]
    fig = go.Figure(go.Heatmap(z=rates, x=["predicted same", "predicted different"],
                               y=["truly same", "truly different"], text=text, texttemplate="%{text}",
                               textfont=dict(size=15), colorscale=[[0, "#f4f7fb"], [1, ACCENT]], zmin=0, zmax=1,
                               showscale=False, hovertemplate="%{y}, %{x}: %{text}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=30, b=10),
                      title=f"Confusion matrix at threshold {m.threshold:.4f}")
    return fig


def live_confusion_figure(sweep, thresholds, saved=None, active=None):
    """The confusion matrix with its own Plotly slider, which redraws it in the browser while the handle
    is dragged (no round trip to the server; Streamlit's slider only reruns on release).

    One slider step per threshold in ``thresholds`` (plus ``saved`` and ``active``; sorted, duplicates and
    non-finite values dropped); each step is an ``update`` call that swaps the heatmap's z/text and the
    title's TP/FN/FP/TN counts, all precomputed here in one vectorised pass over the sweep's sorted scores.
    The handle starts at ``active`` (else ``saved``) and the figure is drawn at that step."""
    import plotly.graph_objects as go
    extra = [x for x in (saved, active) if x is not None]
    ts = np.asarray([float(x) for x in list(thresholds) + extra if x is not None], float)
    ts = np.unique(ts[np.isfinite(ts)])
    if not len(ts):
        ts = np.array([sweep.score_range[1]], float)
    tp, fn, fp, tn = sweep.counts_at(ts)
    n_same, n_diff = max(int(tp[0] + fn[0]), 1), max(int(fp[0] + tn[0]), 1)
    names = [["TP", "FN"], ["FP", "TN"]]

    def cells(k):
        mat = [[int(tp[k]), int(fn[k])], [int(fp[k]), int(tn[k])]]
        rates = [[mat[0][0] / n_same, mat[0][1] / n_same], [mat[1][0] / n_diff, mat[1][1] / n_diff]]
        text = [[f"<b>{mat[i][j]}</b><br>{names[i][j]} · {100 * rates[i][j]:.1f}% of row" for j in range(2)]
                for i in range(2)]
        title = (f"At {ts[k]:.4f}: TP {mat[0][0]} · FN {mat[0][1]} · FP {mat[1][0]} · TN {mat[1][1]}"
                 f"{' (saved)' if saved is not None and abs(ts[k] - saved) < 1e-12 else ''}")
        return rates, text, title

    target = active if active is not None else saved
    k0 = int(np.argmin(np.abs(ts - target))) if target is not None else len(ts) // 2
    steps = []
    for k in range(len(ts)):
        rates, text, title = cells(k)
        label = f"{ts[k]:.4f}" + (" (saved)" if saved is not None and abs(ts[k] - saved) < 1e-12 else "")
        steps.append(dict(method="update", label=label, args=[{"z": [rates], "text": [text]}, {"title.text": title}]))
    rates, text, title = cells(k0)
    fig = go.Figure(go.Heatmap(z=rates, x=["predicted same", "predicted different"],
                               y=["truly same", "truly different"], text=text, texttemplate="%{text}",
                               textfont=dict(size=15), colorscale=[[0, "#f4f7fb"], [1, ACCENT]], zmin=0, zmax=1,
                               showscale=False, hovertemplate="%{y}, %{x}: %{text}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(
        height=400, margin=dict(l=10, r=10, t=40, b=10), title=title,
        sliders=[dict(active=k0, steps=steps, x=0.0, len=1.0, pad=dict(t=45, b=5),
                      currentvalue=dict(prefix="Threshold ", font=dict(size=13, color="#31333f")), transition=dict(duration=0),
                      ticklen=0, minorticklen=0, tickcolor="rgba(0,0,0,0)",
                      font=dict(size=1, color="rgba(0,0,0,0)"))])  # 100+ tick labels would overlap: hidden
    return fig


def roc_figure(fpr, tpr, point=None):
    import plotly.graph_objects as go
    fpr, tpr = _thin_xy(np.asarray(fpr), np.asarray(tpr))
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#bbb", dash="dash"), name="chance",
                    hoverinfo="skip")
    fig.add_scatter(x=fpr, y=tpr, mode="lines", line=dict(color=ACCENT, width=2), name="ROC")
    if point is not None:
        fig.add_scatter(x=[point[0]], y=[point[1]], mode="markers", marker=dict(size=13, color=DIFF_COLOR,
                        line=dict(color="white", width=2)), name="current threshold")
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10), title="ROC (positive = same place)",
                      xaxis_title="different pairs judged same (FPR)", yaxis_title="same pairs found (TPR)",
                      xaxis=dict(range=[-0.02, 1.02]), yaxis=dict(range=[-0.02, 1.02]), showlegend=False)
    return fig


def pr_figure(precision, recall, point=None):
    import plotly.graph_objects as go
    precision, recall = _thin_xy(np.asarray(precision), np.asarray(recall))
    fig = go.Figure()
    fig.add_scatter(x=recall, y=precision, mode="lines", line=dict(color=ACCENT, width=2, shape="hv"), name="PR")
    if point is not None:
        fig.add_scatter(x=[point[0]], y=[point[1]], mode="markers", marker=dict(size=13, color=DIFF_COLOR,
                        line=dict(color="white", width=2)), name="current threshold")
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10), title="Precision / recall (same place)",
                      xaxis_title="recall", yaxis_title="precision", showlegend=False,
                      xaxis=dict(range=[-0.02, 1.02]), yaxis=dict(range=[-0.02, 1.02]))
    return fig


def histogram_figure(hist: dict, threshold: float, band=None):
    """Scores by true label, the threshold, and (``band``: a fusion's Band) the uncertain band around it shaded."""
    import plotly.graph_objects as go
    e = hist["edges"]
    centers, width = (e[:-1] + e[1:]) / 2, float(e[1] - e[0])
    fig = go.Figure()
    if band is not None:
        fig.add_vrect(x0=threshold - band.below, x1=threshold + band.above, fillcolor="#888", opacity=0.18,
                      line_width=0, annotation_text="uncertain", annotation_position="top left")
    fig.add_bar(x=centers, y=hist["same"], width=width, name="truly same", marker_color=SAME_COLOR, opacity=0.7)
    fig.add_bar(x=centers, y=hist["different"], width=width, name="truly different", marker_color=DIFF_COLOR,
                opacity=0.7)
    fig.add_vline(x=threshold, line=dict(color="#222", width=2, dash="dash"),
                  annotation_text=f"threshold {threshold:.4f}", annotation_position="top")
    fig.update_layout(barmode="overlay", height=320, margin=dict(l=10, r=10, t=40, b=10),
                      title="Scores by true label (lower = more alike)",
                      xaxis_title="score", yaxis_title="pairs", legend=dict(orientation="h", y=-0.25))
    return fig


def locate_figure(thumb: np.ndarray, polygon: list, scale: float):
    """A scene's thumbnail with a located tile's polygon (scene pixels; ``scale`` scene px per thumbnail px) drawn
    on it, in scene pixel coordinates (hovering reads them)."""
    import plotly.graph_objects as go
    fig = go.Figure(go.Image(z=thumb, dx=scale, dy=scale, hoverinfo="skip"))
    if polygon:
        xs = [p[0] for p in polygon] + [polygon[0][0]]
        ys = [p[1] for p in polygon] + [polygon[0][1]]
        fig.add_scatter(x=xs, y=ys, mode="lines", line=dict(color=SAME_COLOR, width=3), name="the tile")
    fig.update_layout(height=600, margin=dict(l=10, r=10, t=10, b=10), showlegend=False)
    fig.update_yaxes(scaleanchor="x")
    return fig
