"""The pairs CSV: ``image_a,image_b`` (and any other columns) as a spreadsheet writes it, read with the same rules
everywhere (scoring, calibration, the ``pairs-csv`` source, Ray jobs), and written back.

Every CSV the tool writes goes through :func:`csv_text` (or :func:`safe_cell`): a cell taken from a file name or a
user's CSV that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return would run as a formula when the
file is opened in a spreadsheet, so it gets a leading apostrophe; numbers (``-12.5``) stay numbers. An image path
neutralised that way still resolves when such a CSV is read back (:func:`resolve_image`).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ..core.errors import SiameseError


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


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def safe_cell(value):
    """``value`` as a spreadsheet will not run it: text starting with a formula character (:data:`FORMULA_START`)
    gets a leading apostrophe, unless it is a plain number (``-12.5``, ``+3``); anything else is returned as is."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _number(value):
        return "'" + value
    return value


def csv_text(rows: list[dict], cols: list[str]) -> str:
    """The rows as CSV text (header first), every cell passed through :func:`safe_cell`."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=[safe_cell(c) for c in cols], extrasaction="ignore")
    w.writeheader()
    w.writerows({safe_cell(c): safe_cell(r.get(c, "")) for c in cols} for r in rows)
    return buf.getvalue()


def resolve_image(name: str, base, cwd=None) -> Path:
    """Where an ``image_a``/``image_b`` cell points: absolute as it is, else relative to ``base`` (the CSV's folder),
    else relative to ``cwd`` (default: the working directory) when it exists only there. A cell :func:`safe_cell`
    neutralised (``'-tile.png``) resolves to the file it named. Used by scoring and by the Ray plan alike, so
    both read (and key) the same files."""
    path = Path(base) / name
    if not path.exists():
        other = Path(cwd) / name if cwd is not None else Path(name)
        if other.exists():
            return other
        if name.startswith("'") and name[1:].startswith(FORMULA_START):
            return resolve_image(name[1:], base, cwd)
    return path


__all__ = ["read_pairs_csv", "csv_text", "safe_cell", "resolve_image", "FORMULA_START"]
