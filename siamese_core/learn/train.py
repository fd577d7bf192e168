"""Training: a tf.data pipeline that gathers pairs by index from the dataset store, ``model.fit``, and
a run that records everything (:class:`siamese_core.runs.run.Run` owns its files).

Pairs are never materialised: each batch of index pairs is read from the uint8 image store
(:class:`~siamese_core.data.store.TileRows`), scaled to [0, 1], and (``default`` preset) randomly
rotated, flipped, zoomed, blurred, re-exposed and occluded on the fly, so the model learns the
invariances the tool promises.

The pairs are split by place into train, calibration and test (:mod:`siamese_core.data.pairs`). When training ends, the
threshold (unless the preset or the user fixed one) is fitted on the calibration pairs, and
``evaluation.json`` reports the test pairs: places never used for training or the threshold. With
augmentation on, tile B of every calibration and test pair carries a seeded training distortion, so the
threshold is fitted on (and measured on) pairs like the ones the model learned from.
"""

from __future__ import annotations

import itertools
import math
import os
import time
import traceback

import numpy as np

from ..core.backend import keras, tf
from ..core.config import RunConfig
from ..core.errors import RunError
from ..data.pairs import Pairs, make_pairs
from ..data.store import open_dataset
from ..core.procs import Terminated, process_start, sigterm_raises
from ..runs.lock import acquire_train_lock
from ..runs.run import Run
from ..runs.scores import VALIDATION_LABEL
from .callbacks import CalibrationMetrics, EpochCheckpoint, LiveMetrics, StopOnRequest
from .devices import prepare_for_replicas, resolve_devices
from .model import assemble, build_model, compile_model, embedding_trainer, preprocess, tower_of


# --- augmentation (TensorFlow ops, per image, in the input pipeline) ------------------------------

def _gaussian_kernel(sigma):
    r = tf.range(-3, 4, dtype=tf.float32)
    k = tf.exp(-(r ** 2) / (2.0 * sigma ** 2))
    k = k / tf.reduce_sum(k)
    k2 = k[:, None] * k[None, :]
    return tf.tile(k2[:, :, None, None], [1, 1, 3, 1])


def augment_batch(x, seed=None):
    """Random rotation (any angle), mirror, zoom, brightness/contrast, colour balance, gamma, saturation,
    haze, blur, coarser resolution, noise and occlusion per image.

    Two tiles of one place are often two acquisitions (another season, sensor or atmosphere), so
    besides the orientation the model must also learn to ignore radiometry and sensor quality.
    ``x``: float32 (B, S, S, 3) in [0, 1]. Rotation, mirror and zoom are one projective transform
    about the centre with black fill, as in the stored variants. Everything is vectorised over the
    batch; the blur sigma and the resampling factor are drawn once per batch, which images get them
    per image. ``seed`` (an int64 pair) makes every draw a stateless function of it: the input pipeline
    passes one per batch, drawn from the run's seed, so the same command trains the same model; without
    one, a seed is drawn.
    """
    if seed is None:
        seed = tf.random.uniform([2], 0, 2 ** 31 - 1, dtype=tf.int64)
    seed = tf.cast(seed, tf.int64)
    draw = itertools.count(1)  # each draw below gets its own stream, fixed when the function is traced

    def uniform(shape, lo=0.0, hi=1.0):
        return tf.random.stateless_uniform(shape, seed + tf.constant([0, next(draw)], tf.int64), lo, hi)

    def normal(shape):
        return tf.random.stateless_normal(shape, seed + tf.constant([0, next(draw)], tf.int64))

    b = tf.shape(x)[0]
    s = tf.cast(tf.shape(x)[1], tf.float32)
    c = (s - 1.0) / 2.0
    theta = uniform([b], 0.0, 2.0 * math.pi)
    zoom = tf.where(uniform([b]) < 0.3, uniform([b], 1.0, 1.4), 1.0)
    mirror = tf.where(uniform([b]) < 0.5, -1.0, 1.0)
    cos, sin = tf.cos(theta) / zoom, tf.sin(theta) / zoom
    a0, a1, b0, b1 = mirror * cos, -sin, mirror * sin, cos
    t = tf.stack([a0, a1, c - a0 * c - a1 * c, b0, b1, c - b0 * c - b1 * c,
                  tf.zeros([b]), tf.zeros([b])], axis=1)
    x = tf.raw_ops.ImageProjectiveTransformV3(images=x, transforms=t, output_shape=tf.shape(x)[1:3],
                                              fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    # exposure
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    contrast = uniform([b, 1, 1, 1], 0.7, 1.3)
    bright = uniform([b, 1, 1, 1], -0.15, 0.15)
    x = tf.clip_by_value((x - mean) * contrast + mean + bright, 0.0, 1.0)
    # another acquisition: per-channel gain (colour balance), saturation and a haze veil on a random
    # quarter are one affine colour map per image (a 3x3 matrix and an offset), then gamma
    gain = uniform([b, 3, 1], 0.8, 1.2)
    sat = uniform([b, 1, 1], 0.6, 1.4)
    haze = tf.where(uniform([b, 1, 1]) < 0.25, uniform([b, 1, 1], 0.0, 0.35), 0.0)
    veil = uniform([b, 1, 1], 0.7, 0.9)
    lum = tf.constant([[0.299], [0.587], [0.114]])  # row c: how much input channel c adds to the luminance
    mix = gain * (sat * tf.eye(3) + (1.0 - sat) * lum) * (1.0 - haze)  # (B, 3 in, 3 out)
    x = tf.reshape(tf.matmul(tf.reshape(x, [b, -1, 3]), mix) + veil * haze, tf.shape(x))
    gamma = tf.exp(uniform([b, 1, 1, 1], math.log(0.7), math.log(1.4)))
    x = tf.exp(tf.math.log(tf.clip_by_value(x, 1e-6, 1.0)) * gamma)  # x ** gamma, cheaper than tf.pow
    # blur a random third of the batch
    blurred = tf.nn.depthwise_conv2d(x, _gaussian_kernel(uniform([], 0.7, 2.0)), [1, 1, 1, 1], "SAME")
    x = tf.where(uniform([b, 1, 1, 1]) < 0.3, blurred, x)
    # a coarser sensor on a random quarter: down by f in 1.5-3 (area average), back up (bilinear);
    # only the chosen images are resampled
    size = tf.shape(x)[1:3]
    small = tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) / uniform([], 1.5, 3.0)), tf.int32), 2)
    pick = tf.where(uniform([b]) < 0.25)
    coarse = tf.image.resize(tf.image.resize(tf.gather_nd(x, pick), small, method="area"), size, method="bilinear")
    x = tf.tensor_scatter_nd_update(x, pick, coarse)
    # Gaussian sensor noise (sigma 0-0.03) on a random half; drawing normals is the costly part
    pick = tf.where(uniform([b]) < 0.5)
    some = tf.gather_nd(x, pick)
    sigma = uniform(tf.stack([tf.shape(some)[0], 1, 1, 1]), 0.0, 0.03)
    noisy = tf.clip_by_value(some + normal(tf.shape(some)) * sigma, 0.0, 1.0)
    x = tf.tensor_scatter_nd_update(x, pick, noisy)
    # black out a square patch in a random third of the batch
    side = uniform([b, 1, 1], 0.15, 0.35) * s
    y0 = uniform([b, 1, 1]) * (s - side)
    x0 = uniform([b, 1, 1]) * (s - side)
    grid = tf.range(s)
    inside = ((grid[None, :, None] >= y0) & (grid[None, :, None] < y0 + side)
              & (grid[None, None, :] >= x0) & (grid[None, None, :] < x0 + side))
    occlude = inside & (uniform([b, 1, 1]) < 0.3)
    return tf.where(occlude[..., None], 0.0, tf.clip_by_value(x, 0.0, 1.0))  # blur and resampling may round past 1


# --- input pipeline -----------------------------------------------------------------------------

# The distortion tile B of every calibration / test pair gets (augmentation on): batch k of those pairs is
# distorted with the seed pair (seed, k), so every run and every process sees the same distorted pairs.
CALIBRATION_DISTORT_SEED = 20_251_130
TEST_DISTORT_SEED = 20_251_131
EPOCH_METRIC_PAIRS = 1000  # the per-epoch calibration metric scores at most this many pairs (a seeded sample)


def pair_dataset(images, pairs: Pairs, batch_size: int, shuffle: bool = False,
                 augment: bool = False, seed: int = 0, with_labels: bool = True,
                 distort_seed: int | None = None) -> tf.data.Dataset:
    """Batches of ((tile_a, tile_b), label) gathered by index from ``images``: a uint8
    array or a :class:`~siamese_core.data.store.TileRows` (anything that indexes by an index array).

    ``augment`` distorts both tiles with a new random stream every epoch (training). ``distort_seed``
    (without ``augment``) distorts tile B only, batch k with the seed pair (distort_seed, k): a fixed,
    reproducible distortion for pairs that are scored, not trained on."""
    size = images.shape[1]
    ds = tf.data.Dataset.from_tensor_slices((pairs.a, pairs.b, pairs.label.astype(np.float32)))
    if shuffle:
        ds = ds.shuffle(len(pairs), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    distort_b = distort_seed is not None and not augment
    if augment:  # one seed pair per batch, a new stream every epoch, the same streams for the same seed
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2))
        ds = ds.map(lambda t, r: (*t, r))
    elif distort_b:  # the seed pair (distort_seed, batch number): fixed, whatever the process or the epoch
        first = tf.constant(int(distort_seed), tf.int64)
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.counter().map(lambda k: tf.stack([first, k])))
        ds = ds.map(lambda t, r: (*t, r))

    def gather(ia, ib):
        return np.asarray(images[np.asarray(ia)]), np.asarray(images[np.asarray(ib)])

    def load(ia, ib, y, r=None):
        ta, tb = tf.numpy_function(gather, [ia, ib], [tf.uint8, tf.uint8], stateful=False)
        ta = tf.ensure_shape(ta, [None, size, size, 3])
        tb = tf.ensure_shape(tb, [None, size, size, 3])
        ta, tb = preprocess(ta), preprocess(tb)
        if augment:
            ta, tb = augment_batch(ta, r), augment_batch(tb, r + tf.constant([0, 1_000_003], tf.int64))
        elif distort_b:
            tb = augment_batch(tb, r)
        return ((ta, tb), y) if with_labels else (ta, tb)

    # two batches in flight: enough to keep the model busy, and memory stays bounded
    return ds.map(load, num_parallel_calls=2, deterministic=True).prefetch(2)


def positive_pairs(pairs: Pairs, groups: np.ndarray) -> Pairs:
    """The same-place pairs of ``pairs``, labelled with their group id (for the in-batch loss)."""
    p = pairs.subset((pairs.label == 0) & ~pairs.identical)
    return Pairs(p.a, p.b, groups[p.a], p.val, p.test)


def predict_scores(model: keras.Model, images, pairs: Pairs, batch_size: int = 64,
                   distort_seed: int | None = None) -> np.ndarray:
    """Model output (score, lower = more alike) for every pair, in order; with ``distort_seed``, tile B
    of each pair distorted as :func:`pair_dataset` says (the same batch size gives the same distortions)."""
    if len(pairs) == 0:
        return np.zeros(0, np.float32)
    ds = pair_dataset(images, pairs, batch_size, with_labels=False, distort_seed=distort_seed)
    out = [np.asarray(model(batch, training=False)).reshape(-1) for batch in ds]
    return np.concatenate(out).astype(np.float32)


def distort_seeds(cfg: RunConfig) -> tuple[int | None, int | None]:
    """(calibration, test) distortion seeds: the fixed seeds when the run trains with augmentation (the
    ``default`` preset with augment on), else (None, None): the pairs are scored as they are."""
    if cfg.model.preset != "seed" and cfg.train.augment:
        return CALIBRATION_DISTORT_SEED, TEST_DISTORT_SEED
    return None, None


def epoch_metric_pairs(cal: Pairs, cap: int = EPOCH_METRIC_PAIRS, seed: int = 0) -> Pairs:
    """The calibration pairs the per-epoch metric scores: all of them when there are at most ``cap``, else a
    seeded sample of ``cap`` (in their order, so that the first ``cap`` cases score like the final ones)."""
    if len(cal) <= cap:
        return cal
    keep = np.zeros(len(cal), bool)
    keep[np.random.default_rng([seed, 4]).choice(len(cal), cap, replace=False)] = True
    return cal.subset(keep)


# --- a run --------------------------------------------------------------------------------------

def one_op_at_a_time_on_cpu() -> None:
    """Without a GPU, run one TensorFlow op at a time (inter-op parallelism 1).

    Each convolution already uses every core; running the two towers side by side as well holds two
    sets of temporaries at once. Measured on 2 cores (seed preset, batch 8, 300 steps): peak RSS 901
    instead of 964 MiB, for 8-12 % less speed; default preset: 53-110 MiB less for 2 % less speed
    (bench/RESULTS.md). Does nothing once TensorFlow has started (e.g. a second run in one process).
    """
    if tf.config.list_physical_devices("GPU"):
        return
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass


def _finish(run: Run, model: keras.Model, images, pairs: Pairs, cfg: RunConfig, groups: np.ndarray,
            keep_user_threshold: bool = False) -> None:
    """Save the model, score the calibration and test pairs, fit the threshold on calibration, report test."""
    from .evaluate import report, suggest_thresholds

    run.save_model(model)
    bs = cfg.train.batch_size
    cal_seed, test_seed = distort_seeds(cfg)
    cal = pairs.calibration
    scores = predict_scores(model, images, cal, batch_size=bs, distort_seed=cal_seed)
    run.save_val_scores(scores, cal.label, cal.a, cal.b, distort_seed=cal_seed)
    # a resumed run keeps the threshold its user saved for its learned distance; a fusion, fitted on the earlier
    # model's distances, does not carry over to the new model (the verdict saved below has none)
    user = run.user_threshold() if keep_user_threshold and not run.has_fusion() else None
    if user is not None:
        threshold, source = user, "user"
    elif cfg.train.threshold > 0:
        threshold, source = cfg.train.threshold, "preset"
    else:
        keep = ~cal.identical
        threshold, source = suggest_thresholds(scores[keep], cal.label[keep]).best_accuracy, "calibrated"
    run.save_verdict(None, threshold, source)
    test = pairs.testing
    if len(test):
        t_scores = predict_scores(model, images, test, batch_size=bs, distort_seed=test_seed)
        run.save_test_scores(t_scores, test.label, test.a, test.b, distort_seed=test_seed)
        places = len(np.unique(groups[test.a]))
        what = {"split": "test", "pairs": len(test), "places": places, "distorted": test_seed is not None,
                "label": f"test pairs: {places} places never used for training or the threshold"}
        run.save_evaluation({"pairs": what, "threshold_source": source,
                             **report(t_scores, test.label, threshold, identical=test.identical)})
    else:  # --test-fraction 0: only the calibration pairs, which the threshold was fitted on
        what = {"split": "validation", "pairs": len(cal), "places": len(np.unique(groups[cal.a])),
                "distorted": cal_seed is not None,
                "label": VALIDATION_LABEL}
        run.save_evaluation({"pairs": what, "threshold_source": source,
                             **report(scores, cal.label, threshold, identical=cal.identical)})


def run_training(run_dir, resume: bool = False, lock_fd: int | None = None, verbose: int = 1) -> dict:
    """Train the run at ``run_dir`` (a path or a :class:`Run`; its config must exist); returns the final status.

    Holds the workspace's training lock throughout (``lock_fd`` when the launcher took it already).
    Any error is recorded in the run's status (status 'failed', with the message) and re-raised. SIGTERM (and
    Ctrl-C) end it as 'stopped': the run keeps its last checkpoint and can be resumed.
    """
    run = Run(run_dir)
    workspace = run.workspace
    cfg = run.config
    if lock_fd is None:
        lock_fd = acquire_train_lock(run.name, workspace)
    policy = keras.mixed_precision.global_policy()
    with sigterm_raises():  # `stop` sends SIGTERM when a stop request is not honoured in time
        try:
            one_op_at_a_time_on_cpu()
            placement = resolve_devices(cfg.train.devices)  # 1 (the default): no strategy, as without the option
            keras.mixed_precision.set_global_policy(cfg.train.precision)  # layers built below take it
            run.write_status("running", reset=True, pid=os.getpid(), pid_start=process_start(os.getpid()),
                             device=placement.describe(), error=None, started=time.strftime("%Y-%m-%dT%H:%M:%S"))
            keras.utils.set_random_seed(cfg.train.seed)
            ds = open_dataset(cfg.dataset, workspace)
            if ds.size != cfg.model.size:
                cfg = RunConfig.from_dict({**cfg.to_dict(), "model": {**cfg.model.to_dict(), "size": ds.size}})
                run.write_config(cfg)
            if resume and run.pairs_path.exists():
                why = run.dataset_change(workspace)  # the launcher checked; the dataset may have changed since
                if why:
                    raise RunError(f"{why}; its pairs no longer match the images, so it cannot resume: train a new run")
                pairs = Pairs.load(run.pairs_path)
            else:
                pairs = make_pairs(ds.groups, cfg.pairs)
                pairs.save(run.pairs_path)
                run.record_dataset(ds)  # the data these pairs index
            images = ds.rows()
            t, bs = cfg.train, cfg.train.batch_size
            in_batch = cfg.model.preset != "seed"  # default: same-place pairs, every other pair in the batch is a negative
            if in_batch:
                fit_train = positive_pairs(pairs.train, ds.groups)
                fit_val = positive_pairs(pairs.calibration, ds.groups)
            else:
                fit_train, fit_val = pairs.train, pairs.calibration
            if len(fit_train) == 0:
                raise RunError(f"dataset {cfg.dataset!r} gives no same-place training pairs (each place has a single "
                               f"image, e.g. prepared with --variants 0); prepare it with --variants 2, or from a source "
                               f"with several views of each place (--source ab)")
            steps = t.steps_per_epoch or max(1, math.ceil(len(fit_train) / bs))
            ckpt = run.checkpoint_path() if resume else None
            initial_epoch = run.checkpoint_epoch() if ckpt is not None else 0
            # a resumed run draws a new shuffle order instead of replaying the first epoch's
            train_ds = pair_dataset(images, fit_train, bs, shuffle=True, augment=t.augment and in_batch,
                                    seed=t.seed + initial_epoch)
            if t.steps_per_epoch:
                train_ds = train_ds.repeat()
            val_ds = pair_dataset(images, fit_val, bs)  # activations, not data, set the peak memory

            strategy = placement.strategy()  # None for one device
            with placement.scope(strategy):  # variables (and a resumed checkpoint's) mirrored on every device
                if initial_epoch:
                    from .model import load_model_safe
                    fit_model = load_model_safe(ckpt, compile=True)
                else:
                    model = build_model(cfg.model)
                    fit_model = embedding_trainer(tower_of(model)) if in_batch else model
                    compile_model(fit_model, cfg.model.preset, t.optimizer, t.learning_rate,
                                  decay_steps=steps * t.epochs if in_batch else 0)
            if strategy is not None:
                prepare_for_replicas(fit_model, train_ds)  # global-batch BatchNorm; no batch drawn before training
            model = assemble(tower_of(fit_model), cfg.model.preset) if in_batch else fit_model

            stop = StopOnRequest(run)
            sample = epoch_metric_pairs(pairs.calibration, seed=t.seed)
            cal_seed = distort_seeds(cfg)[0]
            cal_metric = CalibrationMetrics(lambda: predict_scores(model, images, sample, bs, distort_seed=cal_seed),
                                            sample.label, sample.identical, threshold=t.threshold)
            # the epoch metric first: it adds its numbers to the logs the others record
            callbacks = [cal_metric, LiveMetrics(run, steps, t.epochs), EpochCheckpoint(run), stop]
            run.write_status("running", epoch=initial_epoch, epochs=t.epochs, step=0, steps=steps,
                             pair_counts=pairs.counts(), fit_pairs=len(fit_train))
            if initial_epoch < t.epochs:
                fit_model.fit(train_ds, validation_data=val_ds, epochs=t.epochs, initial_epoch=initial_epoch,
                              steps_per_epoch=steps, callbacks=callbacks, verbose=verbose, shuffle=False)
            status = "stopped" if stop.stopped else "finished"
            run.write_status("finishing", final=status)
            _finish(run, model, images, pairs, cfg, ds.groups, keep_user_threshold=resume)
            return run.write_status(status, ended=time.strftime("%Y-%m-%dT%H:%M:%S"))
        except BaseException as e:
            run.append_log(traceback.format_exc())
            if isinstance(e, Terminated):
                status, error = "stopped", "stopped by SIGTERM (a stop request was not honoured in time)"
            elif isinstance(e, KeyboardInterrupt):
                status, error = "stopped", "interrupted by the user"
            else:
                status, error = "failed", f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
            run.write_status(status, error=error, ended=time.strftime("%Y-%m-%dT%H:%M:%S"))
            raise
        finally:
            keras.mixed_precision.set_global_policy(policy)
            os.close(lock_fd)
