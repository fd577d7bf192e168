"""Say when the model is out of its depth: is this tile like anything the run was trained on?

Why this module exists: a verdict on a pair is only as good as the model's grasp of the imagery. A run
trained on aerial photographs still returns a confident-looking score for a radar image, a map, a cloud
or a corrupt file, and nothing in the score says so. A run therefore keeps a small reference of what it
saw — ``reference.npz`` next to its model — and every tile judged is compared with it:

    embeddings   (M, D) float16: the tower's embeddings of up to 2,000 training tiles (a seeded sample)
    colour       (M, 7) float32: each of those tiles' mean and standard deviation of R, G and B (0…255)
                 and its coherence (see :func:`colour_stats`: how neighbouring pixels or channels agree)
    colour_mean, colour_std  (7,): the mean and spread of those statistics over the sample
    nn_p99, nn_median        the 99th percentile and the median of each sample tile's distance to its
                             nearest other sample tile (of another place, when the places are known)
    model_sha1               the model file the embeddings came from (a retrained model ignores it)

A tile is *unfamiliar* when its nearest training embedding is farther than ``nn_p99 × 1.25`` (it looks
unlike every training tile, by the model's own measure), or when one of its colour statistics lies more
than 4 standard deviations from the training tiles' (the tower standardises colour away, so colour is
checked on its own; the seventh statistic, coherence, is what tells random noise from a fine texture). Either way the verdict may still be right, but it rests on imagery the model has not
learnt; the dashboard says so under the verdict. No reference, no warning.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.files import atomic_file
from ..data.images import tiles_at

MAX_TILES = 2000
NN_FACTOR = 1.25      # unfamiliar beyond nn_p99 × this
COLOUR_Z = 4.0        # unfamiliar beyond this many standard deviations of a colour statistic
STAT_NAMES = ("red mean", "green mean", "blue mean", "red spread", "green spread", "blue spread", "coherence")
BATCH = 256


def colour_stats(tiles) -> np.ndarray:
    """(N, 7) float32 per tile: the mean and standard deviation of R, G and B (0…255), and its *coherence*:
    how much neighbouring pixels, or else the colour channels, vary together — the larger of the lag-1
    spatial autocorrelation of the brightness and the smallest correlation between two channels, Fisher-
    transformed (``atanh``, so that its spread is about symmetric). Imagery has one or the other (a fine
    texture still has correlated channels; a colourful scene still has smooth neighbours); noise has neither.
    A flat tile counts as fully coherent."""
    t = np.asarray(tiles)
    if t.ndim == 3:
        t = t[None]
    f = t.astype(np.float32)
    flat = f.reshape(len(f), -1, f.shape[-1])
    mean, std = flat.mean(axis=1), flat.std(axis=1)
    c = flat - mean[:, None, :]
    denom = np.maximum(std, 1e-3)
    corr = np.full(len(f), 1.0, np.float32)
    for i, j in ((0, 1), (1, 2), (0, 2)):
        cij = (c[:, :, i] * c[:, :, j]).mean(axis=1) / (denom[:, i] * denom[:, j])
        cij = np.where((std[:, i] < 0.5) | (std[:, j] < 0.5), 1.0, cij)  # a flat channel: nothing to disagree
        corr = np.minimum(corr, cij)
    g = f @ np.array([0.299, 0.587, 0.114], np.float32)
    g -= g.mean(axis=(1, 2), keepdims=True)
    var = (g ** 2).mean(axis=(1, 2))
    lag = ((g[:, :, 1:] * g[:, :, :-1]).mean(axis=(1, 2)) + (g[:, 1:] * g[:, :-1]).mean(axis=(1, 2))) / 2
    auto = np.where(var > 0.25, lag / np.maximum(var, 1e-6), 1.0)
    coherence = np.arctanh(np.clip(np.maximum(auto, corr), -0.995, 0.995))
    return np.concatenate([mean, std, coherence[:, None]], axis=1).astype(np.float32)


def _model_sha1(model_path) -> str:
    """The SHA-1 of a model file ("" when it cannot be read): what ties a reference to the model it came from."""
    p = Path(model_path)
    try:
        h = hashlib.sha1()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:
        return ""


def _distances(q: np.ndarray, ref: np.ndarray) -> np.ndarray:
    q, ref = q.astype(np.float64), ref.astype(np.float64)
    d2 = (q ** 2).sum(1)[:, None] + (ref ** 2).sum(1)[None, :] - 2.0 * q @ ref.T
    return np.sqrt(np.maximum(d2, 0.0))


def build_reference(scorer, tiles, seed: int = 0, groups=None, max_tiles: int = MAX_TILES) -> dict:
    """The reference of ``scorer``'s run from its training ``tiles`` (uint8 (N, S, S, 3): an array, a memmap or
    :class:`~siamese_core.data.store.TileRows`): a seeded sample of up to ``max_tiles``, embedded at the run's size.
    ``groups`` (the place of each tile), when given, keeps a place's own other views out of the nearest-
    neighbour distances, so ``nn_p99`` measures "a new place of this kind", not "a rotated copy"."""
    n = len(tiles)
    if n < 2:
        raise ValueError(f"a reference needs at least 2 training tiles, got {n}")
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(n, max_tiles), replace=False))
    emb, col = [], []
    for lo in range(0, len(rows), BATCH):
        t = tiles_at(tiles[rows[lo:lo + BATCH]], scorer.size)
        emb.append(np.asarray(scorer.embed(t), np.float32))
        col.append(colour_stats(t))
    emb, col = np.concatenate(emb), np.concatenate(col)
    from .collection import nearest_neighbour_distances
    g = None if groups is None else np.asarray(groups)[rows]
    nn = nearest_neighbour_distances(emb, g)
    nn = nn[np.isfinite(nn)]
    return {"embeddings": emb.astype(np.float16), "colour": col,
            "colour_mean": col.mean(axis=0), "colour_std": col.std(axis=0),
            "nn_p99": float(np.percentile(nn, 99)), "nn_median": float(np.median(nn)),
            "count": int(len(rows)), "seed": int(seed), "size": int(scorer.size),
            "model_sha1": _model_sha1(scorer.run.model_path)}


def save_reference(path, ref: dict) -> Path:
    """Write ``ref`` to ``path``, a run's reference file (:attr:`Run.reference_path
    <siamese_core.runs.run.Run.reference_path>`), compressed, written aside and renamed into place."""
    path = Path(path)
    with atomic_file(path) as tmp:
        np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in ref.items()})
    return path


def load_reference(path, model_path=None) -> dict | None:
    """The reference in ``path`` (a run's :attr:`~siamese_core.runs.run.Run.reference_path`), or None when there is
    none, it is unreadable, or it was made from another model file than ``model_path`` (the run's model, when it
    has one: the run was retrained since)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            ref = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError):
        return None
    need = ("embeddings", "colour_mean", "colour_std", "nn_p99")
    if any(k not in ref for k in need) or len(ref["embeddings"]) == 0:
        return None
    for k in ("nn_p99", "nn_median", "count", "seed", "size", "model_sha1"):
        if k in ref:
            ref[k] = ref[k].item()
    sha = ref.get("model_sha1") or ""
    if sha and model_path is not None and Path(model_path).exists() and sha != _model_sha1(model_path):
        return None
    return ref


@dataclass(frozen=True)
class Familiarity:
    """How a tile compares with the run's training tiles."""

    unfamiliar: bool
    nn_distance: float   # distance to the nearest training embedding (lower = more alike)
    colour_z: float      # largest |z| of its six colour statistics against the training tiles'
    reason: str          # one sentence


def _describe(k: int, value: float, mean: float, std: float) -> str:
    """One colour statistic against the training tiles', as a clause."""
    if STAT_NAMES[k] == "coherence":  # shown as the correlation it came from (0 = noise, 1 = smooth)
        v, m = round(float(np.tanh(value)), 2) + 0.0, round(float(np.tanh(mean)), 2) + 0.0
        if value < mean:
            return f"its pixels vary together far less than the training tiles' do, like noise (coherence {v:.2f} vs {m:.2f} typical)"
        return f"its pixels vary together far more than the training tiles' do (coherence {v:.2f} vs {m:.2f} typical)"
    return f"its colours are unlike the training tiles' ({STAT_NAMES[k]} {value:.0f} vs {mean:.0f} ± {std:.0f})"


def familiarity(ref: dict, embeddings, tiles) -> list[Familiarity]:
    """A :class:`Familiarity` for each tile (``tiles`` uint8 (N, S, S, 3), ``embeddings`` their tower
    embeddings, row for row)."""
    emb = np.asarray(embeddings, np.float32)
    if emb.ndim == 1:
        emb = emb[None]
    if len(emb) == 0:
        return []
    nn = _distances(emb, np.asarray(ref["embeddings"], np.float32)).min(axis=1)
    limit = float(ref["nn_p99"]) * NN_FACTOR
    typical = float(ref.get("nn_median", ref["nn_p99"]))
    stats = colour_stats(tiles)
    mean = np.asarray(ref["colour_mean"], np.float64)
    m = min(len(mean), stats.shape[1])  # a reference with the six colour statistics only still works
    stats, mean = stats[:, :m], mean[:m]
    # a spread under 1 grey level (0.05 for the coherence) is no spread
    floor = np.array([1.0] * 6 + [0.05])[:m]
    std = np.maximum(np.asarray(ref["colour_std"], np.float64)[:m], floor)
    z = (stats - mean) / std
    out = []
    for i in range(len(emb)):
        k = int(np.abs(z[i]).argmax())
        cz = float(abs(z[i, k]))
        far, odd = bool(nn[i] > limit), bool(cz > COLOUR_Z)
        colour = _describe(k, float(stats[i, k]), float(mean[k]), float(std[k]))
        if far:
            reason = (f"this tile's look is far from every training tile (nearest {nn[i]:.2f} vs "
                      f"{typical:.2f} typical)" + (f", and {colour}" if odd else ""))
        elif odd:
            reason = "this tile's" + colour[3:]
        else:
            reason = f"this tile is like the training tiles (nearest {nn[i]:.2f} vs {typical:.2f} typical)"
        out.append(Familiarity(far or odd, float(nn[i]), cz, reason))
    return out
