"""Use a trained run: load its model safely, score pairs of files or bytes, score a CSV, embed tiles.

Scoring uses exactly the training preprocessing (:func:`siamese_core.data.images.load_tile` at the run's
tile size, then :func:`siamese_core.learn.model.preprocess`). Models are only loaded from run directories,
with Keras ``safe_mode`` on: a file with a ``Lambda`` or an unknown class is refused.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import ImageError, RunError, SiameseError
from ..core.files import write_text_atomic
from ..core.keys import digest
from ..data.images import decode_image, load_tile, to_tile
from ..data.pairs_csv import csv_text, read_pairs_csv, resolve_image
from ..runs.registry import open_run
from ..runs.run import PRETRAINED, Run
from .fusion import Band, fusion_from_dict


@dataclass(frozen=True)
class Prepared:
    """One decoded tile, ready to be judged: the model's input, a small RGB copy and its keypoints."""

    tile: np.ndarray           # (size, size, 3) uint8: what the network sees
    image: np.ndarray          # RGB at the geometric step's working resolution (for aligned views)
    features: object           # geometry.TileFeatures


@dataclass(frozen=True)
class Judgement:
    """The verdict on one pair and the evidence behind it (lower score = more alike)."""

    score: float
    same_place: bool           # score <= threshold: the call at the shipped threshold
    distance: float            # the learned distance (as given, or the smaller of that and B aligned onto A)
    geo: object                # geometry.GeoMatch
    contributions: dict        # log-odds each piece of evidence adds toward "same" (fused runs only)
    verdict: str = ""          # "same", "different" or "uncertain" (inside the fusion's band)
    reason: str = ""           # why the verdict is uncertain

    def as_row(self) -> dict:
        return {"score": f"{self.score:.6f}", "same_place": "true" if self.same_place else "false",
                "verdict": self.verdict, "reason": self.reason, "distance": f"{self.distance:.6f}",
                **self.geo.as_row()}


EVIDENCE = {"distance": "the learned distance", "sift": "the SIFT keypoint matches", "orb": "the ORB keypoint matches",
            "structure": "the edge agreement once aligned", "structure_identity": "the edge agreement as laid",
            "keypoints": "the number of keypoints on the tiles",
            "structure_local": "the edge agreement of the part that stayed",
            "structure_peak": "how sharply the edges agree as laid (not at other placements too)"}


def uncertain_reason(contributions: dict, geo) -> str:
    """Why a pair falls in the uncertain band: the strongest evidence on each side, in words."""
    if not contributions:
        return "the score is too close to the threshold to decide"
    pro = max(contributions, key=contributions.get)
    con = min(contributions, key=contributions.get)
    thin = "" if geo.found else f"; {geo.reason or 'no keypoints agree'}"
    return (f"thin evidence on both sides: for the same place, {EVIDENCE.get(pro, pro)} ({contributions[pro]:+.1f}); "
            f"for different places, {EVIDENCE.get(con, con)} ({contributions[con]:+.1f}){thin}")


EPS = 1e-7  # = model.EPS: the distance layer's floor under the squared distance
ALIGN_MIN_INLIERS = 8  # below this a transform is too weak to realign tile B for the learned distance
ALIGN_DECISIVE = 30    # from this many inliers the keypoints decide alone: tile B is not realigned (a third
# pass through the model, 3 ms a pair on one core); on the 2,172 development pairs no verdict changed


@dataclass
class Scorer:
    """A run's model, tile size, fusion and decision threshold: ``score > threshold`` → different places.

    With a fitted fusion the score is the fused ``1 − P(same place)`` over the learned distance and the
    geometric evidence; without one (a run not calibrated yet) it is the model's own output. The fusion and the
    threshold come from the run's verdict, read together (:meth:`Run.verdict <siamese_core.runs.run.Run.verdict>`):
    when the run is calibrated again while this scorer lives, reading the threshold brings the new fusion with it."""

    run: Run
    model: object
    size: int
    preset: str
    fusion: object = None
    fusion_key: str = ""  # digest of the fusion's dict this scorer holds ("" until read from the run)

    @property
    def threshold(self) -> float:
        """The run's saved decision threshold, read fresh (the Threshold page may have changed it), with the fusion it
        belongs to (taken up here when the run was calibrated again since)."""
        if not isinstance(self.run, Run):  # a bare model (benchmarks): no verdict on disk
            raise RunError("this scorer has no run, hence no saved threshold; pass a threshold")
        v = self.run.verdict()
        key = digest(v["fusion"])
        if key != self.fusion_key:
            self.fusion, self.fusion_key = (fusion_from_dict(v["fusion"]) if v["fusion"] is not None else None), key
        if v["threshold"] is None:
            return self.run.threshold()  # the one-line error naming the fix
        return v["threshold"]["threshold"]

    @property
    def name(self) -> str:
        return self.run.name

    @classmethod
    def from_run(cls, run_id: str | None = None, workspace=None) -> "Scorer":
        """The scorer of run ``run_id``; ``None`` means the model bundled with the package."""
        run = open_run(run_id or PRETRAINED, workspace)
        if not run.has_model():
            raise RunError(f"run {run_id!r} has no trained model yet (status: see `list`); wait for it to finish")
        cfg = run.config
        d = run.fusion_dict()
        fusion = fusion_from_dict(d) if d is not None else None
        from ..learn.model import load_model_safe
        return cls(run, load_model_safe(run.model_path), cfg.model.size, cfg.model.preset, fusion, digest(d))

    def __post_init__(self):
        from ..core.backend import tf
        from ..learn.model import inference_tower, preprocess, tower_of
        spec = tf.TensorSpec([None, self.size, self.size, 3], tf.uint8)
        model, tower = self.model, inference_tower(tower_of(self.model))
        # one compiled graph per run (any batch size): a single pair costs milliseconds, not an eager call;
        # float32 out, also from a model trained with a mixed precision policy
        self._pair_fn = tf.function(lambda a, b: tf.cast(model([preprocess(a), preprocess(b)], training=False),
                                                         tf.float32), input_signature=[spec, spec])
        self._embed_fn = tf.function(lambda x: tf.cast(tower(preprocess(x), training=False), tf.float32),
                                     input_signature=[spec])

    def _call(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._pair_fn(np.asarray(a, np.uint8), np.asarray(b, np.uint8)).numpy().reshape(-1)

    def score_tiles(self, a: np.ndarray, b: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """The model's own output (the learned distance) for uint8 tile stacks a[i] vs b[i] at the run's size."""
        out = [self._call(a[i:i + batch_size], b[i:i + batch_size]) for i in range(0, len(a), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def load(self, source, name: str | None = None, bands=None) -> np.ndarray:
        """A file path or bytes → the uint8 tile the model sees (``bands``: as :meth:`prepare` takes them)."""
        return load_tile(source, self.size, name=name, bands=bands)

    def prepare(self, source, name: str | None = None, bands=None) -> Prepared:
        """Decode once (path, bytes or an RGB array) → what :meth:`judge` needs; ``bands`` chooses a raster's bands
        (:func:`~siamese_core.data.rasters.parse_bands`). Raises ImageError."""
        from .geometry import MAX_SIDE, features, working_image
        img = source if isinstance(source, np.ndarray) else decode_image(source, name=name, bands=bands,
                                                                          max_side=max(self.size, MAX_SIDE))
        small, f = working_image(img)
        return Prepared(to_tile(img, self.size), small, features(small, f, img.shape[:2]))

    def judge(self, pairs: list, threshold: float | None = None, workers: int | None = None) -> list:
        """Judgements for a list of (Prepared A, Prepared B); the geometric step runs on every core."""
        from .fusion import feature_row
        from .geometry import match, warp_onto
        if not pairs:
            return []
        t = self.threshold if threshold is None else threshold
        if len(pairs) == 1:
            geos = [match(pairs[0][0].features, pairs[0][1].features)]
        else:
            with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
                geos = list(pool.map(lambda p: match(p[0].features, p[1].features), pairs))
        # different footprints and scales: once the keypoints have found the transform, also compare tile A
        # with tile B laid onto it, and keep the better evidence (unless the keypoints already decide)
        redo = [i for i, g in enumerate(geos) if ALIGN_MIN_INLIERS <= g.inliers < ALIGN_DECISIVE]
        aligned = [to_tile(warp_onto(pairs[i][0].image, pairs[i][1].image, geos[i], working=True), self.size)
                   for i in redo]
        dist = self._distances([p[0].tile for p in pairs], [p[1].tile for p in pairs], redo, aligned)
        if self.fusion is not None:
            rows = [feature_row(d, g) for d, g in zip(dist, geos)]
            scores = self.fusion.scores(rows)
            contrib = [self.fusion.contributions(r) for r in rows]
        else:
            scores, contrib = dist, [{} for _ in pairs]
        out = []
        for s, d, g, c in zip(scores, dist, geos, contrib):
            verdict = self.band.verdict(float(s), t)
            out.append(Judgement(float(s), bool(s <= t), float(d), g, c, verdict,
                                 uncertain_reason(c, g) if verdict == "uncertain" else ""))
        return out

    @property
    def band(self) -> Band:
        """Where the verdict is ``uncertain`` around the threshold (none for runs without a fitted band)."""
        return getattr(self.fusion, "band", None) or Band()

    def _distances(self, a: list, b: list, redo: list, aligned: list) -> np.ndarray:
        """Learned distance of a[i] and b[i]; for i in ``redo`` the smaller of that and a[i] vs aligned."""
        if self.preset == "seed":  # its score is a learned head on the distance: run the whole model
            dist = self.score_tiles(np.stack(a), np.stack(b))
            if redo:
                dist[redo] = np.minimum(dist[redo], self.score_tiles(np.stack([a[i] for i in redo]), np.stack(aligned)))
            return dist
        # the model's output is the distance of the embeddings: embed every tile once, in one call
        e = self.embed(np.stack(a + b + aligned))
        n = len(a)
        ea, eb, ec = e[:n], e[n:2 * n], e[2 * n:]
        dist = np.sqrt(np.maximum(np.sum((ea - eb) ** 2, axis=1), EPS)).astype(np.float32)
        if redo:
            d2 = np.sqrt(np.maximum(np.sum((ea[redo] - ec) ** 2, axis=1), EPS))
            dist[redo] = np.minimum(dist[redo], d2)
        return dist

    def judge_pair(self, a, b, name_a: str | None = None, name_b: str | None = None,
                   threshold: float | None = None) -> Judgement:
        return self.judge([(self.prepare(a, name_a), self.prepare(b, name_b))], threshold)[0]

    def score_pair(self, a, b, name_a: str | None = None, name_b: str | None = None) -> float:
        return self.judge_pair(a, b, name_a, name_b).score

    def same_place(self, score: float, threshold: float | None = None) -> bool:
        return bool(score <= (self.threshold if threshold is None else threshold))

    def embed(self, tiles: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """Tower embeddings for uint8 tiles (N, S, S, 3)."""
        from ..core.backend import tf
        fn = self.__dict__.get("_embed_graph")  # the traced graph itself: 0.4 ms less a call than the tf.function
        if fn is None:
            fn = self.__dict__["_embed_graph"] = self._embed_fn.get_concrete_function()
        out = [fn(tf.constant(np.asarray(tiles[i:i + batch_size], np.uint8))).numpy()
               for i in range(0, len(tiles), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def familiarity(self, prepared: list) -> list | None:
        """How each tile (a :class:`Prepared`, or a uint8 tile at the run's size) compares with what the run was
        trained on (:mod:`siamese_core.judge.familiarity`), or None when the run has no reference. The
        reference is read on first use and again only when its file changes."""
        from ..data.images import tiles_at
        from .familiarity import familiarity, load_reference
        try:
            stamp = self.run.reference_path.stat().st_mtime_ns
        except OSError:
            return None
        cached = self.__dict__.get("_reference")
        if cached is None or cached[0] != stamp:
            cached = (stamp, load_reference(self.run.reference_path, self.run.model_path))
            self.__dict__["_reference"] = cached
        if cached[1] is None or not prepared:
            return None if cached[1] is None else []
        tiles = np.concatenate([tiles_at(getattr(p, "tile", p), self.size) for p in prepared])
        return familiarity(cached[1], self.embed(tiles), tiles)


def explain(score: float, threshold: float, band: Band | None = None) -> str:
    """What a score means in words (lower = more alike)."""
    if band is not None and band.verdict(score, threshold) == "uncertain":
        return (f"score {score:.4f} lies within the uncertain band {threshold - band.below:.4f}–"
                f"{threshold + band.above:.4f} around the threshold {threshold:.4f}: the evidence is too thin to "
                f"tell whether these tiles show the same place")
    verdict = "the same place" if score <= threshold else "different places"
    margin = abs(score - threshold)
    strength = "clearly" if margin > 0.25 * max(threshold, 1e-6) else "narrowly"
    return (f"score {score:.4f} is {strength} {'below' if score <= threshold else 'above'} the threshold "
            f"{threshold:.4f}: the model judges these tiles to show {verdict} (lower score = more alike)")


class _Cache:
    """Prepared tiles by file name, least recently used dropped first (a CSV names one tile many times)."""

    def __init__(self, scorer: Scorer, base: Path, size: int = 512, cwd=None, bands=None):
        self.scorer, self.base, self.size, self.items, self.cwd = scorer, base, size, OrderedDict(), cwd
        self.bands = bands
        self.lock = threading.Lock()

    def get(self, name: str) -> Prepared:
        with self.lock:
            got = self.items.get(name)
            if got is not None:
                self.items.move_to_end(name)
        if got is None:
            path = resolve_image(name, self.base, self.cwd)
            try:
                got = self.scorer.prepare(path, name, bands=self.bands)
            except ImageError as e:
                got = e
            with self.lock:
                self.items[name] = got
                while len(self.items) > self.size:
                    self.items.popitem(last=False)
        if isinstance(got, ImageError):
            raise got
        return got


def judge_rows(scorer: Scorer, rows: list[dict], base: Path, threshold: float | None = None,
               progress=None, chunk: int = 0, cwd=None, bands=None) -> list:
    """A Judgement (or the SiameseError that stopped it) for every row with ``image_a``/``image_b`` paths
    (absolute, relative to ``base``, else relative to ``cwd``, by default the working directory:
    :func:`~siamese_core.data.pairs_csv.resolve_image`). Tiles are decoded once and in parallel; memory stays
    bounded. ``bands`` chooses every raster's bands (plain images ignore it)."""
    cache = _Cache(scorer, Path(base), cwd=cwd, bands=bands)
    chunk = chunk or min(128, max(8, len(rows) // 20))  # progress at least every 5 %, memory bounded
    out: list = [None] * len(rows)
    workers = os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for lo in range(0, len(rows), chunk):
            idx = list(range(lo, min(lo + chunk, len(rows))))
            names = {n for i in idx for n in (rows[i].get("image_a", "").strip(), rows[i].get("image_b", "").strip()) if n}
            # decode and find keypoints on every core; the cache keeps what the next chunk may reuse
            list(pool.map(lambda n: _safe(cache.get, n), sorted(names)))
            todo = []
            for i in idx:
                pa, pb = rows[i].get("image_a", "").strip(), rows[i].get("image_b", "").strip()
                try:
                    if not pa or not pb:
                        raise SiameseError("empty image_a or image_b")
                    todo.append((i, cache.get(pa), cache.get(pb)))
                except SiameseError as e:
                    out[i] = e
            for (i, _, _), j in zip(todo, scorer.judge([(a, b) for _, a, b in todo], threshold, workers)):
                out[i] = j
            if progress:
                progress(idx[-1] + 1, len(rows))
    return out


def _safe(fn, *args):
    try:
        return fn(*args)
    except SiameseError as e:
        return e


GEO_COLUMNS = ("distance", "inliers", "sift_inliers", "orb_inliers", "angle", "scale", "overlap", "polygon",
               "structure", "geometry")
OUT_COLUMNS = ("score", "same_place", "verdict", "reason", *GEO_COLUMNS, "error")  # what scoring adds, in order


def scored_rows(rows: list[dict], cols: list[str], lines: list[int], results: list) -> tuple[list, list, list]:
    """The table `score --pairs` writes: each row with OUT_COLUMNS filled from its Judgement, or its
    error (a SiameseError or a string). Returns (rows, columns, [(line, reason), ...] of failed rows)."""
    out, failed = [], []
    for r, n, j in zip(rows, lines, results):
        r = {**r, **{c: "" for c in OUT_COLUMNS}}
        if isinstance(j, Judgement):
            r.update(j.as_row())
        else:
            r["error"] = str(j)
            failed.append((n, str(j)))
        out.append(r)
    return out, cols + [c for c in OUT_COLUMNS if c not in cols], failed


def score_csv(scorer: Scorer, in_csv: Path, out_csv: Path, threshold: float | None = None,
              progress=None, bands=None) -> dict:
    """Score every valid row of ``in_csv`` into ``out_csv``: adds score, same_place, verdict (same, different
    or uncertain) and its reason, the evidence (GEO_COLUMNS: learned distance, keypoint inliers, estimated
    angle and scale, the part of A that B covers, edge agreement, one sentence) and error. Paths are absolute, relative to the CSV, else to the working directory. Bad rows
    keep an empty score and say why in ``error``. Returns {"scored": n, "failed": [(line_number, reason),
    ...], "threshold": t}; the output is written atomically, every cell that a spreadsheet would run as a formula
    neutralised (:func:`~siamese_core.data.pairs_csv.csv_text`). ``bands`` (e.g. (4, 3, 2)) chooses the bands of
    every raster named in the CSV; by default each raster's own colour marks decide."""
    in_csv, out_csv = Path(in_csv), Path(out_csv)
    rows, cols, lines = read_pairs_csv(in_csv)
    t = scorer.threshold if threshold is None else threshold
    out, out_cols, failed = scored_rows(rows, cols, lines,
                                        judge_rows(scorer, rows, in_csv.parent, t, progress, bands=bands))
    try:
        write_text_atomic(out_csv, csv_text(out, out_cols))
    except OSError as e:
        raise SiameseError(f"{out_csv}: cannot write output CSV ({e.strerror or e}); nothing was written") from None
    return {"scored": len(out) - len(failed), "failed": failed, "threshold": t}


__all__ = ["Scorer", "Judgement", "Prepared", "judge_rows", "scored_rows", "score_csv", "explain", "OUT_COLUMNS",
           "GEO_COLUMNS", "ImageError", "uncertain_reason", "EVIDENCE"]
