"""Labelled pair sets of every kind the tool must judge, made from an analyst's own imagery.

A score means "same place" only if it is measured (and its fusion calibrated) on the pairs analysts
actually bring. From an A/B folder of co-registered dates (see ``--source ab``) and/or a folder of
single tiles, :func:`make_pairset` writes PNG tiles and a ``pairs.csv`` (``image_a,image_b,label,kind``;
label 0 = same place, 1 = different) with these kinds:

- ``two_dates``: the same window on two dates, same frame (A/B folders);
- ``two_dates_rot_scale``: the same, date B turned 2–90° and zoomed 0.5–2× (cut from the surrounding
  image, so mostly without black corners);
- ``rotated``: a tile and a copy turned by any angle (black corners, as the reference does);
- ``distorted``: the same, plus one distortion (flip, zoom, shear, blur, occlusion, exposure);
- ``simulated_dates``: a tile and a simulated second acquisition (season, haze, gain, resolution, …)
  turned and zoomed;
- ``overlap``: B covers only 30–70 % of A's ground (another footprint or tiling), on the other date (A/B
  folders) or a simulated one (tiles), turned by any angle;
- ``coarse``: B shows A's ground at 2–4× coarser resolution (fewer pixels), on the other date;
- ``changed``: B is A's ground on the other date with 15–50 % of it changed (new buildings pasted from
  another place, a cleared field, a new road) and, half of the time, seen from another angle (every part
  shifted by a few pixels, so that keypoints no longer agree): :mod:`.change`. Same frame.

Different-place partners get exactly the same treatment: half of them come from another place or tile,
half from another window of the same place (or a tile of the same folder), which is harder. Places and
tiles are split into ``calibration`` and ``test`` by a hash of their name, so the two never share a place;
the same seed gives the same pairs.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import cv2
import numpy as np

from ..core.config import PAIR_KINDS
from ..core.errors import SiameseError
from ..core.files import fsync_tree, write_text_atomic
from .augment import SAME_FRAME, acquisition, apply_distortion, draw_distortion, rotate
from .change import changed_view
from .images import IMAGE_EXTENSIONS, decode_image
from .pairs_csv import csv_text
from .views import box, coarser, footprint, overlap_fraction, overlap_view, turn

PARTIAL_KINDS = PAIR_KINDS[-3:]  # the tiles only partly agree: overlap, coarse, changed
AB_KINDS = ("two_dates", "two_dates_rot_scale", *PARTIAL_KINDS)
TILE_KINDS = ("rotated", "distorted", "simulated_dates", *PARTIAL_KINDS)
KINDS = PAIR_KINDS
COPY_DISTORTIONS = ("flip", "scale", "affine", "blur", "occlude", "brightness")


def split_of(name: str, test_fraction: float) -> str:
    """'test' or 'calibration' for a place or tile name: stable across runs, seeds and machines, so pair
    sets drawn with different seeds still never put one place on both sides."""
    h = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < test_fraction else "calibration"


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _angle_zoom(rng) -> tuple[float, float]:
    return float(rng.uniform(2, 90) * rng.choice([-1, 1])), float(math.exp(rng.uniform(math.log(0.5), math.log(2.0))))


class _Writer:
    def __init__(self, out: Path):
        self.out, self.rows, self.n = out, [], 0
        (out / "tiles").mkdir(parents=True, exist_ok=True)

    def tile(self, img: np.ndarray) -> str:
        name = f"tiles/{self.n:06d}.png"
        self.n += 1
        cv2.imwrite(str(self.out / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        return name

    def pair(self, a: str, b: np.ndarray, label: int, kind: str) -> None:
        self.rows.append((a, self.tile(b), label, kind))


def _ab_places(ab: Path, split: str, test_fraction: float) -> list:
    a_dir, b_dir = ab / "A", ab / "B"
    if not (a_dir.is_dir() and b_dir.is_dir()):
        raise SiameseError(f"{ab}: needs folders A/ and B/ with matching file names (one place on two dates)")
    b_by_stem = {p.stem: p for p in _images(b_dir)}
    places = []
    for pa in _images(a_dir):
        pb = b_by_stem.get(pa.stem)
        if pb is not None and (split == "all" or split_of(pa.stem, test_fraction) == split):
            A, B = decode_image(pa), decode_image(pb)
            h, wd = min(A.shape[0], B.shape[0]), min(A.shape[1], B.shape[1])
            places.append((pa.stem, A[:h, :wd], B[:h, :wd]))
    if len(places) < 2:
        raise SiameseError(f"{ab}: need at least 2 places in split {split!r} with both A/ and B/ views")
    return places


def _coarse_factor(rng) -> float:
    return float(math.exp(rng.uniform(math.log(2.0), math.log(4.0))))


def _ab_pairs(w: _Writer, ab: Path, rng, per_place: int, split: str, test_fraction: float, kinds) -> None:
    places = _ab_places(ab, split, test_fraction)
    for _ in range(per_place):
        for i, (name, A, B) in enumerate(places):
            h, wd = A.shape[:2]
            side = int(min(rng.integers(160, 400), h, wd))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, wd - side + 1))
            # the different-place partner: another place, or a window of this one that does not overlap
            j = i
            if rng.random() < 0.5 or min(h, wd) < 2 * side:
                j = (i + int(rng.integers(1, len(places)))) % len(places)
            _, _, Bn = places[j]
            hn, wn = Bn.shape[:2]
            sn = min(side, hn, wn)
            for _try in range(20):
                yn, xn = int(rng.integers(0, hn - sn + 1)), int(rng.integers(0, wn - sn + 1))
                if j != i or abs(yn - y) >= side or abs(xn - x) >= side:
                    break
            else:
                j = (i + 1) % len(places)
                Bn = places[j][2]
                hn, wn = Bn.shape[:2]
                sn = min(side, hn, wn)
                yn, xn = 0, 0
            a = w.tile(A[y:y + side, x:x + side])
            window, other = B[y:y + side, x:x + side], Bn[yn:yn + sn, xn:xn + sn]
            ang, zm = _angle_zoom(rng)
            if "two_dates" in kinds:
                w.pair(a, window, 0, "two_dates")
                w.pair(a, other, 1, "two_dates")
            if "two_dates_rot_scale" in kinds:
                w.pair(a, turn(B, x + side / 2, y + side / 2, side, ang, zm), 0, "two_dates_rot_scale")
                w.pair(a, turn(Bn, xn + sn / 2, yn + sn / 2, sn, ang, zm), 1, "two_dates_rot_scale")
            if "overlap" in kinds:
                v = overlap_view(rng, h, wd, x, y, side)  # B covers 30-70 % of A; the partner, turned alike, none
                if v and (j != i or not overlap_fraction(box(x, y, side, side),
                                                         footprint(xn + sn / 2, yn + sn / 2, sn, v[2], v[3]))):
                    w.pair(a, turn(B, v[0], v[1], side, v[2], v[3]), 0, "overlap")
                    w.pair(a, turn(Bn, xn + sn / 2, yn + sn / 2, sn, v[2], v[3]), 1, "overlap")
            if "coarse" in kinds:
                f = _coarse_factor(rng)
                w.pair(a, coarser(window, f), 0, "coarse")
                w.pair(a, coarser(other, f), 1, "coarse")
            if "changed" in kinds:
                donor = places[(i + 1 + int(rng.integers(0, len(places) - 1))) % len(places)][2]
                c = int(rng.integers(0, 2**31))
                w.pair(a, changed_view(window, donor, np.random.default_rng(c)), 0, "changed")
                w.pair(a, changed_view(other, donor, np.random.default_rng(c)), 1, "changed")


def _tile_pairs(w: _Writer, folder: Path, rng, n: int, split: str, test_fraction: float, kinds) -> None:
    files = [p for p in _images(folder)
             if split == "all" or split_of(str(p.relative_to(folder)), test_fraction) == split]
    if len(files) < 2:
        raise SiameseError(f"{folder}: need at least 2 readable tiles in split {split!r}")
    for k in range(min(n, len(files))):
        i = int(rng.integers(0, len(files)))
        same_folder = [f for f in files if f.parent == files[i].parent and f != files[i]]
        others = same_folder if same_folder and rng.random() < 0.5 else [f for f in files if f != files[i]]
        j = files.index(others[int(rng.integers(0, len(others)))])
        t, u = decode_image(files[i]), decode_image(files[j])
        a = w.tile(t)
        ang = float(rng.uniform(0, 360))
        if "rotated" in kinds:
            w.pair(a, rotate(t, ang), 0, "rotated")
            w.pair(a, rotate(u, ang), 1, "rotated")
        kind = COPY_DISTORTIONS[k % len(COPY_DISTORTIONS)]
        p = draw_distortion(kind, rng)
        if "distorted" in kinds:
            w.pair(a, apply_distortion(rotate(t, ang), kind, p), 0, "distorted")
            w.pair(a, apply_distortion(rotate(u, ang), kind, p), 1, "distorted")
        seed_k = int(rng.integers(0, 2**31))
        dates = [acquisition(img, np.random.default_rng(seed_k))[0] for img in (t, u)]  # one simulated date
        if "simulated_dates" in kinds:
            for img, label in zip(dates, (0, 1)):
                ang2, zm = _angle_zoom(np.random.default_rng(seed_k + 1))
                h, wd = img.shape[:2]
                w.pair(a, turn(img, wd / 2, h / 2, min(h, wd), ang2, zm), label, "simulated_dates")
        if any(kk in kinds for kk in PARTIAL_KINDS):  # they set the frame themselves: a date in the same frame
            framed = [acquisition(img, np.random.default_rng(seed_k + 2), kinds=SAME_FRAME)[0] for img in (t, u)]
            donors = [f for f in files if f not in (files[i], files[j])] or [files[j]]  # never a piece of A itself
            _partial_tile_pairs(w, a, t, framed, donors, rng, kinds)


def _partial_tile_pairs(w: _Writer, a: str, t: np.ndarray, dates: list, donors: list, rng, kinds) -> None:
    """overlap, coarse and changed pairs of tile ``t`` (written as ``a``) against the simulated second date of
    itself and of its different-place partner (``dates``, in the tiles' own frame: no zoom or shift on top of
    the kind's own geometry). The change is pasted from one of ``donors``: tiles other than ``t`` and its
    partner, so that a different-place pair never carries a piece of A (a donor drawn from every tile once
    pasted A's own beach into its partner: 64 SIFT inliers on a pair labelled "different")."""
    h, wd = t.shape[:2]
    if "overlap" in kinds:  # A is a window of 60 % of the tile's side; B another window of the other date
        s = max(16, int(0.6 * min(h, wd)))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, wd - s + 1))
        v = overlap_view(rng, h, wd, x, y, s)
        if v:
            crop = w.tile(t[y:y + s, x:x + s])
            for img, label in zip(dates, (0, 1)):
                w.pair(crop, turn(img, v[0], v[1], s, v[2], v[3]), label, "overlap")
    if "coarse" in kinds:
        f = _coarse_factor(rng)
        for img, label in zip(dates, (0, 1)):
            w.pair(a, coarser(img, f), label, "coarse")
    if "changed" in kinds:
        donor = decode_image(donors[int(rng.integers(0, len(donors)))])
        c = int(rng.integers(0, 2**31))
        for img, label in zip(dates, (0, 1)):
            w.pair(a, changed_view(img, donor, np.random.default_rng(c)), label, "changed")


def make_pairset(out: str | Path, ab: str | Path | None = None, tiles: str | Path | None = None,
                 per_place: int = 6, n_tiles: int = 150, split: str = "all", test_fraction: float = 0.25,
                 seed: int = 0, kinds=None) -> Path:
    """Write tiles and ``pairs.csv`` into ``out``; returns the CSV's path. ``split`` is 'all',
    'calibration' or 'test' (see :func:`split_of`); ``kinds`` limits the kinds written (default: all of
    :data:`KINDS`; A/B folders give :data:`AB_KINDS`, tiles :data:`TILE_KINDS`)."""
    if split not in ("all", "calibration", "test"):
        raise SiameseError(f"split {split!r} is not one of all, calibration, test")
    kinds = tuple(KINDS if kinds is None else kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise SiameseError(f"unknown pair kind(s) {unknown or kinds}; choose from {', '.join(KINDS)}")
    if not ab and not tiles:
        raise SiameseError("give an A/B folder (--ab) and/or a folder of tiles (--tiles)")
    out = Path(out)
    w = _Writer(out)
    rng = np.random.default_rng(seed)
    if ab:
        _ab_pairs(w, Path(ab), rng, per_place, split, test_fraction, kinds)
    if tiles:
        _tile_pairs(w, Path(tiles), rng, n_tiles, split, test_fraction, kinds)
    path = out / "pairs.csv"
    cols = ["image_a", "image_b", "label", "kind"]
    fsync_tree(out / "tiles")  # the tiles it names are on the disk before the CSV is
    write_text_atomic(path, csv_text([dict(zip(cols, r)) for r in w.rows], cols))  # whole, flushed, no formulas
    return path


__all__ = ["make_pairset", "split_of", "AB_KINDS", "TILE_KINDS", "PARTIAL_KINDS", "KINDS"]
