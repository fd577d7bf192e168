"""The pairs CSV: ``image_a,image_b`` (and any other columns) as a spreadsheet writes it, read with the same rules
everywhere (scoring, calibration, the ``pairs-csv`` source, Ray jobs), and written back.
"""

from __future__ import annotations

import csv
import io
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


def csv_text(rows: list[dict], cols: list[str]) -> str:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


__all__ = ["read_pairs_csv", "csv_text"]
