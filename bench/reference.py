"""A faithful re-implementation of the reference ("tutorial") pipeline, for benchmarking only.

See ../shared/REFERENCE.md (beside the repository). Everything here deliberately keeps the reference's costs:

* prepare: every source tile is written to disk together with two copies rotated by a random angle
  (same frame, black corners), so that every three consecutive files are one triplet;
* load: the files are decoded with ``cv2.imread`` in a plain single-threaded Python loop, resized to
  128×128 and scaled to [0, 1] as float64, kept in a Python list;
* pairs: for each of the first 2,000 images (or all, if fewer) the three rules (triplet member → 0,
  an image outside i−3..i+2 → 1, (i, i) → 0), materialised as pair arrays: ``np.array(list of
  [img_a, img_b])`` (float64, as NumPy builds it from float64 tiles) then ``.astype("float32")`` —
  the path that reproduces the 2.1 GB of pair arrays / 7.4 GB peak RSS measured on 1,800 images;
* model: the seed tower (``siamese_core.learn.model.build_model(ModelConfig(preset="seed"))`` is
  layer-for-layer the reference), with the reference's own contrastive loss (margin 1), RMSprop with
  Keras defaults and metric "accuracy", fed NumPy arrays via ``model.fit(x=[a, b], y=..., batch_size=8)``;
  the first 90 % of the pairs (in order) train, the last 10 % validate.

Nothing here is used by the library; ``bench/run.py`` calls it in its own subprocesses.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np

SIZE = 128
PAIR_LIMIT = 2000


# --- prepare: the triplet files -----------------------------------------------------------------

def write_triplets(src_paths, out_dir, seed: int = 0) -> list[Path]:
    """Write each source tile plus two random-angle rotations as consecutive JPEG files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    k = 0
    for p in src_paths:
        img = cv2.imread(str(p))
        if img is None:
            continue
        h, w = img.shape[:2]
        copies = [img]
        for _ in range(2):
            m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(0, 360)), 1.0)
            copies.append(cv2.warpAffine(img, m, (w, h)))  # same frame, black corners
        for c in copies:
            f = out_dir / f"{k:06d}.jpg"
            cv2.imwrite(str(f), c)
            out.append(f)
            k += 1
    return out


# --- load: single-threaded cv2 loop, float64 list -----------------------------------------------

def load_images(paths, size: int = SIZE) -> list:
    """cv2.imread → resize → /255 (float64), one file at a time, into a Python list."""
    images = []
    for p in paths:
        img = cv2.imread(str(p))
        img = cv2.resize(img, (size, size))
        images.append(img / 255.0)
    return images


# --- pairs: the three rules, materialised -------------------------------------------------------

def make_pair_indices(n: int, limit: int = PAIR_LIMIT, seed: int = 0):
    """(a, b, label) lists by the reference's rules for the first ``limit`` images."""
    rng = np.random.default_rng(seed)
    a, b, y = [], [], []
    for i in range(min(n, limit) if limit else n):
        g = (i // 3) * 3
        a.append(i); b.append(int(g + rng.integers(0, min(3, n - g)))); y.append(0)                 # rule 1
        while True:                                                                            # rule 2
            j = int(rng.integers(0, n))
            if j < i - 3 or j > i + 2:
                break
        a.append(i); b.append(j); y.append(1)
        a.append(i); b.append(i); y.append(0)                                                  # rule 3
    return a, b, y


def materialise_pairs(images: list, a, b, y):
    """Every pair copied out as an array: (N, 2, S, S, 3) float32, labels (N, 1) float32."""
    pairs = np.array([[images[i], images[j]] for i, j in zip(a, b)]).astype("float32")
    labels = np.array(y, dtype="float32").reshape(-1, 1)
    return pairs, labels


def split(pairs, labels, train_fraction: float = 0.9):
    """The first 90 % of the pairs (in order) train, the rest validate."""
    n = int(len(pairs) * train_fraction)
    return (pairs[:n], labels[:n]), (pairs[n:], labels[n:])


# --- model, loss, compile -----------------------------------------------------------------------

def contrastive_loss(margin: float = 1.0):
    from keras import ops

    def loss(y_true, y_pred):
        square_pred = ops.square(y_pred)
        margin_square = ops.square(ops.maximum(margin - y_pred, 0))
        return ops.mean((1 - y_true) * square_pred + y_true * margin_square)
    return loss


def build_reference_model(jit_compile=False):
    import keras

    from siamese_core.core.config import ModelConfig
    from siamese_core.learn.model import build_model
    model = build_model(ModelConfig(preset="seed"))
    model.compile(loss=contrastive_loss(margin=1.0), optimizer=keras.optimizers.RMSprop(), metrics=["accuracy"],
                  jit_compile=jit_compile)
    return model


def fit(model, train, val=None, epochs: int = 1, batch_size: int = 8, callbacks=(), shuffle=True, verbose=0):
    (pt, lt) = train
    kw = {}
    if val is not None and len(val[0]):
        kw["validation_data"] = ([val[0][:, 0], val[0][:, 1]], val[1])
    return model.fit(x=[pt[:, 0], pt[:, 1]], y=lt, batch_size=batch_size, epochs=epochs, shuffle=shuffle,
                     callbacks=list(callbacks), verbose=verbose, **kw)


def vm_hwm_kb() -> int:
    """Peak resident set of this process so far (VmHWM), in KiB."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def run_pipeline(src_paths, work_dir, epochs: int = 1, max_steps: int = 0, seed: int = 0, verbose=0) -> dict:
    """prepare → load → pairs → one epoch, recording the time and peak RSS after each stage."""
    import keras

    stages = {}
    t0 = time.perf_counter()

    def mark(name, **extra):
        stages[name] = {"t_s": round(time.perf_counter() - t0, 3), "vm_hwm_mb": round(vm_hwm_kb() / 1024, 1), **extra}

    files = write_triplets(src_paths, work_dir, seed)
    mark("prepare", files=len(files))
    images = load_images(files)
    mark("load", images=len(images), image_bytes=int(sum(x.nbytes for x in images)))
    a, b, y = make_pair_indices(len(images), PAIR_LIMIT, seed)
    pairs, labels = materialise_pairs(images, a, b, y)
    mark("pairs", pairs=len(pairs), pair_bytes=int(pairs.nbytes), float64_intermediate_bytes=int(pairs.nbytes * 2))
    train, val = split(pairs, labels)
    keras.utils.set_random_seed(seed)
    model = build_reference_model()
    mark("model", params=int(model.count_params()))

    class Cap(keras.callbacks.Callback):
        steps = 0

        def on_train_batch_end(self, batch, logs=None):
            Cap.steps += 1
            if max_steps and Cap.steps >= max_steps:
                self.model.stop_training = True

    h = fit(model, train, val, epochs=epochs, callbacks=[Cap()], verbose=verbose)
    mark("fit", steps=Cap.steps, train_pairs=len(train[0]), val_pairs=len(val[0]),
         loss=[float(v) for v in h.history.get("loss", [])], val_accuracy=[float(v) for v in h.history.get("val_accuracy", [])])
    return stages


def estimate_peak_bytes(n_images: int, n_pairs: int, base_bytes: float, size: int = SIZE) -> dict:
    """The reference's arrays at a given size: float64 images, float64 pair intermediate, float32 pairs,
    and the float32 tensors model.fit copies the training inputs into (90 % of the pairs)."""
    px = size * size * 3
    images = n_images * px * 8
    pairs64 = n_pairs * 2 * px * 8
    pairs32 = n_pairs * 2 * px * 4
    fit_copy = int(0.9 * n_pairs) * 2 * px * 4
    during_pairs = images + pairs64 + pairs32
    during_fit = images + pairs32 + fit_copy
    return {"images_f64": images, "pairs_f64_intermediate": pairs64, "pairs_f32": pairs32, "fit_copy_f32": fit_copy,
            "base": base_bytes, "peak": base_bytes + max(during_pairs, during_fit)}


if __name__ == "__main__":  # a quick self-check: python bench/reference.py FOLDER [N_TILES]
    import sys
    import tempfile
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from siamese_core.data.sources.files import list_images
    src = list_images(sys.argv[1])[: int(sys.argv[2]) if len(sys.argv) > 2 else 30]
    with tempfile.TemporaryDirectory() as d:
        print(run_pipeline(src, d, max_steps=5))
