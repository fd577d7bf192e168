#!/usr/bin/env python
"""Training, scoring and embedding speed on a GPU, in one command (meant to finish in under 8 minutes).

    python bench/gpu.py [--out bench/out/gpu.json] [--quick] [--devices 1|N|all] [--batch 256]

On a lent GPU machine, from a fresh copy of the repository (nothing else needed: the tiles are synthetic):

    pip install -q -r requirements.txt "tensorflow[and-cuda]==2.21.0" && python bench/gpu.py --out $OUT/gpu.json

Measures, on tiles from ``siamese_core.data.sources.synthetic`` (each with 2 rotated variants):

* training pairs/s of both presets at float32 and ``mixed_float16``, each with XLA (``jit_compile``) off and
  on, at ``--batch`` (default 256) through the real input pipeline (``train.pair_dataset``: pairs gathered by
  index from uint8 tiles; the default preset augmented on the fly and trained with in-batch negatives, as
  ``train`` does); each preset also at its own default batch (seed 8, default 64; float32, XLA as Keras
  chooses), on one cached batch (the model alone, no input pipeline), and the input pipeline alone;
* scoring pairs/s (``Scorer.score_tiles``: the learned part of ``judge``) and embedding tiles/s
  (``Scorer.embed``), at float32 and ``mixed_float16``, at the library's batch sizes and at 1,024.

Timing: fixed steps after a warm-up (which holds the graph tracing and any XLA compilation, reported
separately as ``first_step_s``); a step has finished when Keras hands its loss to the callback. Each
measure is capped in seconds, and measures left when ``--budget-s`` runs out are recorded as skipped.
Writes the JSON (``--out``) and a markdown table beside it (``.md``), also printed. ``--quick``: 32-px tiles,
a few steps, small batches, on a CPU in about a minute: a smoke run, not a speed figure. Without ``--quick``
a GPU is required (one error line otherwise). The targets (issue 12) are for one H200-class GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from machine import cpu_model  # bench/ is the script's folder, first on sys.path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PRESETS = ("seed", "default")
PRECISIONS = ("float32", "mixed_float16")
# (what, preset, measure, target): measured is the best of that preset's training grid / embedding rows
TARGETS = (("seed preset, training pairs/s", "seed", "train", 6700),
           ("default preset, training pairs/s", "default", "train", 5000),
           ("default preset, embedding tiles/s", "default", "embed", 20000))


def make_tiles(n: int, size: int, variants: int = 2):
    """n synthetic tiles and ``variants`` rotations of each: (uint8 images, group id per image)."""
    from siamese_core.data.augment import rotate
    from siamese_core.data.sources.synthetic import synthetic_tile
    rng = np.random.default_rng(0)
    images, groups = [], []
    for i in range(n):
        t = synthetic_tile(i, size, seed=0)
        images += [t] + [rotate(t, float(a)) for a in rng.uniform(0, 360, variants)]
        groups += [i] * (1 + variants)
    return np.stack(images), np.asarray(groups, np.int64)


class Timer:
    """Keras callback: time ``steps`` steps after ``warmup`` (or fewer once ``max_s`` has passed)."""

    @staticmethod
    def make(warmup: int, steps: int, max_s: float):
        from siamese_core.core.backend import keras

        class StepTimer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.n, self.t0, self.t_start, self.first_step_s, self.timed, self.elapsed = 0, None, None, None, 0, 0.0

            def on_train_begin(self, logs=None):
                self.t_start = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                if logs and "loss" in logs:
                    float(logs["loss"])  # the step has finished
                now = time.perf_counter()
                self.n += 1
                if self.n == 1:
                    self.first_step_s = now - self.t_start
                if self.n == warmup:
                    self.t0 = now
                elif self.n > warmup:
                    self.timed, self.elapsed = self.n - warmup, now - self.t0
                    if self.timed >= steps or self.elapsed >= max_s:
                        self.model.stop_training = True
        return StepTimer()


def train_speed(preset: str, precision: str, jit, batch: int, images, groups, p: dict, placement=None,
                cached: bool = False) -> dict:
    """Training pairs/s of ``preset`` as ``train`` builds it; ``jit`` None leaves Keras' own choice."""
    from siamese_core.core.backend import keras
    from siamese_core.core.config import preset_defaults
    from siamese_core.data.pairs import make_pairs
    from siamese_core.learn.devices import prepare_for_replicas
    from siamese_core.learn.model import build_model, compile_model, embedding_trainer, tower_of
    from siamese_core.learn.train import pair_dataset, positive_pairs

    pcfg, mcfg, tcfg = preset_defaults(preset)
    pairs = make_pairs(groups, pcfg.replace(limit=0)).train
    if preset != "seed":
        pairs = positive_pairs(pairs, groups)
    ds = pair_dataset(images, pairs, batch, shuffle=True, augment=preset != "seed" and tcfg.augment, seed=0)
    ds = ds.take(1).cache().repeat() if cached else ds.repeat()
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        strategy = placement.strategy() if placement is not None else None
        with (placement.scope(strategy) if placement is not None else _null()):
            model = build_model(mcfg.replace(size=images.shape[1]))
            fit_model = embedding_trainer(tower_of(model)) if preset != "seed" else model
            compile_model(fit_model, preset, tcfg.optimizer, tcfg.learning_rate)
        if jit is not None:
            fit_model.jit_compile = bool(jit)
        if strategy is not None:
            prepare_for_replicas(fit_model, ds)
        timer = Timer.make(p["warmup"], p["steps"], p["max_s"])
        fit_model.fit(ds, epochs=1, steps_per_epoch=p["warmup"] + p["steps"], callbacks=[timer], verbose=0,
                      shuffle=False)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    if timer.timed == 0:
        raise RuntimeError(f"no step was timed after {p['warmup']} warm-up steps")
    return {"pairs_per_s": round(timer.timed * batch / timer.elapsed, 1),
            "step_ms": round(1000 * timer.elapsed / timer.timed, 3), "steps_timed": timer.timed,
            "first_step_s": round(timer.first_step_s, 2), "xla": bool(fit_model.jit_compile),
            "replicas": strategy.num_replicas_in_sync if strategy is not None else 1}


def pipeline_speed(preset: str, batch: int, images, groups, p: dict) -> dict:
    """Pairs/s of the input pipeline alone (gather, scale, augment), nothing trained."""
    from siamese_core.core.config import preset_defaults
    from siamese_core.data.pairs import make_pairs
    from siamese_core.learn.train import pair_dataset, positive_pairs
    pcfg, _, tcfg = preset_defaults(preset)
    pairs = make_pairs(groups, pcfg.replace(limit=0)).train
    if preset != "seed":
        pairs = positive_pairs(pairs, groups)
    it = iter(pair_dataset(images, pairs, batch, shuffle=True, augment=preset != "seed" and tcfg.augment,
                           seed=0).repeat())
    for _ in range(p["warmup"]):
        next(it)
    t0, n = time.perf_counter(), 0
    while n < p["steps"] and (n == 0 or time.perf_counter() - t0 < p["max_s"]):
        (a, _), _ = next(it)
        n += int(a.shape[0])
    return {"pairs_per_s": round(n / (time.perf_counter() - t0), 1)}


def _scorer(preset: str, size: int, precision: str):
    from siamese_core.core.backend import keras
    from siamese_core.core.config import preset_defaults
    from siamese_core.judge.inference import Scorer
    from siamese_core.learn.model import build_model
    _, mcfg, _ = preset_defaults(preset)
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        model = build_model(mcfg.replace(size=size))
    finally:
        keras.mixed_precision.set_global_policy(policy)
    return Scorer(Path(tempfile.gettempdir()), model, size, preset)


def _rate(fn, items: int, max_s: float) -> tuple[float, float]:
    """(items per second over whole calls of ``fn`` after one warm-up call, warm-up seconds)."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    t0, n = time.perf_counter(), 0
    while n == 0 or time.perf_counter() - t0 < max_s:
        fn()
        n += items
    return n / (time.perf_counter() - t0), first


def score_speed(preset: str, precision: str, batch: int, tiles, p: dict) -> dict:
    s = _scorer(preset, tiles.shape[1], precision)
    a, b = tiles, tiles[::-1].copy()
    rate, first = _rate(lambda: s.score_tiles(a, b, batch_size=batch), len(a), p["infer_s"])
    return {"pairs_per_s": round(rate, 1), "first_call_s": round(first, 2)}


def embed_speed(preset: str, precision: str, batch: int, tiles, p: dict) -> dict:
    s = _scorer(preset, tiles.shape[1], precision)
    rate, first = _rate(lambda: s.embed(tiles, batch_size=batch), len(tiles), p["infer_s"])
    return {"tiles_per_s": round(rate, 1), "first_call_s": round(first, 2)}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def plan(quick: bool, batch: int) -> list[dict]:
    """Every measure, in order: the training grid first (the targets), then the rest."""
    m = []
    for preset in PRESETS:
        for precision in PRECISIONS:
            for jit in (False, True):
                m.append({"kind": "train", "preset": preset, "precision": precision, "jit": jit, "batch": batch,
                          "input": "pipeline"})
    own = {"seed": 8, "default": 64}
    for preset in PRESETS:
        m.append({"kind": "train", "preset": preset, "precision": "float32", "jit": None,
                  "batch": min(own[preset], batch) if quick else own[preset], "input": "pipeline"})
        m.append({"kind": "train", "preset": preset, "precision": "float32", "jit": False, "batch": batch,
                  "input": "cached batch"})
        m.append({"kind": "pipeline", "preset": preset, "batch": batch})
    for kind, lib in (("score", 64), ("embed", 128)):
        for preset in PRESETS:
            for precision in PRECISIONS:
                for b in dict.fromkeys((lib, 64 if quick else 1024)):
                    m.append({"kind": kind, "preset": preset, "precision": precision, "batch": b})
    return m


def run_one(meas: dict, data: dict, p: dict, placement) -> dict:
    images, groups, tiles = data["images"], data["groups"], data["tiles"]
    k = meas["kind"]
    if k == "train":
        return train_speed(meas["preset"], meas["precision"], meas["jit"], meas["batch"], images, groups, p,
                           placement, cached=meas["input"] == "cached batch")
    if k == "pipeline":
        return pipeline_speed(meas["preset"], meas["batch"], images, groups, p)
    if k == "score":
        return score_speed(meas["preset"], meas["precision"], meas["batch"], tiles, p)
    return embed_speed(meas["preset"], meas["precision"], meas["batch"], tiles, p)


def _gist(err: Exception) -> str:
    """The line of an error that says what went wrong (TensorFlow's start with a traceback of the graph)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    told = [ln for ln in lines if not ln.startswith(("File ", "Detected at node", "Graph execution error", "[[", "Cf. "))
            and not ln.endswith(":")]
    return ((told or lines or [""])[0])[:300]


def targets(rows: list[dict], quick: bool) -> list[dict]:
    out = []
    for what, preset, kind, target in TARGETS:
        key = "tiles_per_s" if kind == "embed" else "pairs_per_s"
        vals = [r[key] for r in rows if r["kind"] == kind and r["preset"] == preset and key in r
                and r.get("input", "pipeline") == "pipeline"]
        best = max(vals) if vals else None
        out.append({"what": what, "target": target, "measured": best,
                    "met": None if quick or best is None else best >= target})
    return out


def markdown(res: dict) -> str:
    def fmt(v):
        return f"{v:,.0f}" if isinstance(v, (int, float)) and v >= 100 else f"{v:g}" if isinstance(v, float) else str(v)

    head = (f"`python bench/gpu.py{' --quick' if res['quick'] else ''}` on {res['device']} "
            f"({res['devices']} device(s)); CPU {res['cpu']} ({res['cores']} cores); TensorFlow "
            f"{res['versions']['tensorflow']}, Keras {res['versions']['keras']}; {res['sizes']['tiles']} synthetic "
            f"tiles × 3 at {res['sizes']['tile']} px; {res['date']}, {res['wall_s']:.0f} s"
            + (" — **quick: a smoke run on small sizes, not a speed figure**" if res["quick"] else ""))
    lines = [head, "", "| measure | preset | precision | XLA | batch | input | speed | first step/call (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        unit = "tiles/s" if r["kind"] == "embed" else "pairs/s"
        speed = r.get("tiles_per_s", r.get("pairs_per_s"))
        speed = fmt(speed) + " " + unit if speed is not None else r.get("error") or r.get("skipped", "")
        jit = "" if "xla" not in r else ("on" if r["xla"] else "off") + (" (Keras' choice)" if r["jit"] is None else "")
        what = {"train": "training", "pipeline": "input pipeline alone", "score": "scoring (score_tiles)",
                "embed": "embedding (embed)"}[r["kind"]]
        lines.append(f"| {what} | {r['preset']} | {r.get('precision', '')} | {jit} | {r['batch']} | "
                     f"{r.get('input', '')} | {speed} | {r.get('first_step_s', r.get('first_call_s', ''))} |")
    lines += ["", "| target (one H200) | measured (best) | target | met? |", "|---|---|---|---|"]
    for t in res["targets"]:
        met = "n/a (quick)" if res["quick"] else ("yes" if t["met"] else "NO")
        lines.append(f"| {t['what']} | {fmt(t['measured']) if t['measured'] is not None else '–'} | "
                     f"≥ {t['target']:,} | {met} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "gpu.json"), help="JSON path (and .md beside it)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few steps: a CPU smoke run of about a minute")
    ap.add_argument("--devices", default="1", help="train on 1 (default), N or all devices (MirroredStrategy)")
    ap.add_argument("--batch", type=int, default=0, help="training batch of the grid (default 256; quick 16)")
    ap.add_argument("--budget-s", type=float, default=0,
                    help="start no measure after this many seconds (default 420; quick 900)")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    t_start = time.time()
    from tqdm import tqdm

    from siamese_core.cli.common import import_tensorflow_quietly
    import_tensorflow_quietly()  # TensorFlow's C++ start-up lines would bury this script's own
    from siamese_core.core.backend import keras, tf
    from siamese_core.core.errors import SiameseError
    from siamese_core.learn.devices import device_name, resolve_devices

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not args.quick:
        print("error: no GPU visible to TensorFlow; install its CUDA build "
              "(pip install \"tensorflow[and-cuda]==2.21.0\"), or run --quick for a CPU smoke run", file=sys.stderr)
        return 2
    try:
        placement = resolve_devices(args.devices)
    except SiameseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    q = args.quick
    p = ({"tile": 32, "tiles": 48, "warmup": 1, "steps": 2, "max_s": 2.0, "infer_s": 0.2, "infer_tiles": 128}
         if q else {"tile": 128, "tiles": 512, "warmup": 5, "steps": 100, "max_s": 5.0, "infer_s": 1.5,
                    "infer_tiles": 8192})
    batch = args.batch or (16 if q else 256)
    budget = args.budget_s or (900 if q else 420)
    images, groups = make_tiles(p["tiles"], p["tile"])
    tiles = images[np.arange(p["infer_tiles"]) % len(images)]  # the images again and again, up to infer_tiles
    data = {"images": images, "groups": groups, "tiles": tiles}
    rows, failed = [], 0
    for meas in tqdm(plan(q, batch), desc="gpu bench", unit="measure", file=sys.stderr, dynamic_ncols=True):
        row = dict(meas)
        if time.time() - t_start > budget:
            row["skipped"] = f"time budget ({budget:.0f} s) spent"
        else:
            try:
                row.update(run_one(meas, data, p, placement if meas["kind"] == "train" else None))
            except Exception as e:  # one failed measure must not lose the others
                failed += 1
                row["error"] = f"{type(e).__name__}: {_gist(e)}"
        rows.append(row)
    res = {"quick": q, "device": device_name(), "gpus": len(gpus), "devices": placement.replicas,
           "devices_note": placement.describe(), "cpu": cpu_model(), "cores": os.cpu_count(),
           "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "python": platform.python_version(),
                        "numpy": np.__version__},
           "sizes": {"tile": p["tile"], "tiles": p["tiles"], "images": int(len(images)), "infer_tiles": len(tiles),
                     "warmup_steps": p["warmup"], "timed_steps": p["steps"], "max_s": p["max_s"]},
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    res["targets"] = targets(rows, q)
    res["wall_s"] = round(time.time() - t_start, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    md = markdown(res)
    out.with_suffix(".md").write_text(md)
    print(md, end="")
    print(f"-> {out} and {out.with_suffix('.md')}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
