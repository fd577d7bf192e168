"""Keys of cached results: what a result depends on, reduced to a short hash that changes whenever any part does.

Why this module exists: the package keeps results to reuse them — Ray shards, search indexes, shard indexes, stored
evaluations. A reused result is only right if nothing it was computed from has changed: the input files (their
content, or their size and modification time), the model, the fusion, the threshold, and the code that wrote it (a
format version, raised when a change of the code changes the result). Every cache builds its key from these parts
with the two functions here, so they are all keyed the same way.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def file_stamp(path) -> list | None:
    """``[size, mtime_ns]`` of a file, the cheap stand-in for its content (rewriting a file changes its mtime); None
    for a file that is missing or unreadable (a row naming it fails, and says so)."""
    try:
        st = Path(path).stat()
    except (OSError, ValueError):
        return None
    return [st.st_size, st.st_mtime_ns]


def digest(*parts) -> str:
    """A SHA-1 over the JSON of ``parts`` (keys sorted): equal parts, equal digest."""
    return hashlib.sha1(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()


__all__ = ["file_stamp", "digest"]
