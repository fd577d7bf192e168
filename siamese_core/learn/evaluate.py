"""Evaluation maths for pair scores: metrics at a threshold, ROC / PR curves, AUC and
threshold suggestions.

This module exists so that the dashboard's threshold slider, ``siamese_core evaluate`` on the
command line and threshold calibration all share one small, tested set of formulas instead of
each recomputing precision or AUC in its own way. It is pure NumPy: it imports neither
TensorFlow nor Streamlit, so it is cheap to import and works on any saved scores.

Conventions used everywhere in this module
-------------------------------------------
* Each pair has a **label**: ``0`` = same place, ``1`` = different place.
* Each pair has a **score**: a finite float, *lower = more alike* (e.g. an embedding distance);
  it need not lie in ``[0, 1]``.
* **Decision rule**: ``score > threshold`` -> predicted ``1`` (different place);
  ``score <= threshold`` -> predicted ``0`` (same place).
* **The positive class is "same place" (label 0)**, because matching places is what analysts
  look for. Hence:

  - ``tp`` = truly same, predicted same;      ``fn`` = truly same, predicted different;
  - ``fp`` = truly different, predicted same; ``tn`` = truly different, predicted different;
  - ``precision``   = of the pairs predicted same, the fraction that truly are the same place;
  - ``recall``      = of the truly-same pairs, the fraction predicted same;
  - ``specificity`` = of the truly-different pairs, the fraction predicted different;
  - ROC: ``tpr`` = recall of "same", ``fpr`` = fraction of different pairs predicted same.

* **Confusion matrix** (``confusion`` and ``Metrics.matrix``): a 2x2 ``int64`` array, rows = true
  label ``[same, different]``, columns = predicted ``[same, different]``, i.e.
  ``[[tp, fn], [fp, tn]]``.

Degenerate inputs (only one class present, nothing predicted same, ...)
------------------------------------------------------------------------
* In a ``Metrics`` every ratio whose denominator is zero is reported as ``0.0``: ``precision``
  when no pair is predicted same, ``recall`` when there are no same pairs, ``specificity`` when
  there are no different pairs, ``f1`` when both precision and recall are 0.
* Areas and curves are honest about undefined values instead: ``roc_auc`` is ``nan`` unless both
  classes are present; ``average_precision`` is ``nan`` when there are no same pairs; the ROC/PR
  curve axis that would divide by zero is filled with ``nan``.
* ``to_dict()`` methods return plain ``int`` / ``float`` / ``None`` / ``dict`` values that pass
  ``json.dumps(..., allow_nan=False)``: a ``nan`` or infinite float becomes ``None``.

Every problem with the caller's input raises :class:`siamese_core.core.errors.SiameseError` with a
one-line message that names the offending value and says how to fix it.

Why one module of about 600 lines: it is one job (the numbers of a set of scored pairs), and its parts share
private machinery that keeps them exactly consistent: one sorted-scores object feeds the curves, the areas and
the suggestions, and one counts-to-metrics formula serves ``metrics_at``, the sweep, the suggestions and the
report, so a threshold gives the same precision wherever it is computed. Split, that machinery would become an
API between modules; a fifth of the file is the conventions above and the input checks behind the one-line errors.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ..core.errors import SiameseError

__all__ = [
    "Metrics",
    "Report",
    "Suggestions",
    "ThresholdSweep",
    "auc",
    "average_precision",
    "confusion",
    "metrics_at",
    "pr_curve",
    "report",
    "roc_auc",
    "roc_curve",
    "suggest_thresholds",
]


# ---------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------


def _shape_text(arr: np.ndarray) -> str:
    return "a scalar" if arr.ndim == 0 else f"shape {arr.shape}"


def _example(arr: np.ndarray) -> str:
    """The first element that is not a plain number, with its index, for an error message."""
    for i, v in enumerate(arr.tolist()):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            return f"{v!r} at index {i}"
    return f"{arr[0].item()!r} at index 0" if arr.size else "nothing"


def _as_1d_float(values: Any, name: str, *, finite: bool = True) -> np.ndarray:
    """``values`` as a 1-D float64 array, or a SiameseError naming ``name``."""
    try:
        arr = np.asarray(values)
    except Exception as exc:  # ragged nested lists and the like
        raise SiameseError(
            f"{name} could not be read as an array of numbers ({exc}); pass a flat list or 1-D array of numbers."
        ) from None
    if arr.ndim != 1:
        raise SiameseError(
            f"{name} must be 1-D (one value per pair), got {_shape_text(arr)}; pass a flat list or call .ravel() on it."
        )
    if arr.dtype.kind not in "iuf":
        raise SiameseError(
            f"{name} must contain numbers, got dtype {arr.dtype} ({_example(arr)}); pass real-valued numbers, e.g. np.asarray(..., dtype=float)."
        )
    arr = arr.astype(np.float64, copy=False)
    if finite:
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise SiameseError(
                f"{name} must be finite, got {float(arr[i])!r} at index {i} ({int(bad.sum())} non-finite in all); drop or re-score those pairs."
            )
    return arr


def _as_labels(values: Any) -> np.ndarray:
    """``values`` as a 1-D bool array, True = different place (label 1)."""
    try:
        arr = np.asarray(values)
    except Exception as exc:
        raise SiameseError(
            f"labels could not be read as an array ({exc}); pass a flat list or 1-D array of 0 (same place) / 1 (different place)."
        ) from None
    if arr.ndim != 1:
        raise SiameseError(
            f"labels must be 1-D (one label per pair), got {_shape_text(arr)}; pass a flat list or call .ravel() on it."
        )
    if arr.dtype.kind == "b":
        return arr.astype(bool, copy=False)
    if arr.dtype.kind not in "iuf":
        raise SiameseError(
            f"labels must be numbers 0 (same place) or 1 (different place), got dtype {arr.dtype} ({_example(arr)}); convert them with np.asarray(..., dtype=int)."
        )
    is_zero = arr == 0
    is_one = arr == 1
    bad = ~(is_zero | is_one)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SiameseError(
            f"labels must be 0 (same place) or 1 (different place), got {arr[i].item()!r} at index {i}; fix or drop that pair's label."
        )
    return is_one


def _validate(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(scores float64, different bool)`` of equal, non-zero length."""
    s = _as_1d_float(scores, "scores")
    different = _as_labels(labels)
    if s.shape[0] != different.shape[0]:
        raise SiameseError(
            f"scores has {s.shape[0]} values but labels has {different.shape[0]}; pass exactly one score and one label per pair."
        )
    if s.shape[0] == 0:
        raise SiameseError("no pairs given (scores and labels are empty); evaluate at least one labelled pair.")
    return s, different


def _as_threshold(threshold: Any) -> float:
    if isinstance(threshold, np.ndarray) and threshold.ndim == 0 and threshold.dtype.kind in "iuf":
        threshold = threshold.item()
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, numbers.Real):
        raise SiameseError(
            f"threshold must be a single real number, got {threshold!r} ({type(threshold).__name__}); pass a float such as 0.5."
        )
    t = float(threshold)
    if math.isnan(t):
        raise SiameseError("threshold must be a number, got nan; pass a float such as 0.5.")
    return t


def _as_target(target: Any) -> float:
    if isinstance(target, (bool, np.bool_)) or not isinstance(target, numbers.Real):
        raise SiameseError(
            f"target_precision must be a number in [0, 1], got {target!r}; pass e.g. 0.99."
        )
    t = float(target)
    if not (0.0 <= t <= 1.0):
        raise SiameseError(f"target_precision must be in [0, 1], got {t!r}; pass e.g. 0.99.")
    return t


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def _ratio(num: int, den: int) -> float:
    """``num / den`` as a float, 0.0 when ``den`` is 0 (see module docstring)."""
    return num / den if den else 0.0


def _ratios(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise ``num / den`` in float64, 0.0 where ``den`` is 0."""
    num = num.astype(np.float64)
    den = den.astype(np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _plain(value: Any) -> Any:
    """A JSON-safe plain Python value: numpy scalars unwrapped, nan/inf -> None."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (numbers.Integral, np.integer)):
        return int(value)
    if isinstance(value, (numbers.Real, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


def _dataclass_dict(obj: Any) -> dict[str, Any]:
    return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}


# ---------------------------------------------------------------------------------------------
# Metrics at one threshold
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metrics:
    """Counts and rates at one threshold. Positive class = **same place** (label 0).

    ``tp``/``fn``: truly same pairs predicted same/different; ``fp``/``tn``: truly different
    pairs predicted same/different. ``precision`` = of pairs predicted same, the fraction truly
    same; ``recall`` = of truly same pairs, the fraction predicted same; ``specificity`` = of
    truly different pairs, the fraction predicted different. A ratio with a zero denominator is
    0.0. ``f1`` is computed as ``2 tp / (2 tp + fp + fn)`` (the harmonic mean of precision and
    recall, 0.0 when both are 0).
    """

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    specificity: float
    n: int

    @property
    def matrix(self) -> np.ndarray:
        """2x2 int64: rows = true ``[same, different]``, cols = predicted ``[same, different]``."""
        return np.array([[self.tp, self.fn], [self.fp, self.tn]], dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-safe values (an infinite threshold becomes None)."""
        return _dataclass_dict(self)


def _metrics_from_counts(threshold: float, tp: int, fp: int, tn: int, fn: int) -> Metrics:
    tp, fp, tn, fn = int(tp), int(fp), int(tn), int(fn)
    n = tp + fp + tn + fn
    return Metrics(
        threshold=float(threshold),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        accuracy=_ratio(tp + tn, n),
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        specificity=_ratio(tn, tn + fp),
        n=n,
    )


def _counts(s: np.ndarray, different: np.ndarray, t: float) -> tuple[int, int, int, int]:
    pred_same = s <= t
    n_pred_same = int(np.count_nonzero(pred_same))
    fp = int(np.count_nonzero(pred_same & different))
    tp = n_pred_same - fp
    n_diff = int(np.count_nonzero(different))
    n_same = s.shape[0] - n_diff
    return tp, fp, n_diff - fp, n_same - tp


def confusion(scores: Any, labels: Any, threshold: float) -> np.ndarray:
    """2x2 int64 confusion matrix ``[[tp, fn], [fp, tn]]`` (rows = true [same, different],
    cols = predicted [same, different]); a pair is predicted same when ``score <= threshold``."""
    s, different = _validate(scores, labels)
    tp, fp, tn, fn = _counts(s, different, _as_threshold(threshold))
    return np.array([[tp, fn], [fp, tn]], dtype=np.int64)


def metrics_at(scores: Any, labels: Any, threshold: float) -> Metrics:
    """:class:`Metrics` at ``threshold`` (predicted same when ``score <= threshold``). O(n)."""
    s, different = _validate(scores, labels)
    t = _as_threshold(threshold)
    return _metrics_from_counts(t, *_counts(s, different, t))


class ThresholdSweep:
    """Metrics at any threshold in O(log n) after one O(n log n) sort.

    Meant for the dashboard slider: build it once per set of scores, then call :meth:`at` as
    often as the slider moves. ``at(t)`` returns exactly what ``metrics_at(scores, labels, t)``
    would.
    """

    def __init__(self, scores: Any, labels: Any) -> None:
        s, different = _validate(scores, labels)
        self._same = np.sort(s[~different])
        self._different = np.sort(s[different])
        self._min = float(s.min())
        self._max = float(s.max())

    @property
    def n(self) -> int:
        """Number of pairs."""
        return int(self._same.shape[0] + self._different.shape[0])

    @property
    def score_range(self) -> tuple[float, float]:
        """``(min score, max score)``; a threshold below min predicts all different, at or
        above max predicts all same."""
        return self._min, self._max

    def counts_at(self, thresholds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Vectorised ``(tp, fn, fp, tn)`` at every threshold of an array (same place when score ≤ t)."""
        t = np.asarray(thresholds, dtype=np.float64)
        tp = np.searchsorted(self._same, t, side="right")
        fp = np.searchsorted(self._different, t, side="right")
        return tp, self._same.shape[0] - tp, fp, self._different.shape[0] - fp

    def at(self, threshold: float) -> Metrics:
        """:class:`Metrics` at ``threshold`` via two binary searches."""
        t = _as_threshold(threshold)
        tp = int(np.searchsorted(self._same, t, side="right"))
        fp = int(np.searchsorted(self._different, t, side="right"))
        return _metrics_from_counts(t, tp, fp, self._different.shape[0] - fp, self._same.shape[0] - tp)


# ---------------------------------------------------------------------------------------------
# Curves and areas
# ---------------------------------------------------------------------------------------------


class _Sorted:
    """Scores sorted once, with cumulative "same" counts, shared by curves and suggestions."""

    def __init__(self, s: np.ndarray, different: np.ndarray) -> None:
        order = np.argsort(s, kind="stable")
        self.s = s[order]
        same_sorted = ~different[order]
        # cum_same[k] = number of same pairs among the k lowest scores
        self.cum_same = np.concatenate(([0], np.cumsum(same_sorted, dtype=np.int64)))
        self.n = int(s.shape[0])
        self.n_same = int(self.cum_same[-1])
        self.n_diff = self.n - self.n_same
        # last index of each run of equal scores -> distinct scores and counts at each one
        last = np.flatnonzero(np.concatenate((self.s[1:] != self.s[:-1], [True])))
        self.distinct = self.s[last]
        k = last + 1  # number of pairs with score <= distinct[j]
        self.tp = self.cum_same[k]  # predicted same & truly same, at threshold distinct[j]
        self.fp = k - self.tp  # predicted same & truly different

    def counts_at(self, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised ``(tp, fp)`` at each threshold (predicted same when score <= t)."""
        k = np.searchsorted(self.s, thresholds, side="right")
        tp = self.cum_same[k]
        return tp, k - tp


def _rate(num: np.ndarray, den: int) -> np.ndarray:
    if den == 0:
        return np.full(num.shape, np.nan)
    return num / den


def _roc(srt: _Sorted) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fpr = np.concatenate(([0.0], _rate(srt.fp, srt.n_diff)))
    tpr = np.concatenate(([0.0], _rate(srt.tp, srt.n_same)))
    if srt.n_diff == 0:
        fpr[0] = np.nan
    if srt.n_same == 0:
        tpr[0] = np.nan
    thresholds = np.concatenate(([-np.inf], srt.distinct))
    return fpr, tpr, thresholds


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve with **positive = same place** and lower score = more "same".

    Returns ``(fpr, tpr, thresholds)``, all the same length, thresholds ascending: the first
    point is ``threshold=-inf`` (nothing predicted same, ``fpr=tpr=0``), then one point per
    distinct score ``t`` with the rates of the rule "same iff score <= t"; the last point is
    ``(1, 1)``. ``fpr`` = fraction of different pairs predicted same, ``tpr`` = fraction of same
    pairs predicted same. If a class is absent its axis is all ``nan``.
    """
    return _roc(_Sorted(*_validate(scores, labels)))


def _pr(srt: _Sorted) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    precision = srt.tp / (srt.tp + srt.fp)  # denominator >= 1 at every distinct score
    recall = _rate(srt.tp, srt.n_same)
    return precision, recall, srt.distinct.copy()


def pr_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision/recall curve with **positive = same place**.

    Returns ``(precision, recall, thresholds)``, all the same length: one point per distinct
    score ``t`` (ascending, so recall is non-decreasing) for the rule "same iff score <= t".
    No synthetic end point is added. ``recall`` is all ``nan`` when there are no same pairs.
    """
    return _pr(_Sorted(*_validate(scores, labels)))


def auc(x: Any, y: Any) -> float:
    """Area under ``y(x)`` by the trapezoid rule.

    ``x`` must be monotonic (non-decreasing or non-increasing; the area is positive either way).
    Returns ``nan`` when ``x`` or ``y`` contains ``nan`` or has fewer than 2 points.
    """
    xa = _as_1d_float(x, "x", finite=False)
    ya = _as_1d_float(y, "y", finite=False)
    if xa.shape[0] != ya.shape[0]:
        raise SiameseError(
            f"x has {xa.shape[0]} values but y has {ya.shape[0]}; pass one y per x (e.g. fpr and tpr from roc_curve)."
        )
    if xa.shape[0] < 2 or np.isnan(xa).any() or np.isnan(ya).any():
        return float("nan")
    if np.isinf(xa).any() or np.isinf(ya).any():
        raise SiameseError("x and y must be finite (apart from nan) to integrate; drop the infinite points.")
    dx = np.diff(xa)
    decreasing = bool((dx < 0).any())
    if decreasing and (dx > 0).any():
        sign = np.sign(dx[dx != 0][0])  # direction of the first step that moves
        i = int(np.flatnonzero(np.sign(dx) == -sign)[0]) + 1
        raise SiameseError(
            f"x must be monotonic for auc, but it turns back at index {i} (value {float(xa[i])!r}); sort the points by x first."
        )
    area = float(np.sum(dx * (ya[1:] + ya[:-1])) / 2.0)
    return -area if decreasing else area


def _roc_auc(srt: _Sorted) -> float:
    if srt.n_same == 0 or srt.n_diff == 0:
        return float("nan")
    # Mann-Whitney: P(same score < different score) + 1/2 P(equal), over all same x different
    # pairs, computed per distinct score j from the per-score counts a_j (same) and b_j (diff).
    a = np.diff(srt.tp, prepend=0)
    b = np.diff(srt.fp, prepend=0)
    diff_above = srt.n_diff - srt.fp  # different pairs with a strictly greater score
    twice = int(np.sum(2 * a * diff_above + a * b))  # exact integer arithmetic
    return twice / (2 * srt.n_same * srt.n_diff)


def roc_auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve (positive = same place, lower score = more "same").

    Equals the Mann-Whitney probability that a random same pair scores *lower* than a random
    different pair, ties counting 1/2 (and the trapezoid area under :func:`roc_curve`).
    ``nan`` unless both classes are present.
    """
    return _roc_auc(_Sorted(*_validate(scores, labels)))


def _average_precision(srt: _Sorted) -> float:
    if srt.n_same == 0:
        return float("nan")
    precision, recall, _ = _pr(srt)
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def average_precision(scores: Any, labels: Any) -> float:
    """Average precision for the positive class **same place**: ``sum_j (R_j - R_{j-1}) P_j``
    over distinct score thresholds ascending, with ``R_0 = 0`` (step-wise, no interpolation;
    the same definition as scikit-learn's). ``nan`` when there are no same pairs."""
    return _average_precision(_Sorted(*_validate(scores, labels)))


# ---------------------------------------------------------------------------------------------
# Threshold suggestions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Suggestions:
    """Suggested thresholds (predicted same when ``score <= threshold``).

    * ``best_f1``: candidate with the highest F1 for "same place".
    * ``best_accuracy``: candidate with the highest accuracy.
    * ``target_precision``: among candidates whose precision for "same place" is ``>= target``,
      the one with the highest recall, and of those the smallest threshold; ``None`` when no
      candidate reaches the target.
    * ``target``: the precision target that was asked for.

    Candidates are the midpoints between consecutive distinct scores plus both ends: the largest
    float below the minimum score (nothing predicted same) and the maximum score (everything
    predicted same). Ties between candidates go to the smallest threshold.
    """

    best_f1: float
    best_accuracy: float
    target_precision: float | None
    target: float

    def to_dict(self) -> dict[str, Any]:
        return _dataclass_dict(self)


def _candidates(distinct: np.ndarray) -> np.ndarray:
    mids = distinct[:-1] / 2.0 + distinct[1:] / 2.0  # halves first: no overflow near float max
    low = np.nextafter(distinct[0], -np.inf)
    return np.concatenate(([low], mids, [distinct[-1]]))


def _suggest(srt: _Sorted, target: float) -> Suggestions:
    cand = _candidates(srt.distinct)
    tp, fp = srt.counts_at(cand)
    fn = srt.n_same - tp
    tn = srt.n_diff - fp
    # same formulas as _metrics_from_counts, so the values match metrics_at exactly
    accuracy = _ratios(tp + tn, np.full_like(tp, srt.n))
    f1 = _ratios(2 * tp, 2 * tp + fp + fn)
    precision = _ratios(tp, tp + fp)
    recall = _ratios(tp, tp + fn)
    reach = precision >= target
    if reach.any():
        best_recall = recall[reach].max()
        target_t: float | None = float(cand[int(np.flatnonzero(reach & (recall == best_recall))[0])])
    else:
        target_t = None
    return Suggestions(
        best_f1=float(cand[int(np.argmax(f1))]),
        best_accuracy=float(cand[int(np.argmax(accuracy))]),
        target_precision=target_t,
        target=target,
    )


def suggest_thresholds(scores: Any, labels: Any, target_precision: float = 0.99) -> Suggestions:
    """Thresholds maximising F1, maximising accuracy, and reaching ``target_precision`` for
    "same place" with the most recall. Vectorised: one sort, then cumulative sums."""
    target = _as_target(target_precision)
    return _suggest(_Sorted(*_validate(scores, labels)), target)


# ---------------------------------------------------------------------------------------------
# Full report
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """Everything ``evaluate`` shows for one set of pairs (positive class = same place)."""

    n_pairs: int
    roc_auc: float
    average_precision: float
    metrics: Metrics
    suggestions: Suggestions

    def to_dict(self) -> dict[str, Any]:
        """Nested plain values; ``nan`` areas become None."""
        return _dataclass_dict(self)


def _report(s: np.ndarray, different: np.ndarray, t: float, target: float) -> Report:
    srt = _Sorted(s, different)
    tp, fp = srt.counts_at(np.array([t]))
    tp_i, fp_i = int(tp[0]), int(fp[0])
    return Report(
        n_pairs=srt.n,
        roc_auc=_roc_auc(srt),
        average_precision=_average_precision(srt),
        metrics=_metrics_from_counts(t, tp_i, fp_i, srt.n_diff - fp_i, srt.n_same - tp_i),
        suggestions=_suggest(srt, target),
    )


def report(
    scores: Any,
    labels: Any,
    threshold: float,
    identical: Any = None,
    *,
    target_precision: float = 0.99,
) -> dict[str, Any]:
    """``{"all": Report.to_dict(), "without_identical": Report.to_dict() or None}``.

    ``identical`` is an optional bool mask (one entry per pair, 0/1 accepted) marking pairs in
    which an image is paired with itself; those are trivially "same", so the second report
    leaves them out. ``without_identical`` is None when no mask is given or when the mask
    marks every pair (nothing would remain).
    """
    s, different = _validate(scores, labels)
    t = _as_threshold(threshold)
    target = _as_target(target_precision)
    out: dict[str, Any] = {"all": _report(s, different, t, target).to_dict(), "without_identical": None}
    if identical is not None:
        mask = _as_identical(identical, s.shape[0])
        keep = ~mask
        if keep.any():
            out["without_identical"] = _report(s[keep], different[keep], t, target).to_dict()
    return out


def _as_identical(values: Any, n: int) -> np.ndarray:
    try:
        arr = np.asarray(values)
    except Exception as exc:
        raise SiameseError(f"identical could not be read as an array ({exc}); pass a flat list of True/False.") from None
    if arr.ndim != 1:
        raise SiameseError(
            f"identical must be 1-D (one flag per pair), got {_shape_text(arr)}; pass a flat list of True/False."
        )
    if arr.shape[0] != n:
        raise SiameseError(
            f"identical has {arr.shape[0]} flags but there are {n} pairs; pass one True/False per pair."
        )
    if arr.dtype.kind == "b":
        return arr.astype(bool, copy=False)
    if arr.dtype.kind not in "iuf":
        raise SiameseError(
            f"identical must be True/False (or 1/0), got dtype {arr.dtype} ({_example(arr)}); convert it with np.asarray(..., dtype=bool)."
        )
    bad = ~((arr == 0) | (arr == 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SiameseError(
            f"identical must be True/False (or 1/0), got {arr[i].item()!r} at index {i}; fix that pair's flag."
        )
    return arr == 1
