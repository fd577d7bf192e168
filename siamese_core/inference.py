"""Use a trained run: load its model safely, score pairs of files or bytes, score a CSV, embed tiles.

Scoring uses exactly the training preprocessing (:func:`siamese_core.images.load_tile` at the run's
tile size, then :func:`siamese_core.model.preprocess`). Models are only loaded from run directories,
with Keras ``safe_mode`` on: a file with a ``Lambda`` or an unknown class is refused.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ImageError, RunError, SiameseError
from .images import load_tile
from .runs import open_run, read_config, read_threshold


def load_model_safe(path: Path, compile: bool = False):
    """Load a ``.keras`` model with safe_mode; anything unsafe or unknown becomes a one-line RunError."""
    from ._backend import keras
    from . import losses, model  # noqa: F401  (registers the custom classes)
    try:
        return keras.models.load_model(path, compile=compile, safe_mode=True)
    except Exception as e:
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise RunError(f"{path}: refused to load model ({msg}); only models trained by siamese_core load") from None


@dataclass
class Scorer:
    """A run's model, tile size and decision threshold: ``score > threshold`` → different places."""

    run_dir: Path
    model: object
    size: int
    preset: str

    @property
    def threshold(self) -> float:
        """The run's saved decision threshold, read fresh (the Threshold page may have changed it)."""
        return read_threshold(self.run_dir)

    @classmethod
    def from_run(cls, run_id: str, workspace=None) -> "Scorer":
        run_dir = open_run(run_id, workspace)
        path = run_dir / "model.keras"
        if not path.exists():
            raise RunError(f"run {run_id!r} has no trained model yet (status: see `list`); wait for it to finish")
        cfg = read_config(run_dir)
        return cls(run_dir, load_model_safe(path), cfg.model.size, cfg.model.preset)

    def __post_init__(self):
        from ._backend import tf
        from .model import preprocess, tower_of
        spec = tf.TensorSpec([None, self.size, self.size, 3], tf.uint8)
        model, tower = self.model, tower_of(self.model)
        # one compiled graph per run (any batch size): a single pair costs milliseconds, not an eager call;
        # float32 out, also from a model trained with a mixed precision policy
        self._pair_fn = tf.function(lambda a, b: tf.cast(model([preprocess(a), preprocess(b)], training=False),
                                                         tf.float32), input_signature=[spec, spec])
        self._embed_fn = tf.function(lambda x: tf.cast(tower(preprocess(x), training=False), tf.float32),
                                     input_signature=[spec])

    def _call(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._pair_fn(np.asarray(a, np.uint8), np.asarray(b, np.uint8)).numpy().reshape(-1)

    def score_tiles(self, a: np.ndarray, b: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Scores for uint8 tile stacks a[i] vs b[i] (already at the run's size)."""
        out = [self._call(a[i:i + batch_size], b[i:i + batch_size]) for i in range(0, len(a), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def load(self, source, name: str | None = None) -> np.ndarray:
        """A file path or bytes → the uint8 tile the model sees."""
        return load_tile(source, self.size, name=name)

    def score_pair(self, a, b, name_a: str | None = None, name_b: str | None = None) -> float:
        ta, tb = self.load(a, name_a), self.load(b, name_b)
        return float(self._call(ta[None], tb[None])[0])

    def same_place(self, score: float, threshold: float | None = None) -> bool:
        return bool(score <= (self.threshold if threshold is None else threshold))

    def embed(self, tiles: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """Tower embeddings for uint8 tiles (N, S, S, 3)."""
        out = [self._embed_fn(np.asarray(tiles[i:i + batch_size], np.uint8)).numpy()
               for i in range(0, len(tiles), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def explain(score: float, threshold: float) -> str:
    """What a score means in words (lower = more alike)."""
    verdict = "the same place" if score <= threshold else "different places"
    margin = abs(score - threshold)
    strength = "clearly" if margin > 0.25 * max(threshold, 1e-6) else "narrowly"
    return (f"score {score:.4f} is {strength} {'below' if score <= threshold else 'above'} the threshold "
            f"{threshold:.4f}: the model judges these tiles to show {verdict} (lower score = more alike)")


# --- CSV of pairs -------------------------------------------------------------------------------

def read_pairs_csv(path: Path) -> tuple[list[dict], list[str], list[int]]:
    """Rows of a pairs CSV (columns image_a, image_b; others kept), its columns, and the line each row
    starts on. Handles BOM (UTF-8 and UTF-16), quotes (also quoted commas and newlines), blank lines,
    non-UTF-8 bytes (decoded as Windows-1252, else Latin-1).
    Raises SiameseError if the required columns are missing or the file is not a readable CSV."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SiameseError(f"{path}: cannot read CSV ({e.strerror or e})") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # "Unicode text" exports from spreadsheets
        text = raw.decode("utf-16", errors="replace")
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            try:
                text = raw.decode("cp1252")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
    text = text.replace("\x00", "")
    # newline="" lets the csv module split lines itself: only \r and \n end a row (not U+0085 or U+2028,
    # which str.splitlines would split on), and quoted fields may hold newlines
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next((r for r in reader if any(c.strip() for c in r)), [])
        cols = [c.strip() for c in header]
        missing = [c for c in ("image_a", "image_b") if c not in cols]
        if missing:
            raise SiameseError(f"{path}: missing column(s) {missing}; a pairs CSV needs a header with image_a,image_b "
                               f"(found {cols or 'no header'})")
        rows, lines, start = [], [], reader.line_num + 1
        for r in reader:
            if any(c.strip() for c in r):  # blank lines are skipped
                rows.append({c: (r[i] if i < len(r) else "") for i, c in enumerate(cols)})
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as e:
        raise SiameseError(f"{path}: not a readable CSV (line {reader.line_num}: {e})") from None
    return rows, cols, lines


def score_csv(scorer: Scorer, in_csv: Path, out_csv: Path, threshold: float | None = None,
              progress=None) -> dict:
    """Score every valid row of ``in_csv`` into ``out_csv`` (adds score, same_place, error).

    Paths are absolute or relative to the CSV. Bad rows keep an empty score and say why in ``error``.
    Returns {"scored": n, "failed": [(line_number, reason), ...]}; the output is written atomically.
    """
    in_csv, out_csv = Path(in_csv), Path(out_csv)
    rows, cols, lines = read_pairs_csv(in_csv)
    t = scorer.threshold if threshold is None else threshold
    base = in_csv.parent
    failed = []
    todo = []
    for k, (r, n) in enumerate(zip(rows, lines), start=1):
        r["score"], r["same_place"], r["error"] = "", "", ""
        try:
            pa, pb = (r["image_a"].strip(), r["image_b"].strip())
            if not pa or not pb:
                raise SiameseError("empty image_a or image_b")
            ta = scorer.load(base / pa, pa)
            tb = scorer.load(base / pb, pb)
            todo.append((r, ta, tb))
        except SiameseError as e:
            r["error"] = str(e)
            failed.append((n, str(e)))
        if progress:
            progress(k, len(rows))
    if todo:
        scores = scorer.score_tiles(np.stack([x[1] for x in todo]), np.stack([x[2] for x in todo]))
        for (r, _, _), s in zip(todo, scores):
            r["score"] = f"{float(s):.6f}"
            r["same_place"] = "true" if s <= t else "false"
    out_cols = cols + [c for c in ("score", "same_place", "error") if c not in cols]
    tmp = out_csv.with_name(f".{out_csv.name}.tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=out_cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, out_csv)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise SiameseError(f"{out_csv}: cannot write output CSV ({e.strerror or e})") from None
    return {"scored": len(todo), "failed": failed, "threshold": t}


__all__ = ["Scorer", "load_model_safe", "score_csv", "read_pairs_csv", "explain", "ImageError"]
