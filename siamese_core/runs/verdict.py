"""A run's verdict: the fusion (once calibrated) and the decision threshold, saved together as one file.

Why this module exists: a fused score (0…1) judged against a threshold meant for the learned distance (0…2), or
against the threshold of an earlier fusion, gives wrong verdicts and no error. Runs used to keep the two in
``fusion.json`` and ``threshold.json``, written one after the other, so a crash between them did exactly that. Now
:meth:`RunVerdict.save_verdict` writes both into ``verdict.json`` in one atomic, durable rename, and every reader
(the scorer, the pages, the Ray jobs) gets both from one read (:meth:`RunVerdict.verdict`).

The fusion is kept as the plain dict the judge layer made (its ``to_dict()``): this layer stores it and hands it
back, whatever it holds. Runs from before ``verdict.json`` still load (:func:`legacy_verdict`).

Part of :class:`~siamese_core.runs.run.Run` (which inherits :class:`RunVerdict` and names the files).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from ..core.errors import RunError
from ..core.files import read_json, write_json_atomic
from ..core.keys import digest

FUSED_SOURCE = "calibrated (fusion)"  # the threshold's source when calibrate fitted it with the fusion


def threshold_entry(info) -> dict | None:
    """``{"threshold": float, "source", "saved"}`` from a saved entry, or None when it is missing or unreadable."""
    try:
        t = float(info["threshold"])
    except (KeyError, TypeError, ValueError):
        return None
    if not math.isfinite(t):
        return None
    return {**info, "threshold": t}


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def legacy_verdict(fusion_path: Path, threshold_path: Path) -> dict:
    """The verdict of a run from before ``verdict.json``: ``fusion.json`` and ``threshold.json``, written one after the
    other (fusion first). A crash between the two left a new fusion beside the old threshold; that pairing is never
    returned. The saved threshold is kept with a fusion only when it is the one calibrated with it (same value) or
    one the user chose after it (saved later); otherwise the fusion's own fitted threshold is used."""
    fusion = read_json(fusion_path)
    fusion = fusion if isinstance(fusion, dict) else None
    thr = threshold_entry(read_json(threshold_path))
    if fusion is None:
        return {"fusion": None, "threshold": thr}
    own = threshold_entry(fusion)
    if own is None:
        return {"fusion": fusion, "threshold": thr}
    matches = thr is not None and (
        (thr.get("source") == FUSED_SOURCE and abs(thr["threshold"] - own["threshold"]) < 1e-9)
        or (thr.get("source") == "user" and _mtime(threshold_path) >= _mtime(fusion_path)))
    if matches:
        return {"fusion": fusion, "threshold": thr}
    return {"fusion": fusion, "threshold": {"threshold": own["threshold"], "source": FUSED_SOURCE, "saved": ""}}


class RunVerdict:
    """The verdict of a run (mixed into :class:`~siamese_core.runs.run.Run`, which names its files)."""

    @property
    def verdict_path(self) -> Path:
        return self.path / self.VERDICT

    def verdict(self) -> dict:
        """What a score is judged with, read at once: ``{"fusion": the fusion's dict or None, "threshold":
        {"threshold", "source", "saved"} or None}``. The fusion's dict is whatever the judge layer saved; it is not
        looked into here. A run from before ``verdict.json`` is read from its two files (:func:`legacy_verdict`, which
        never pairs a fusion with a threshold not meant for it)."""
        v = read_json(self.verdict_path)
        if isinstance(v, dict) and "threshold" in v:
            fusion = v.get("fusion")
            return {"fusion": fusion if isinstance(fusion, dict) else None,
                    "threshold": threshold_entry(v["threshold"])}
        return legacy_verdict(self.path / self.FUSION, self.path / self.THRESHOLD)

    def save_verdict(self, fusion: dict | None, threshold: float, source: str) -> None:
        """Save the fusion's dict (None: the learned distance alone) and its threshold as one file, atomically and
        durably: a reader, or a process started after a crash, sees the old pair or the new one, never a mix. The
        files of the older layout are removed afterwards (the new file wins over them in the meantime)."""
        self._writable()
        with self._locked():
            self._write_verdict(fusion, threshold, source)

    def _write_verdict(self, fusion, threshold: float, source: str) -> None:
        saved = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json_atomic(self.verdict_path, {
            "format": 1, "fusion": fusion, "threshold": {"threshold": float(threshold), "source": source, "saved": saved}})
        for name in self.LEGACY_VERDICT:
            (self.path / name).unlink(missing_ok=True)

    def verdict_key(self) -> str:
        """A digest of the fusion (None: no fusion): what a cached fused score depends on besides the model."""
        return digest(self.verdict()["fusion"])

    def verdict_stamp(self) -> tuple:
        """Modification times of every file the verdict may be read from, for caches keyed on them."""
        out = []
        for name in (self.VERDICT, *self.LEGACY_VERDICT):
            try:
                out.append((self.path / name).stat().st_mtime_ns)
            except OSError:
                out.append(0)
        return tuple(out)

    def fusion_dict(self) -> dict | None:
        """The fusion's dict, or None when the run judges with the learned distance alone."""
        return self.verdict()["fusion"]

    def has_fusion(self) -> bool:
        return self.fusion_dict() is not None

    def threshold_info(self) -> dict | None:
        """``{"threshold", "source", "saved"}``, or None when the run has no (readable) threshold."""
        return self.verdict()["threshold"]

    def threshold(self) -> float:
        """The saved decision threshold; a RunError naming the fix when there is none."""
        info = self.threshold_info()
        if info is None:
            raise RunError(f"run {self.name!r} has no decision threshold yet; wait for its training to finish "
                           f"(or calibrate it)")
        return info["threshold"]

    def user_threshold(self) -> float | None:
        """The threshold the user saved (source 'user'), else None."""
        info = self.threshold_info()
        return info["threshold"] if info and info.get("source") == "user" else None

    def save_threshold(self, threshold: float, source: str = "user") -> None:
        """A new threshold for the run's present fusion (or learned distance), saved with it as one file."""
        self._writable()
        with self._locked():
            self._write_verdict(self.verdict()["fusion"], threshold, source)


__all__ = ["RunVerdict", "legacy_verdict", "threshold_entry", "FUSED_SOURCE"]
