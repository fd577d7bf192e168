"""``bench/gpu.py``: its ``--quick`` CPU smoke run measures everything the GPU run does and writes it all as
JSON and a markdown table; without a GPU the full run refuses in one line. (Speeds are not asserted here:
targets belong to the benchmark itself, on a GPU.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs bench/gpu.py in subprocesses

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}  # a CPU run on every machine


def _bench(*args, timeout=900):
    return subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env=ENV, timeout=timeout)


def _positive(row: dict, *keys) -> None:
    for k in keys:
        assert isinstance(row.get(k), (int, float)) and not isinstance(row[k], bool) and row[k] > 0, (k, row)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "gpu.json"
    r = _bench("--quick", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text()), out.with_suffix(".md").read_text(), r.stdout


def test_quick_run_measures_every_configuration_with_positive_numbers(quick):
    res, _, _ = quick
    rows = res["rows"]
    assert not [r for r in rows if "error" in r or "skipped" in r], [r for r in rows if "error" in r or "skipped" in r]
    grid = {(r["preset"], r["precision"], r["jit"]) for r in rows if r["kind"] == "train" and r["input"] == "pipeline"}
    assert grid >= {(p, q, j) for p in ("seed", "default") for q in ("float32", "mixed_float16") for j in (False, True)}
    for r in rows:
        if r["kind"] == "train":
            _positive(r, "pairs_per_s", "step_ms", "steps_timed", "first_step_s", "batch", "replicas")
        elif r["kind"] == "pipeline":
            _positive(r, "pairs_per_s", "batch")
        elif r["kind"] == "score":
            _positive(r, "pairs_per_s", "first_call_s", "batch")
        else:
            assert r["kind"] == "embed"
            _positive(r, "tiles_per_s", "first_call_s", "batch")
    for kind in ("score", "embed", "pipeline"):
        assert {r["preset"] for r in rows if r["kind"] == kind} == {"seed", "default"}, kind
    for kind in ("score", "embed"):
        assert {r["precision"] for r in rows if r["kind"] == kind} == {"float32", "mixed_float16"}, kind
    assert {r["input"] for r in rows if r["kind"] == "train"} == {"pipeline", "cached batch"}
    # XLA really was on (or off) where asked: Keras turns it off silently for a model it cannot compile
    assert all(r["xla"] == r["jit"] for r in rows if r["kind"] == "train" and r["jit"] is not None)
    assert [t["target"] for t in res["targets"]] == [6700, 5000, 20000]
    for t in res["targets"]:
        _positive(t, "measured")
        assert t["met"] is None  # a quick run on a CPU is never held against an H200 target
    _positive(res, "cores", "wall_s", "devices")
    _positive(res["sizes"], "tile", "tiles", "images", "infer_tiles", "timed_steps")
    assert res["quick"] is True and res["gpus"] == 0 and res["device"].startswith("CPU")
    assert res["versions"]["tensorflow"] and res["versions"]["keras"]


def test_quick_run_names_the_machine_and_writes_a_table_for_results_md(quick):
    res, md, stdout = quick
    lscpu = shutil.which("lscpu") and subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in (lscpu or "").splitlines() if ln.startswith("Model name:")),
                 None)
    if model:
        assert res["cpu"] == model
    assert res["cpu"] and res["cpu"] != "unknown"
    assert md == stdout  # the table printed is the one written
    assert res["cpu"] in md and res["device"] in md and "not a speed figure" in md
    table = [ln for ln in md.splitlines() if ln.startswith("| training |")]
    assert len(table) == len([r for r in res["rows"] if r["kind"] == "train"])
    assert "| seed preset, training pairs/s |" in md and "≥ 6,700" in md and "n/a (quick)" in md


def test_full_run_without_a_gpu_is_refused_in_one_line(tmp_path):
    r = _bench("--out", tmp_path / "gpu.json", timeout=300)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no GPU visible to TensorFlow") and "--quick" in lines[0]
    assert not (tmp_path / "gpu.json").exists()
