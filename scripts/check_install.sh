#!/usr/bin/env bash
# CI check that siamese-tiles installs like a Python package: a fresh virtual environment in a temporary folder,
# `pip install ".[app,geo]"` from this checkout (not editable; pip's cache makes it quick after ./run.sh), two small
# GeoTIFFs written with rasterio, and `siamese-tiles score a.tif b.tif` run from outside the checkout (so the
# installed package, its bundled model and its dependencies are what runs): exit 0 and a verdict, or this fails.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
echo "==> fresh virtual environment in $TMP"
"$PY" -m venv "$TMP/venv"
"$TMP/venv/bin/python" -m pip install -q --upgrade pip
echo "==> pip install \"$ROOT[app,geo]\""
"$TMP/venv/bin/python" -m pip install -q "$ROOT[app,geo]"
cd "$TMP"
"$TMP/venv/bin/python" - <<'PY'
import numpy as np, rasterio
from rasterio.transform import from_origin
rng = np.random.default_rng(0)
base = rng.integers(0, 255, (40, 40)).astype(np.float64)
img = np.kron(base, np.ones((8, 8)))  # 320 px of 8 px blocks: texture for the keypoints
for name, (x, y, k) in {"a.tif": (0, 0, 1.0), "b.tif": (32, 48, 0.8)}.items():
    crop = img[y:y + 256, x:x + 256] * k
    data = np.stack([300 + crop * 20 + 100 * i for i in range(4)]).astype(np.uint16)
    with rasterio.open(name, "w", driver="GTiff", width=256, height=256, count=4, dtype="uint16", nodata=0,
                       crs="EPSG:32633", transform=from_origin(500000 + x * 1.5, 4100000 - y * 1.5, 1.5, 1.5),
                       tiled=True, blockxsize=128, blockysize=128, compress="deflate") as ds:
        ds.write(data)
PY
echo "==> siamese-tiles score a.tif b.tif (installed package, from $TMP)"
out="$("$TMP/venv/bin/siamese-tiles" score a.tif b.tif)"
echo "$out"
grep -Eq "the same place|different places|uncertain band" <<<"$out" || { echo "no verdict in the output" >&2; exit 1; }
echo "==> the installed package scores GeoTIFFs"
