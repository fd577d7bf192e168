"""Tiles from the huggan/maps dataset: local parquet files (``hf-parquet``) or a hub download (``hf-hub``).

Parquet is read one row group at a time, one column, so the 1.9 GB dataset never sits in memory.
The image column is an image struct ``{bytes, path}``; ``imageA`` (satellite) is used by default and
any other image column can be chosen or is detected.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...core.errors import DatasetError, ImageError, SiameseError
from ..images import decode_image, to_tile

PREFERRED_COLUMNS = ("imageA", "image", "satellite")


def parquet_files(path: str | os.PathLike) -> list[Path]:
    p = Path(path).expanduser()
    if p.is_file():
        return [p]
    if not p.exists():
        raise DatasetError(f"{p}: path does not exist")
    files = sorted(p.rglob("*.parquet"))
    if not files:
        raise DatasetError(f"{p}: no .parquet files found")
    return files


def image_columns(schema) -> list[str]:
    """The columns of a parquet schema that hold images: binary, or a struct with a ``bytes`` field."""
    import pyarrow as pa
    cols = []
    for f in schema:
        if pa.types.is_struct(f.type) and f.type.get_field_index("bytes") >= 0:
            cols.append(f.name)
        elif pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type):
            cols.append(f.name)
    return cols


def pick_column(path: Path, schema, column: str = "") -> str:
    names = [f.name for f in schema]
    images = image_columns(schema)
    if column:
        if column not in names:
            raise DatasetError(f"{path}: no column {column!r}; columns are {names}; pass --column with one of {images or names}")
        if column not in images:
            raise DatasetError(f"{path}: column {column!r} does not hold images; image columns are {images}")
        return column
    for c in PREFERRED_COLUMNS:
        if c in images:
            return c
    if images:
        return images[0]
    raise DatasetError(f"{path}: no image column (a struct with 'bytes', or binary); columns are {names}")


def open_parquet(path: Path):
    """``pyarrow.parquet.ParquetFile`` of ``path``; a one-line DatasetError when it is not a readable parquet."""
    import pyarrow.parquet as pq
    try:
        return pq.ParquetFile(path)
    except Exception as e:
        raise DatasetError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]})") from None


def count_parquet(path, limit: int = 0) -> int:
    n = sum(open_parquet(f).metadata.num_rows for f in parquet_files(path))
    return min(n, limit) if limit else n


def iter_parquet(path, size: int, limit: int = 0, column: str = "", on_skip=None, batch_rows: int = 32):
    """Yield (tile_id, uint8 tile, provenance) from the image column of each parquet file under ``path``."""
    made = 0
    for f in parquet_files(path):
        pf = open_parquet(f)
        col = pick_column(f, pf.schema_arrow, column)
        row = 0
        for batch in pf.iter_batches(batch_size=batch_rows, columns=[col]):
            for cell in batch.column(0).to_pylist():
                name = f"{f.name}#{row}"
                data = cell.get("bytes") if isinstance(cell, dict) else cell
                row += 1
                try:
                    if not data:
                        raise ImageError(f"{name}: empty image cell in column {col!r}")
                    tile = to_tile(decode_image(data, name=name, max_side=size), size)
                except ImageError as e:
                    if on_skip:
                        on_skip(name, str(e))
                    continue
                yield f"{f.stem}-{row - 1:06d}", tile, f"hf-parquet:{f.name}:{col}:{row - 1}"
                made += 1
                if limit and made >= limit:
                    return


def download_hub(repo_id: str = "huggan/maps", cache_dir: str | None = None, progress=None) -> Path:
    """Download (or reuse the cached) parquet files of a hub dataset; resumable, with tqdm progress bars.

    ``progress(done_files, total_files)`` is also called as files complete (for the dashboard).
    """
    try:
        from huggingface_hub import snapshot_download
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - both are in requirements.txt
        raise SiameseError("huggingface_hub is not installed; run: pip install -r requirements.txt") from None

    class _Bar(tqdm):  # a tqdm that also reports to ``progress`` (counted here: a disabled bar keeps no count)
        def update(self, n=1):
            self._done = getattr(self, "_done", 0) + (n or 0)
            if progress:
                progress(int(self._done), int(self.total or 0))
            return super().update(n)

    try:
        local = snapshot_download(repo_id=repo_id, repo_type="dataset", allow_patterns=["*.parquet"],
                                  cache_dir=cache_dir, tqdm_class=_Bar if progress else None)
    except Exception as e:
        kind = type(e).__name__
        raise SiameseError(f"could not download {repo_id} from the Hugging Face hub ({kind}); check the network, "
                           f"or download its parquet files elsewhere and use --source hf-parquet --path DIR") from None
    return Path(local)
