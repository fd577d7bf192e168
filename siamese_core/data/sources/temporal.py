"""Groups of real second views: one place seen on several dates (``ab``), or images that a labelled
pair list says show one place (``pairs-csv``).

Why this exists: every other source makes a group from one tile and its rotated copies, so the model
only ever learns that a place is *the same photo, transformed*. An analyst's two tiles of one place are
almost never that: they are two acquisitions, with another season, light, sensor and some new
buildings. Here a group holds those real views (each view still gets its rotated variants), so
same-place pairs drawn from a group (pairs.py) include real across-date pairs.

``ab``: the change-detection layout. ``DIR/A/``, ``DIR/B/`` (optionally ``C/``, ``D/``... any
single upper-case letter) hold co-registered images of the same places with matching file names
(matched on the stem: ``A/x.png`` and ``B/x.jpg`` are one place). Views of one place are cropped to
their common size from the top-left, then cut into aligned square windows (``window`` source pixels,
0 = the whole image, every ``stride`` pixels): one group per window, holding every date's crop of it.
An optional ``DIR/dates.csv`` with a ``place`` column and ``date_a``, ``date_b``... columns fills in
the manifest's ``date``.

``pairs-csv``: a CSV with ``image_a,image_b,label`` (0 = same place, 1 = different). Images linked by
label-0 pairs form one group (connected components); an image only ever in label-1 pairs is a group
of its own. Different-place labels are not stored: pairs are drawn from the groups later.

Both yield one group at a time (a list of :class:`~siamese_core.data.sources.View`); ``ab`` decodes at most
a couple of places ahead, so memory never holds a whole folder.
"""

from __future__ import annotations

import csv
import os
import re
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ...core.errors import DatasetError, ImageError, SiameseError
from ..images import IMAGE_EXTENSIONS, MIN_SIDE, decode_image, to_tile
from ..pairs_csv import read_pairs_csv
from .views import View

_VIEW_DIR = re.compile(r"^[A-Z]$")
_PREFETCH = 2  # places decoded ahead of the one being cut into windows


# ------------------------------------------------------------------------------------------------
# ab: folders A/, B/ ... of co-registered views
# ------------------------------------------------------------------------------------------------

def _layout(root: str | os.PathLike):
    """(root, view letters, [(place, {letter: path})], [(file, reason)]) without decoding anything."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: folder does not exist; pass the folder that holds A/ and B/")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; --source ab needs a folder holding A/ and B/ "
                           f"(one sub-folder per date, matching file names)")
    subdirs = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    letters = [d for d in subdirs if _VIEW_DIR.match(d)]
    if len(letters) < 2:
        hint = ""
        if _VIEW_DIR.match(root.name) and any(_VIEW_DIR.match(d.name) for d in root.parent.iterdir()
                                              if d.is_dir() and d != root):
            hint = f" (this looks like one date's folder: pass its parent {root.parent})"
        raise SiameseError(f"{root}: no A/ and B/ folders (found: {', '.join(d + '/' for d in subdirs) or 'none'})"
                           f"{hint}; --source ab needs one sub-folder per date, A/ and B/ (optionally C/, D/...), "
                           f"holding images with matching file names")
    problems: list[tuple[str, str]] = []
    files: dict[str, dict[str, Path]] = {}
    for letter in letters:
        names = sorted(f for f in os.listdir(root / letter)
                       if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
        for f in names:
            stem = os.path.splitext(f)[0]
            have = files.setdefault(stem, {})
            if letter in have:
                problems.append((str(root / letter / f),
                                 f"{letter}/{f}: same name as {letter}/{have[letter].name}, which is used; "
                                 f"rename or remove one of them"))
                continue
            have[letter] = root / letter / f
    places = []
    for stem in sorted(files):
        views = files[stem]
        if len(views) < 2:
            (letter, path), = views.items()
            others = ", ".join(f"{o}/" for o in letters if o != letter)
            problems.append((str(path), f"{letter}/{path.name}: only in {letter}/, no match in {others}; "
                                        f"add the other date's image with the same name, or remove it"))
            continue
        places.append((stem, dict(sorted(views.items()))))
    return root, letters, places, problems


def _dates(root: Path, on_skip) -> dict[tuple[str, str], str]:
    """{(place, letter): date} from an optional dates.csv (columns place, date_a, date_b, ...)."""
    p = root / "dates.csv"
    if not p.is_file():
        return {}
    try:
        with open(p, newline="", encoding="utf-8-sig", errors="replace") as f:
            reader = csv.DictReader(f)
            cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
            if "place" not in cols:
                raise ValueError(f"no 'place' column (found {list(cols)})")
            out = {}
            for r in reader:
                for c, orig in cols.items():
                    if c.startswith("date_") and len(c) == 6 and (r.get(orig) or "").strip():
                        out[(r[cols["place"]].strip(), c[-1].upper())] = r[orig].strip()
            return out
    except (OSError, ValueError, csv.Error) as e:
        if on_skip:
            on_skip(str(p), f"{p}: dates not recorded ({e}); give it columns place,date_a,date_b")
        return {}


def _windows(h: int, w: int, window: int, stride: int):
    step = stride or window
    return [(x, y) for y in range(0, h - window + 1, step) for x in range(0, w - window + 1, step)]


def _header_size(path: Path) -> tuple[int, int] | None:
    """(h, w) as decoded (EXIF rotation included), from the header only; None if unreadable."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):
                w, h = h, w
            return h, w
    except Exception:
        return None


def count_ab(path, window: int = 0, stride: int = 0, limit: int = 0) -> int:
    """Groups (windows of places) the ``ab`` source will yield at most, from image headers."""
    _, _, places, _ = _layout(path)
    n = 0
    for _, views in places:
        if not window:
            n += 1
            continue
        sizes = [_header_size(p) for p in views.values()]
        if any(s is None for s in sizes):
            continue
        n += len(_windows(min(s[0] for s in sizes), min(s[1] for s in sizes), window, stride))
    return min(n, limit) if limit else n


def _load_place(stem: str, views: dict[str, Path], window: int):
    """Decode one place's views at full resolution and crop them to their common size (top-left).

    Returns ([(letter, path, image)], [(file, reason)]); the list is empty when the place cannot be used.
    """
    loaded, problems = [], []
    for letter, path in views.items():
        try:  # full resolution: a reduced JPEG decode would break co-registration
            loaded.append((letter, path, decode_image(path, name=f"{letter}/{path.name}")))
        except ImageError as e:
            problems.append((str(path), str(e)))
    if len(loaded) < 2:
        if problems:
            f, why = problems[-1]
            problems[-1] = (f, f"{why}; place {stem!r} not imported (no second readable view)")
        return [], problems
    h = min(img.shape[0] for _, _, img in loaded)
    w = min(img.shape[1] for _, _, img in loaded)
    first = loaded[0][1]
    if min(h, w) < MIN_SIDE:
        return [], problems + [(str(first), f"{first.parent.name}/{first.name}: the views of {stem!r} overlap in "
                                            f"only {w}x{h} px (under {MIN_SIDE} px); they are not views of one place")]
    if window and (window > h or window > w):
        return [], problems + [(str(first), f"{first.parent.name}/{first.name}: the views of {stem!r} are {w}x{h} px, "
                                            f"smaller than --window {window}; use a smaller --window (0 = whole image)")]
    return [(letter, path, img[:h, :w]) for letter, path, img in loaded], problems


def iter_ab(path, size: int, window: int = 0, stride: int = 0, limit: int = 0, on_skip=None, workers: int = 0):
    """Yield one group (a list of :class:`View`, one per date) per window of each place under ``path``."""
    root, letters, places, problems = _layout(path)
    root = root.resolve()
    for f, why in problems:
        if on_skip:
            on_skip(f, why)
    if not places:
        raise DatasetError(f"{root}: no place has images in two of {', '.join(l + '/' for l in letters)} "
                           f"with matching file names ({len(problems)} file(s) unmatched); "
                           f"name each place's images alike in every folder")
    dates = _dates(root, on_skip)
    made = 0
    with ThreadPoolExecutor(workers or min(_PREFETCH, (os.cpu_count() or 1))) as pool:
        pending = deque()
        todo = iter(places)

        def refill():
            while len(pending) <= _PREFETCH:
                nxt = next(todo, None)
                if nxt is None:
                    return
                pending.append((nxt[0], pool.submit(_load_place, nxt[0], nxt[1], window)))

        refill()
        while pending:
            stem, fut = pending.popleft()
            loaded, bad = fut.result()
            refill()
            for f, why in bad:
                if on_skip:
                    on_skip(f, why)
            if not loaded:
                continue
            h, w = loaded[0][2].shape[:2]
            spots = _windows(h, w, window, stride) if window else [(0, 0)]
            for x, y in spots:
                group = []
                for letter, p, img in loaded:
                    rel = f"{letter}/{p.name}"
                    crop = img[y:y + window, x:x + window] if window else img
                    tid = f"{rel}@{x},{y}" if window else rel
                    group.append(View(tid, to_tile(crop, size), f"ab:{rel}:x={x}:y={y}:window={window}",
                                      {"place": stem, "view": letter, "date": dates.get((stem, letter), ""),
                                       "x": x, "y": y, "window": window}))
                yield group
                made += 1
                if limit and made >= limit:
                    return
            del loaded


# ------------------------------------------------------------------------------------------------
# pairs-csv: a labelled pair list, same-place pairs merged into groups
# ------------------------------------------------------------------------------------------------

def _components(path, on_skip=None) -> list[list[tuple[str, str]]]:
    """Groups of (file to read, name as written in the CSV), in order of first mention."""
    path = Path(path).expanduser()
    rows, cols, lines = read_pairs_csv(path)
    if "label" not in cols:
        raise SiameseError(f"{path}: no 'label' column (found {cols}); a labelled pairs CSV needs the header "
                           f"image_a,image_b,label with label 0 (same place) or 1 (different places)")
    base = path.parent
    parent: dict[str, str] = {}
    shown: dict[str, str] = {}  # key -> the name first written for it

    def key(p: str) -> str:
        k = os.path.normpath(os.path.join(base, os.path.expanduser(p)))
        if k not in parent:
            parent[k], shown[k] = k, p
        return k

    def find(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def skip(n, why):
        if on_skip:
            on_skip(f"{path}:{n}", f"{path} line {n}: {why}")

    different = []
    for r, n in zip(rows, lines):
        a, b, lab = r["image_a"].strip(), r["image_b"].strip(), r["label"].strip()
        if not a or not b:
            skip(n, "empty image_a or image_b; give both image paths")
            continue
        if lab not in ("0", "1"):
            skip(n, f"label {lab!r} is not 0 or 1; use 0 (same place) or 1 (different places)")
            continue
        ka, kb = key(a), key(b)
        if lab == "0":
            ra, rb = find(ka), find(kb)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        else:
            different.append((n, ka, kb))
    for n, ka, kb in different:
        if find(ka) == find(kb):
            skip(n, f"labelled 1 (different places), but {shown[ka]} and {shown[kb]} are the same place "
                    f"(the same image, or linked by label-0 rows); this label is ignored")
    groups: dict[str, list] = {}
    for k in parent:  # insertion order = first mention in the CSV
        groups.setdefault(find(k), []).append((k, shown[k]))
    return list(groups.values())


def count_pairs_csv(path, limit: int = 0) -> int:
    n = len(_components(path))
    return min(n, limit) if limit else n


def _decode_tile(k: str, name: str, size: int):
    try:
        return to_tile(decode_image(k, name=name, max_side=size), size), None
    except ImageError as e:
        return None, str(e)


def iter_pairs_csv(path, size: int, limit: int = 0, on_skip=None, workers: int = 0, chunk: int = 32):
    """Yield one group (a list of :class:`View`) per place of the pair list ``path``."""
    groups = _components(path, on_skip)
    if not groups:
        raise DatasetError(f"{path}: no usable rows; each row needs image_a, image_b and a label 0 or 1")
    made = 0
    with ThreadPoolExecutor(workers or min(4, (os.cpu_count() or 1) + 1)) as pool:
        for start in range(0, len(groups), chunk):
            batch = groups[start:start + chunk]
            flat = [m for g in batch for m in g]
            tiles = iter(pool.map(lambda m: _decode_tile(m[0], m[1], size), flat))
            for g in batch:
                place = g[0][1]
                group = []
                for k, name in g:
                    tile, err = next(tiles)
                    if tile is None:
                        if on_skip:
                            on_skip(k, err)
                        continue
                    group.append(View(name, tile, f"pairs-csv:{name}", {"place": place, "view": name}))
                if group:
                    yield group
                    made += 1
                    if limit and made >= limit:
                        return
