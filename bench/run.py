#!/usr/bin/env python
"""Benchmarks: this project's pipeline against a faithful re-implementation of the reference.

    python bench/run.py [--quick] [--repeats 3] [--out bench/out] [--only 1,3,7]

Runs, on the same data and in one go, each measurement in its own subprocess (so peak RSS is per
measurement: ``os.wait4`` returns the child's own ``ru_maxrss``; Python children also report their
``VmHWM``), prints a table (measure | reference | ours | ratio | target | met?) and writes
``<out>/results.json`` (per-child logs in ``<out>/logs/``, scratch data in ``<out>/work/``).

Data: the 600 JPEG tiles of ../shared/data/aerial-sample (beside the repository) (each with 2 rotations = 1,800 images);
when that folder is absent, 600 synthetic tiles written as 256×256 JPEGs are used instead, so that the
reference (which reads files) and this project read the very same files.

Measures: 1 peak RSS of prepare + pairs + one epoch (seed preset, 1,800 images); 2 peak RSS at the
huggan/maps size (6,582 images, default preset, capped steps); 3 seed-model training throughput
(reference NumPy feed at batch 8 vs our tf.data pipeline at batch 8/64/128, XLA, oneDNN, bfloat16) and
the loss curve of both on the same pairs; 4 ingest of 2,000 JPEGs and reopening a prepared dataset;
5 scoring one uploaded pair; 6 gallery embeddings; 7 threshold sweep on 100,000 scores.
Timings are medians of ``--repeats`` runs. ``--quick`` shrinks every measure (150 tiles, capped steps,
fewer variants) to finish in a few minutes; its numbers are labelled quick.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SAMPLE = Path(os.environ.get("BENCH_SAMPLE") or Path(__file__).resolve().parents[2] / "shared" / "data" / "aerial-sample")
MAPS_TILES = 2194           # huggan/maps: 1,096 + 1,098 source tiles, × 3 = 6,582 images
GB = 1e9


# =================================================================================================
# children: each runs in its own process (python bench/run.py --child NAME --params JSON --result F)
# =================================================================================================

def _hwm_mb() -> float:
    from reference import vm_hwm_kb
    return round(vm_hwm_kb() / 1024, 1)


def _quiet_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def child_ref_pipeline(p):
    """Measure 1, reference: write triplets → cv2 loop → pairs → one epoch (optionally capped)."""
    _quiet_tf()
    import reference
    from siamese_core.data.sources.files import list_images
    src = list_images(p["tiles_dir"])[: p["tiles"]]
    work = Path(p["work"])
    shutil.rmtree(work, ignore_errors=True)
    try:
        stages = reference.run_pipeline(src, work, epochs=1, max_steps=p.get("max_steps", 0), seed=0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"stages": stages, "vm_hwm_mb": _hwm_mb()}


class _StepTimer:
    """Keras callback factory: pairs/s over fixed windows of steps after a warm-up."""

    @staticmethod
    def make(warmup, window, windows, batch):
        import keras

        class StepTimer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.n, self.last, self.rates, self.first_step_s = 0, None, [], None
                self.total = warmup + window * windows
                self.t_start = time.perf_counter()

            def on_train_batch_end(self, batch_i, logs=None):
                if logs and "loss" in logs:
                    float(logs["loss"])  # make sure the step has finished
                now = time.perf_counter()
                self.n += 1
                if self.n == 1:
                    self.first_step_s = now - self.t_start
                if self.n == warmup:
                    self.last = now
                elif self.n > warmup and (self.n - warmup) % window == 0:
                    self.rates.append(window * batch / (now - self.last))
                    self.last = now
                if self.n >= self.total:
                    self.model.stop_training = True
        return StepTimer()


def child_throughput(p):
    """Measure 3: seed-model training pairs/s, reference NumPy feed or our tf.data pipeline."""
    _quiet_tf()
    if p["kind"] == "ours" and not p.get("parallel_ops"):
        from siamese_core.learn.train import one_op_at_a_time_on_cpu
        one_op_at_a_time_on_cpu()  # as `train` runs it
    import keras
    import tensorflow as tf

    from siamese_core.data.store import open_dataset
    if p.get("bf16"):
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    ds = open_dataset(p["dataset"], p["workspace"])
    images = ds.images
    B = int(p["batch"])
    warmup = int(p["warmup"])
    window = max(1, int(p["window_pairs"]) // B)
    windows = int(p["windows"])
    timer = _StepTimer.make(warmup, window, windows, B)
    t0 = time.perf_counter()
    if p["kind"] == "ref":
        import reference
        imgs = [images[i] / 255.0 for i in range(len(images))]  # float64 list, as the reference keeps them
        a, b, y = reference.make_pair_indices(len(imgs))
        pairs, labels = reference.materialise_pairs(imgs, a, b, y)
        del imgs
        train, _ = reference.split(pairs, labels)
        if timer.total * B > len(train[0]):
            raise RuntimeError(f"not enough training pairs ({len(train[0])}) for {timer.total} steps of {B}")
        keras.utils.set_random_seed(0)
        model = reference.build_reference_model(jit_compile=bool(p.get("jit")))
        setup_s = time.perf_counter() - t0
        reference.fit(model, train, None, batch_size=B, callbacks=[timer])
    else:
        from siamese_core.core.config import ModelConfig, preset_defaults
        from siamese_core.data.pairs import make_pairs
        from siamese_core.learn.model import build_model, compile_model
        from siamese_core.learn.train import pair_dataset
        preset = p.get("preset", "seed")
        pcfg, mcfg, tcfg = preset_defaults(preset)
        pairs = make_pairs(ds.groups, pcfg).train
        augment = preset != "seed" and tcfg.augment
        tds = pair_dataset(ds.rows(), pairs, B, shuffle=True, augment=augment, seed=0).repeat()
        keras.utils.set_random_seed(0)
        model = compile_model(build_model(ModelConfig(preset=preset, size=ds.size)), preset,
                              tcfg.optimizer, tcfg.learning_rate)
        if p.get("jit"):
            model.jit_compile = True
        setup_s = time.perf_counter() - t0
        model.fit(tds, epochs=1, steps_per_epoch=timer.total, callbacks=[timer], verbose=0)
    if len(timer.rates) < windows:
        raise RuntimeError(f"only {len(timer.rates)} of {windows} timing windows completed")
    return {"pairs_per_s": statistics.median(timer.rates), "windows": timer.rates, "window_steps": window,
            "warmup_steps": warmup, "first_step_s": timer.first_step_s, "setup_s": setup_s,
            "jit": bool(model.jit_compile), "policy": keras.mixed_precision.global_policy().name,
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "vm_hwm_mb": _hwm_mb()}


def child_loss_curve(p):
    """Measure 3b: reference and ours, batch 8, same pairs in the same order, same initial weights."""
    _quiet_tf()
    import keras
    import numpy as np

    import reference
    from siamese_core.core.config import ModelConfig
    from siamese_core.data.pairs import Pairs
    from siamese_core.data.store import open_dataset
    from siamese_core.learn.model import build_model, compile_model
    from siamese_core.learn.train import pair_dataset

    ds = open_dataset(p["dataset"], p["workspace"])
    images = ds.images
    B, steps, block = 8, int(p["steps"]), int(p["block"])
    a, b, y = reference.make_pair_indices(len(images))
    n_train = int(len(a) * 0.9)
    steps = min(steps, n_train // B)
    n = steps * B
    a, b, y = a[:n], b[:n], y[:n]

    class Rec(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.running = []

        def on_train_batch_end(self, i, logs=None):
            self.running.append(float(logs["loss"]))

    def per_block(running):
        m = [0.0] + running  # running mean after k steps → mean of steps [s0, s1)
        out = []
        for s0 in range(0, len(running), block):
            s1 = min(s0 + block, len(running))
            out.append((s1 * m[s1] - s0 * m[s0]) / (s1 - s0))
        return out

    # the reference: float64 list → float32 pair arrays → model.fit(NumPy), no shuffling
    imgs = {i: images[i] / 255.0 for i in sorted(set(a) | set(b))}
    pairs, labels = reference.materialise_pairs(imgs, a, b, y)
    keras.utils.set_random_seed(int(p.get("seed", 0)))
    ref_model = reference.build_reference_model()
    init = [w.copy() for w in ref_model.get_weights()]
    rec_ref = Rec()
    t0 = time.perf_counter()
    reference.fit(ref_model, (pairs, labels), None, batch_size=B, callbacks=[rec_ref], shuffle=False)
    ref_s = time.perf_counter() - t0
    del pairs

    # ours: index pairs gathered from the uint8 store by the tf.data pipeline, no shuffling
    keras.utils.set_random_seed(int(p.get("seed", 0)))
    ours = build_model(ModelConfig(preset="seed", size=ds.size))
    same_init = all(np.array_equal(u, v) for u, v in zip(init, ours.get_weights()))
    ours.set_weights(init)
    compile_model(ours, "seed", "rmsprop", 0.001)
    P = Pairs(np.asarray(a, np.int64), np.asarray(b, np.int64), np.asarray(y, np.uint8), np.zeros(n, bool))
    rec_ours = Rec()
    t0 = time.perf_counter()
    ours.fit(pair_dataset(images, P, B, shuffle=False), epochs=1, callbacks=[rec_ours], verbose=0)
    ours_s = time.perf_counter() - t0
    r, o = per_block(rec_ref.running), per_block(rec_ours.running)
    return {"steps": steps, "block": block, "batch": B, "pairs": n, "reference": r, "ours": o,
            "max_abs_diff": max(abs(u - v) for u, v in zip(r, o)),
            "final_running_loss": {"reference": rec_ref.running[-1], "ours": rec_ours.running[-1]},
            "same_init_from_seed": bool(same_init), "seconds": {"reference": ref_s, "ours": ours_s},
            "vm_hwm_mb": _hwm_mb()}


def child_make_jpegs(p):
    """Measure 4 setup: ``count`` 256×256 JPEG tiles (the sample's tiles re-encoded with small changes,
    or synthetic tiles when the sample is absent) in ``out``."""
    import cv2
    import numpy as np
    out = Path(p["out"])
    if out.is_dir() and len(list(out.glob("*.jpg"))) == p["count"]:
        return {"written": 0, "reused": True}
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    src = []
    if p.get("tiles_dir"):
        from siamese_core.data.sources.files import list_images
        src = [cv2.imread(str(f)) for f in list_images(p["tiles_dir"])]
        src = [cv2.resize(s, (256, 256), interpolation=cv2.INTER_AREA) if s.shape[:2] != (256, 256) else s
               for s in src if s is not None]
    if not src:
        from siamese_core.data.sources.synthetic import synthetic_tile
        src = [cv2.cvtColor(synthetic_tile(i, 256, 0), cv2.COLOR_RGB2BGR) for i in range(600)]
    for k in range(p["count"]):
        img, v = src[k % len(src)], k // len(src)
        if v % 4 == 1:
            img = img[:, ::-1]
        elif v % 4 == 2:
            img = cv2.convertScaleAbs(img, alpha=1.0, beta=6)
        elif v % 4 == 3:
            img = img[::-1]
        cv2.imwrite(str(out / f"{k:05d}.jpg"), np.ascontiguousarray(img), [cv2.IMWRITE_JPEG_QUALITY, 92 + v % 4])
    return {"written": p["count"], "sources": len(src)}


def child_make_tiles(p):
    """Fallback data: 600 synthetic tiles as 256×256 JPEGs (when the aerial sample is absent)."""
    import cv2

    from siamese_core.data.sources.synthetic import synthetic_tile
    out = Path(p["out"])
    out.mkdir(parents=True, exist_ok=True)
    for i in range(p["count"]):
        cv2.imwrite(str(out / f"synthetic-{i:05d}.jpg"), cv2.cvtColor(synthetic_tile(i, 256, 0), cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
    return {"written": p["count"]}


def child_ingest_ref(p):
    """Measure 4, reference: single-threaded cv2 decode + resize to 128, float64 list."""
    import reference
    from siamese_core.data.sources.files import list_images
    paths = list_images(p["dir"])[: p["count"]]
    times = []
    for _ in range(p["repeats"]):
        t0 = time.perf_counter()
        imgs = reference.load_images(paths)
        times.append(time.perf_counter() - t0)
        nbytes = sum(x.nbytes for x in imgs)
        del imgs
    return {"seconds": statistics.median(times), "runs": times, "images": len(paths), "bytes": nbytes,
            "vm_hwm_mb": _hwm_mb()}


def child_ingest_ours(p):
    """Measure 4, ours: store.build_dataset(source folder, variants 0). pandas/pyarrow (used for the
    manifest) are imported before the clock starts: a library import is not ingest work."""
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from siamese_core.core.config import DataConfig
    from siamese_core.data.store import build_dataset
    cfg = DataConfig(source="folder", path=p["dir"], variants=0, limit=p["count"])
    times = []
    for _ in range(p["repeats"]):
        t0 = time.perf_counter()
        ds = build_dataset(cfg, p["name"], p["workspace"], overwrite=True)
        times.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(times), "runs": times, "images": len(ds), "vm_hwm_mb": _hwm_mb()}


def child_reopen(p):
    """Measure 4b: open_dataset + read the manifest + read every byte of every image (through the
    memory map, page cache warm). pandas is imported first (see child_ingest_ours)."""
    import numpy as np
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from siamese_core.data.store import open_dataset
    times = []
    for _ in range(max(5, p["repeats"])):
        t0 = time.perf_counter()
        ds = open_dataset(p["name"], p["workspace"])
        groups = ds.groups
        peak = int(np.max(ds.images))  # touches every page of images.npy
        times.append(time.perf_counter() - t0)
        assert len(groups) == len(ds) and peak > 0
    return {"seconds": statistics.median(times), "runs": times, "images": len(ds),
            "bytes": int(ds.images.nbytes), "vm_hwm_mb": _hwm_mb()}


def child_scorer(p):
    """Measures 5 and 6: Scorer.score_pair on PNG bytes, Scorer.embed on a gallery."""
    _quiet_tf()
    import numpy as np

    from siamese_core.data.images import encode_png
    from siamese_core.data.store import open_dataset
    from siamese_core.judge.inference import Scorer
    t0 = time.perf_counter()
    sc = Scorer.from_run(p["run"], p["workspace"])
    load_s = time.perf_counter() - t0
    ds = open_dataset(sc.run.config.dataset, p["workspace"])
    n = min(len(ds), p["gallery"])
    tiles = np.asarray(ds.images[:n])
    if n < p["gallery"]:
        tiles = np.resize(tiles, (p["gallery"],) + tiles.shape[1:])
    pa, pb = encode_png(tiles[0]), encode_png(tiles[min(3, len(tiles) - 1)])
    for _ in range(5):
        sc.score_pair(pa, pb)
    pair_medians = []
    for _ in range(p["repeats"]):
        ts = []
        for _ in range(p["calls"]):
            t = time.perf_counter()
            sc.score_pair(pa, pb)
            ts.append(time.perf_counter() - t)
        pair_medians.append(statistics.median(ts) * 1000)
    sc.embed(tiles[:256])
    rates = []
    for _ in range(p["repeats"]):
        t = time.perf_counter()
        e = sc.embed(tiles)
        rates.append(len(tiles) / (time.perf_counter() - t))
    return {"score_pair_ms": statistics.median(pair_medians), "score_pair_runs_ms": pair_medians,
            "calls": p["calls"], "embed_tiles_per_s": statistics.median(rates), "embed_runs": rates,
            "gallery": len(tiles), "embedding_dim": int(e.shape[1]), "model_load_s": load_s,
            "preset": sc.preset, "vm_hwm_mb": _hwm_mb()}


def child_sweep(p):
    """Measure 7: ThresholdSweep(...).at(t) and metrics_at on 100,000 validation scores."""
    import numpy as np

    from siamese_core.learn.evaluate import ThresholdSweep, metrics_at
    rng = np.random.default_rng(0)
    n = p["n"]
    labels = rng.integers(0, 2, n).astype(np.uint8)
    scores = (rng.normal(0.3, 0.15, n) + 0.4 * labels).astype(np.float32)
    build, at, mat = [], [], []
    for _ in range(p["repeats"]):
        t = time.perf_counter()
        sw = ThresholdSweep(scores, labels)
        build.append(time.perf_counter() - t)
        ts = np.linspace(0.0, 1.2, 200)
        t = time.perf_counter()
        for x in ts:
            m1 = sw.at(float(x))
        at.append((time.perf_counter() - t) / len(ts))
        ts = []
        for x in np.linspace(0.0, 1.2, 20):
            t = time.perf_counter()
            m2 = metrics_at(scores, labels, float(x))
            ts.append(time.perf_counter() - t)
        mat.append(statistics.median(ts))
    assert m1 == m2 or abs(m1.accuracy - m2.accuracy) < 1e-12
    return {"sweep_build_ms": 1000 * statistics.median(build), "at_ms": 1000 * statistics.median(at),
            "metrics_at_ms": 1000 * statistics.median(mat), "n": n, "vm_hwm_mb": _hwm_mb()}


def _version(dist):
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return ""


CHILDREN = {k[len("child_"):]: v for k, v in globals().items() if k.startswith("child_")}


# =================================================================================================
# parent: spawn, measure, tabulate
# =================================================================================================

class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.R = args.repeats
        self.out = Path(args.out).resolve()
        self.work = self.out / "work"
        self.ws = self.work / "ws"
        self.logs = self.out / "logs"
        self.rows: list[dict] = []
        self.details: dict = {}
        self.child_runs: list[dict] = []
        for d in (self.out, self.work, self.ws, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        self.tiles = 150 if self.quick else 600

    # --- processes ------------------------------------------------------------------------------
    def spawn(self, cmd, label, timeout=1800, env=None) -> dict:
        """Run ``cmd``; return rc, wall time and the child's own peak RSS (os.wait4 → ru_maxrss)."""
        log = self.logs / f"{label}.log"
        t0 = time.perf_counter()
        with open(log, "w") as f:
            f.write("$ " + " ".join(map(str, cmd)) + "\n")
            f.flush()
            proc = subprocess.Popen([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                                    env=env or self.env, start_new_session=True)
            status, ru = None, None
            while True:
                pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() - t0 > timeout:
                    os.killpg(proc.pid, signal.SIGKILL)
                    pid, status, ru = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.1)
            proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        res = {"label": label, "rc": proc.returncode, "wall_s": round(wall, 2),
               "maxrss_mb": round(ru.ru_maxrss / 1024, 1), "log": str(log.relative_to(self.out))}
        self.child_runs.append(res)
        print(f"  [{label}] rc={res['rc']} {wall:.1f}s peak RSS {res['maxrss_mb']:.0f} MB", flush=True)
        return res

    def child(self, name, params, label=None, timeout=1800, env_extra=None) -> dict:
        label = label or name
        result = self.work / f"{label}.json"
        result.unlink(missing_ok=True)
        env = {**self.env, **(env_extra or {})}
        r = self.spawn([sys.executable, Path(__file__).resolve(), "--child", name, "--params", json.dumps(params),
                        "--result", result], label, timeout, env)
        if r["rc"] != 0 or not result.exists():
            tail = (self.logs / f"{label}.log").read_text()[-1500:]
            raise RuntimeError(f"{label} failed (rc {r['rc']}); log tail:\n{tail}")
        return {**json.loads(result.read_text()), "_proc": r}

    def cli(self, args, label, timeout=3600) -> dict:
        r = self.spawn([sys.executable, "-m", "siamese_core", "--workspace", self.ws, *args], label, timeout)
        if r["rc"] != 0:
            tail = (self.logs / f"{label}.log").read_text()[-1500:]
            raise RuntimeError(f"{label} failed (rc {r['rc']}); log tail:\n{tail}")
        return r

    def row(self, mid, measure, reference, ours, ratio=None, target="", met=None, unit="", note=""):
        self.rows.append({"id": mid, "measure": measure, "reference": reference, "ours": ours, "ratio": ratio,
                          "target": target, "met": met, "unit": unit, "note": note})

    # --- data -----------------------------------------------------------------------------------
    def tiles_dir(self) -> Path:
        if SAMPLE.is_dir() and any(SAMPLE.rglob("*.jpg")):
            self.details["data"] = f"{SAMPLE} (real aerial tiles, JPEG)"
            return SAMPLE
        d = self.work / "synthetic-tiles"
        if len(list(d.glob("*.jpg"))) < 600:
            self.child("make_tiles", {"out": str(d), "count": 600})
        self.details["data"] = "600 synthetic tiles written as 256x256 JPEG (aerial sample absent)"
        return d

    def ensure_aerial(self):
        """The seed dataset + run of measure 1 (made here if measure 1 was skipped)."""
        if not (self.ws / "datasets" / "bench-aerial" / "dataset.json").exists():
            self.cli(["prepare", "--source", "folder", "--path", self.tiles_dir(), "--limit", self.tiles,
                      "--name", "bench-aerial", "--overwrite"], "prepare-aerial")

    def has_model(self, rid) -> bool:
        from siamese_core.runs.registry import runs_dir
        from siamese_core.runs.run import Run
        return Run(runs_dir(self.ws) / rid).has_model()

    def ensure_run(self, rid, dataset, preset, steps):
        if self.has_model(rid):
            return
        shutil.rmtree(self.ws / "runs" / rid, ignore_errors=True)
        self.cli(["train", "--dataset", dataset, "--preset", preset, "--epochs", "1", "--steps-per-epoch", steps,
                  "--run-id", rid, "--verbose", "2"], f"train-{rid}")

    # --- measures -------------------------------------------------------------------------------
    def m1(self):
        n_tiles = self.tiles
        cap = 10 if self.quick else 0
        tdir = self.tiles_dir()
        ref = self.child("ref_pipeline", {"tiles_dir": str(tdir), "tiles": n_tiles, "max_steps": cap,
                                          "work": str(self.work / "ref-triplets")}, "m1-reference", timeout=7200)
        shutil.rmtree(self.ws / "runs" / "bench-seed", ignore_errors=True)
        prep = self.cli(["prepare", "--source", "folder", "--path", tdir, "--limit", n_tiles, "--name", "bench-aerial",
                         "--overwrite"], "m1-ours-prepare")
        targs = ["train", "--dataset", "bench-aerial", "--preset", "seed", "--epochs", "1", "--run-id", "bench-seed",
                 "--verbose", "2"] + (["--steps-per-epoch", cap] if cap else [])
        train = self.cli(targs, "m1-ours-train", timeout=7200)
        ref_peak = ref["_proc"]["maxrss_mb"] * 1024 * 1024
        ours_peak = max(prep["maxrss_mb"], train["maxrss_mb"]) * 1024 * 1024
        n_img = ref["stages"]["load"]["images"]
        self.details["m1"] = {"reference": ref, "ours": {"prepare": prep, "train": train}, "images": n_img,
                              "steps_cap": cap or "one full epoch"}
        ratio = ref_peak / ours_peak
        self.row("1", f"peak RSS: prepare + pairs + 1 epoch, seed, {n_img:,} images"
                 + (f" (quick: ≤{cap} steps)" if cap else ""),
                 f"{ref_peak / GB:.2f} GB", f"{ours_peak / GB:.2f} GB", ratio, "≥ 8× less", ratio >= 8, "GB",
                 f"ours = max(prepare {prep['maxrss_mb']:.0f} MB, train {train['maxrss_mb']:.0f} MB); "
                 f"wall: reference {ref['_proc']['wall_s']:.0f} s, ours {prep['wall_s'] + train['wall_s']:.0f} s")
        self.details["m1"]["ref_peak_bytes"] = ref_peak
        self.details["m1"]["ref_pairs"] = ref["stages"]["pairs"]["pairs"]

    def m2(self):
        import reference
        tiles = 300 if self.quick else MAPS_TILES
        steps = 3 if self.quick else 30
        shutil.rmtree(self.ws / "runs" / "bench-default", ignore_errors=True)
        prep = self.cli(["prepare", "--source", "synthetic", "--limit", tiles, "--name", "bench-maps", "--overwrite"],
                        "m2-ours-prepare")
        train = self.cli(["train", "--dataset", "bench-maps", "--preset", "default", "--epochs", "1",
                          "--steps-per-epoch", steps, "--run-id", "bench-default", "--verbose", "2"], "m2-ours-train",
                         timeout=7200)
        ours = max(prep["maxrss_mb"], train["maxrss_mb"]) * 1024 * 1024
        # the reference at 6,582 images, from its array sizes plus the runtime base measured in measure 1
        base = 0.8e9
        m1 = self.details.get("m1")
        if m1:
            n1, p1 = m1["images"], m1["ref_pairs"]
            est1 = reference.estimate_peak_bytes(n1, p1, 0)
            base = max(0.0, m1["ref_peak_bytes"] - est1["peak"])
        n_img = 3 * MAPS_TILES
        est_all = reference.estimate_peak_bytes(n_img, 3 * n_img, base)           # pairs for every image
        est_cap = reference.estimate_peak_bytes(n_img, 3 * 2000, base)            # the 2,000-anchor rule
        self.details["m2"] = {"ours": {"prepare": prep, "train": train}, "images": 3 * tiles, "steps": steps,
                              "reference_estimate_all_images": est_all, "reference_estimate_2000_anchors": est_cap,
                              "runtime_base_bytes": base}
        self.row("2", f"peak RSS: default preset, {3 * tiles:,} images, {steps} steps"
                 + (" (quick; full run: 6,582 images, 30 steps)" if self.quick else ""),
                 f"does not fit (≈{est_all['peak'] / GB:.0f} GB est.)", f"{ours / GB:.2f} GB",
                 est_all["peak"] / ours, "≤ 2 GB", ours <= 2 * GB, "GB",
                 f"reference estimate for 6,582 images: float64 images {est_all['images_f64'] / GB:.1f} + float64 pair "
                 f"intermediate {est_all['pairs_f64_intermediate'] / GB:.1f} + float32 pairs {est_all['pairs_f32'] / GB:.1f}"
                 f" + runtime {base / GB:.1f} GB (pairs for all images; with the 2,000-anchor cap ≈"
                 f"{est_cap['peak'] / GB:.1f} GB)")

    def throughput_variants(self):
        v = [("reference NumPy feed, batch 8", {"kind": "ref", "batch": 8}, {}),
             ("ours tf.data, batch 8 (one op at a time, as `train` runs)", {"kind": "ours", "batch": 8}, {}),
             ("ours tf.data, batch 8, ops in parallel (TF default)", {"kind": "ours", "batch": 8, "parallel_ops": True}, {}),
             ("ours tf.data, batch 64", {"kind": "ours", "batch": 64}, {})]
        if not self.quick:
            v += [("ours tf.data, batch 128", {"kind": "ours", "batch": 128}, {}),
                  ("ours batch 8 + XLA (jit_compile)", {"kind": "ours", "batch": 8, "jit": True}, {}),
                  ("ours batch 64 + XLA (jit_compile)", {"kind": "ours", "batch": 64, "jit": True}, {}),
                  ("ours batch 64, TF_ENABLE_ONEDNN_OPTS=0", {"kind": "ours", "batch": 64},
                   {"TF_ENABLE_ONEDNN_OPTS": "0"}),
                  ("ours batch 64 + mixed_bfloat16", {"kind": "ours", "batch": 64, "bf16": True}, {}),
                  ("ours batch 128 + mixed_bfloat16", {"kind": "ours", "batch": 128, "bf16": True}, {})]
        return v

    def m3(self):
        self.ensure_aerial()
        window_pairs = 32 if self.quick else 256
        res = {}
        ref_rate = None
        for i, (label, params, env) in enumerate(self.throughput_variants()):
            B = params["batch"]
            p = {**params, "dataset": "bench-aerial", "workspace": str(self.ws), "window_pairs": window_pairs,
                 "windows": self.R, "warmup": 3 if B <= 16 else 2}
            try:
                r = self.child("throughput", p, f"m3-throughput-{i}", timeout=3600, env_extra=env)
            except RuntimeError as e:
                res[label] = {"error": str(e)}
                self.row("3", f"train pairs/s (seed): {label}", "", "error", None, "≥ 3×", False, "pairs/s",
                         str(e).splitlines()[0])
                continue
            res[label] = r
            rate = r["pairs_per_s"]
            if params["kind"] == "ref":
                ref_rate = rate
                continue
            ratio = rate / ref_rate if ref_rate else None
            self.row("3", f"train pairs/s (seed): {label}",
                     f"{ref_rate:.1f}" if ref_rate else "error", f"{rate:.1f}", ratio, "≥ 3×",
                     ratio >= 3 if ratio else None, "pairs/s",
                     f"{r['window_steps']}-step windows after {r['warmup_steps']} warm-up steps; first step "
                     f"{r['first_step_s']:.1f} s")
        self.details["m3_throughput"] = res
        ours = {k: v["pairs_per_s"] for k, v in res.items() if "pairs_per_s" in v and not k.startswith("reference")}
        if ours and ref_rate:
            best = max(ours, key=ours.get)
            self.row("3", f"train pairs/s (seed), best of ours: {best}", f"{ref_rate:.1f}", f"{ours[best]:.1f}",
                     ours[best] / ref_rate, "≥ 3×", ours[best] / ref_rate >= 3, "pairs/s",
                     f"median of {self.R} windows of {window_pairs} pairs")
        # the loss curve: same pairs, same order, same initial weights, batch 8
        lc = self.child("loss_curve", {"dataset": "bench-aerial", "workspace": str(self.ws),
                                       "steps": 16 if self.quick else 200, "block": 4 if self.quick else 25},
                        "m3-loss-curve", timeout=3600)
        self.details["m3_loss_curve"] = lc
        rel = lc["max_abs_diff"] / max(1e-9, max(abs(x) for x in lc["reference"]))
        self.row("3b", f"loss curve, batch 8, same pairs/order/init: {lc['steps']} steps, mean per {lc['block']} steps",
                 " ".join(f"{x:.4f}" for x in lc["reference"]), " ".join(f"{x:.4f}" for x in lc["ours"]),
                 None, "matches", rel < 1e-2, "loss",
                 f"max |Δ| {lc['max_abs_diff']:.2e} (relative {rel:.1e}); initial weights identical from the seed: "
                 f"{lc['same_init_from_seed']}")

    def m4(self):
        count = 2000
        tdir = self.tiles_dir()
        jdir = self.work / "jpeg2000"
        self.child("make_jpegs", {"out": str(jdir), "count": count,
                                  "tiles_dir": str(tdir)}, "m4-make-jpegs")
        refs, ourss = [], []
        for k in range(self.R):  # interleaved, one run per process, so a busy spell hits both sides alike
            refs.append(self.child("ingest_ref", {"dir": str(jdir), "count": count, "repeats": 1},
                                   f"m4-ingest-reference-{k}"))
            ourss.append(self.child("ingest_ours", {"dir": str(jdir), "count": count, "repeats": 1,
                                                    "name": "bench-ingest", "workspace": str(self.ws)},
                                    f"m4-ingest-ours-{k}"))
        med = lambda xs: statistics.median(x["seconds"] for x in xs)  # noqa: E731
        ref = {**refs[0], "seconds": med(refs), "runs": [x["seconds"] for x in refs],
               "_proc": {"maxrss_mb": max(x["_proc"]["maxrss_mb"] for x in refs)}}
        ours = {**ourss[0], "seconds": med(ourss), "runs": [x["seconds"] for x in ourss],
                "_proc": {"maxrss_mb": max(x["_proc"]["maxrss_mb"] for x in ourss)}}
        reopen = self.child("reopen", {"name": "bench-ingest", "workspace": str(self.ws), "repeats": self.R},
                            "m4-reopen")
        self.details["m4"] = {"reference": ref, "ours": ours, "reopen": reopen}
        r = ref["seconds"] / ours["seconds"]
        self.row("4", f"ingest {count:,} JPEGs (decode + resize to 128)", f"{ref['seconds']:.2f} s",
                 f"{ours['seconds']:.2f} s", r, "≥ 3×", r >= 3, "s",
                 f"reference keeps {ref['bytes'] / GB:.2f} GB of float64; ours writes a "
                 f"{ours['images'] * 128 * 128 * 3 / 1e6:.0f} MB uint8 store; peak RSS ref "
                 f"{ref['_proc']['maxrss_mb']:.0f} MB, ours {ours['_proc']['maxrss_mb']:.0f} MB")
        r2 = ref["seconds"] / reopen["seconds"]
        r3 = ours["seconds"] / reopen["seconds"]
        self.row("4b", f"reopen prepared dataset vs decoding again ({count:,} images)", f"{ref['seconds']:.2f} s",
                 f"{reopen['seconds'] * 1000:.0f} ms", r2, "≥ 20×", r2 >= 20, "s",
                 f"open_dataset + manifest + read all {reopen['bytes'] / 1e6:.0f} MB via the memmap (page cache warm); "
                 f"vs our own decode ({ours['seconds']:.2f} s): {r3:.0f}×")
        self.details["m4"]["reopen_vs_our_decode"] = r3

    def m56(self):
        if not self.has_model("bench-seed"):
            self.ensure_aerial()
            self.ensure_run("bench-seed", "bench-aerial", "seed", 5)
        if not self.has_model("bench-default"):
            if not (self.ws / "datasets" / "bench-maps" / "dataset.json").exists():
                self.cli(["prepare", "--source", "synthetic", "--limit", 600, "--name", "bench-maps"], "prepare-maps")
            self.ensure_run("bench-default", "bench-maps", "default", 5)
        for preset, rid in (("seed", "bench-seed"), ("default", "bench-default")):
            r = self.child("scorer", {"run": rid, "workspace": str(self.ws), "calls": 50, "gallery": 1000,
                                      "repeats": self.R}, f"m56-scorer-{preset}")
            self.details[f"m56_{preset}"] = r
            self.row("5", f"score one uploaded pair (PNG bytes, model loaded), {preset} preset", "n/a",
                     f"{r['score_pair_ms']:.1f} ms", None, "≤ 50 ms", r["score_pair_ms"] <= 50, "ms",
                     f"median of {r['calls']} calls after warm-up; model load {r['model_load_s']:.1f} s")
            self.row("6", f"embed a gallery of {r['gallery']:,} tiles, {preset} preset", "n/a",
                     f"{r['embed_tiles_per_s']:.0f} tiles/s", None, "≥ 300 tiles/s", r["embed_tiles_per_s"] >= 300,
                     "tiles/s", f"Scorer.embed at its default batch (128), {r['embedding_dim']}-d")

    def m7(self):
        r = self.child("sweep", {"n": 100_000, "repeats": max(self.R, 3)}, "m7-sweep")
        self.details["m7"] = r
        self.row("7", "ThresholdSweep(...).at(t), 100,000 scores", "n/a", f"{r['at_ms']:.4f} ms", None, "≤ 20 ms",
                 r["at_ms"] <= 20, "ms", f"one-time sort {r['sweep_build_ms']:.1f} ms")
        self.row("7b", "evaluate.metrics_at, 100,000 scores", "n/a", f"{r['metrics_at_ms']:.2f} ms", None, "≤ 20 ms",
                 r["metrics_at_ms"] <= 20, "ms", "")

    # --- report ---------------------------------------------------------------------------------
    def machine(self) -> dict:
        def sh(cmd):
            try:
                return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
            except Exception:
                return ""
        mem = sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo")
        return {"nproc": sh("nproc"), "cpu": sh("lscpu | grep 'Model name' | sed 's/Model name: *//'"), "ram": mem,
                "cpu_flags": sh("grep -o 'amx[a-z_]*\\|avx512_bf16\\|avx512_fp16' /proc/cpuinfo | sort -u | tr '\\n' ' '"),
                "gpu": sh("nvidia-smi -L 2>/dev/null") or "none", "python": platform.python_version(),
                "tensorflow": _version("tensorflow"), "keras": _version("keras"), "numpy": _version("numpy"),
                "opencv": _version("opencv-python-headless") or _version("opencv-python"),
                "load_avg_start": os.getloadavg()}

    @staticmethod
    def fmt_ratio(r):
        return "" if r is None else (f"{r:.1f}×" if r < 100 else f"{r:.0f}×")

    def table(self) -> str:
        cols = ["measure", "reference", "ours", "ratio", "target", "met?"]
        rows = [[r["id"] + " " + r["measure"], str(r["reference"]), str(r["ours"]), self.fmt_ratio(r["ratio"]),
                 r["target"], {True: "yes", False: "NO", None: "—"}[r["met"]]] for r in self.rows]
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
        return "\n".join(lines)

    def run(self):
        t0 = time.time()
        machine = self.machine()
        print(f"bench: {'QUICK' if self.quick else 'full'} mode, repeats {self.R}, out {self.out}", flush=True)
        print(f"machine: {machine}", flush=True)
        only = set(self.args.only.split(",")) if self.args.only else None
        todo = [("1", self.m1), ("2", self.m2), ("3", self.m3), ("4", self.m4), ("5", self.m56), ("7", self.m7)]
        errors = {}
        for mid, fn in todo:
            if only and mid not in only and not (mid == "5" and "6" in only):
                continue
            print(f"measure {mid} ...", flush=True)
            try:
                fn()
            except Exception as e:  # record and go on with the others
                errors[mid] = str(e)
                self.row(mid, f"measure {mid} failed", "", "error", None, "", False, "", str(e).splitlines()[0])
                print(f"  measure {mid} FAILED: {e}", flush=True)
            self.save(machine, t0, errors)
        self.save(machine, t0, errors)
        print()
        print(self.table())
        for r in self.rows:
            if r["note"]:
                print(f"  {r['id']}: {r['note']}")
        lc = self.details.get("m3_loss_curve")
        if lc:
            print(f"\nloss curve (batch 8, mean loss per {lc['block']} steps):")
            print("  steps        reference  ours       |Δ|")
            for k, (u, v) in enumerate(zip(lc["reference"], lc["ours"])):
                s0, s1 = k * lc["block"] + 1, min((k + 1) * lc["block"], lc["steps"])
                print(f"  {s0:>4}-{s1:<6}  {u:.6f}   {v:.6f}   {abs(u - v):.1e}")
        print(f"\nwrote {self.out / 'results.json'} in {time.time() - t0:.0f} s")
        return 0 if not errors else 1

    def save(self, machine, t0, errors):
        out = {"mode": "quick" if self.quick else "full", "repeats": self.R, "machine": machine,
               "command": " ".join([Path(sys.executable).name, "bench/run.py"] + sys.argv[1:]),
               "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0)), "elapsed_s": round(time.time() - t0, 1),
               "load_avg_end": os.getloadavg(), "rows": self.rows, "details": self.details,
               "children": self.child_runs, "errors": errors, "table_markdown": self.table()}
        tmp = self.out / ".results.json.tmp"
        tmp.write_text(json.dumps(out, indent=2, default=str))
        os.replace(tmp, self.out / "results.json")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, fewer variants (a few minutes)")
    p.add_argument("--repeats", type=int, default=3, help="timing runs per measure; medians are reported")
    p.add_argument("--out", default=str(ROOT / "bench" / "out"), help="results.json, logs/ and work/ go here")
    p.add_argument("--only", help="comma-separated measures to run, e.g. 3,7 (development)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--params", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        res = CHILDREN[args.child](json.loads(args.params))
        Path(args.result).write_text(json.dumps(res, default=str))
        return 0
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return Bench(args).run()


if __name__ == "__main__":
    sys.exit(main())
