"""The twin networks: the reference's ``seed`` model exactly, and this project's ``default`` design.

A Siamese model takes two uint8-derived float tiles in [0, 1] (see :func:`preprocess`) and outputs a
score per pair: lower = more alike. Every custom piece is a registered Keras class, so a model saves
as ``.keras`` and reloads with ``safe_mode=True`` (no ``Lambda``).

``seed`` (the reference): BN → 3 × (Conv tanh → AvgPool) → Flatten → BN → Dense(128, tanh) towers,
Euclidean distance → BN → Dense(1, sigmoid): 1,805,394 parameters.

``default`` fixes what REFERENCE.md lists: the tiles are masked to their inscribed disc (the part a
rotation keeps), a ReLU/BN conv tower ends in global pooling (no Flatten, so features do not depend on
where things are), embeddings are L2-normalised and the output is the raw distance in [0, 2], so the
contrastive margin is reachable; the decision threshold is calibrated on held-out calibration pairs. It trains
through :func:`embedding_trainer` with in-batch negatives (see :mod:`siamese_core.learn.losses`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.backend import keras
from keras import layers, ops  # noqa: E402  (after the backend)

from ..core.config import ModelConfig
from ..core.errors import RunError

EPS = 1e-7


def preprocess(images):
    """uint8 tiles → float32 in [0, 1]: the one scaling used by training and scoring."""
    return ops.cast(images, "float32") / 255.0


@keras.saving.register_keras_serializable(package="siamese_core")
class EuclideanDistance(layers.Layer):
    """sqrt(max(sum((a − b)², axis=1), eps)) with shape (batch, 1), as in the reference."""

    def __init__(self, eps: float = EPS, **kwargs):
        super().__init__(**kwargs)
        self.eps = float(eps)

    def call(self, inputs):
        a, b = inputs
        s = ops.sum(ops.square(a - b), axis=1, keepdims=True)
        return ops.sqrt(ops.maximum(s, self.eps))

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 1)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}


@keras.saving.register_keras_serializable(package="siamese_core")
class DiskMask(layers.Layer):
    """Zero everything outside the tile's inscribed disc: the only part a rotation keeps in frame."""

    def call(self, x):
        h, w = x.shape[1], x.shape[2]
        yy, xx = np.mgrid[0:h, 0:w].astype("float32")
        r = min(h, w) / 2.0
        m = (((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) <= r * r).astype("float32")
        return x * ops.convert_to_tensor(m[None, :, :, None], dtype=x.dtype)


@keras.saving.register_keras_serializable(package="siamese_core")
class Standardize(layers.Layer):
    """Per tile and channel: subtract the mean, divide by the standard deviation. Two acquisitions of one
    place differ most in exposure and colour balance; after this layer those differences are gone."""

    def __init__(self, floor: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.floor = float(floor)

    def call(self, x):
        mean = ops.mean(x, axis=(1, 2), keepdims=True)
        std = ops.sqrt(ops.mean(ops.square(x - mean), axis=(1, 2), keepdims=True))
        return (x - mean) / ops.maximum(std, self.floor)

    def get_config(self):
        return {**super().get_config(), "floor": self.floor}


@keras.saving.register_keras_serializable(package="siamese_core")
class L2Normalize(layers.Layer):
    """Scale each embedding to unit length."""

    def call(self, x):
        return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), EPS))


def seed_tower(size: int = 128) -> keras.Model:
    inp = keras.Input((size, size, 3))
    x = layers.BatchNormalization()(inp)
    x = layers.Conv2D(64, (3, 3), activation="tanh")(x)
    x = layers.AveragePooling2D(pool_size=(2, 2))(x)
    x = layers.Conv2D(128, (3, 3), activation="tanh")(x)
    x = layers.AveragePooling2D(pool_size=(2, 2))(x)
    x = layers.Conv2D(64, (3, 3), activation="tanh")(x)
    x = layers.AveragePooling2D(pool_size=(2, 2))(x)
    x = layers.Flatten()(x)
    x = layers.BatchNormalization()(x)
    x = layers.Dense(128, activation="tanh")(x)
    return keras.Model(inp, x, name="tower")


def _conv(x, filters, strides=1):
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x)


def default_tower(size: int = 128, width: int = 32, embedding: int = 128, normalize: bool = False) -> keras.Model:
    inp = keras.Input((size, size, 3))
    x = Standardize()(inp) if normalize else inp
    x = DiskMask()(x)
    x = _conv(x, width, strides=2)  # one cheap full-resolution layer, then straight to 1/4 scale
    x = layers.MaxPooling2D(2)(x)
    x = _conv(x, width * 2)
    x = _conv(x, width * 2)
    x = layers.MaxPooling2D(2)(x)
    x = _conv(x, width * 4)
    x = _conv(x, width * 4)
    x = layers.MaxPooling2D(2)(x)
    x = _conv(x, width * 8)
    x = layers.Concatenate()([layers.GlobalAveragePooling2D()(x), layers.GlobalMaxPooling2D()(x)])
    x = layers.Dense(embedding)(x)
    x = L2Normalize()(x)
    return keras.Model(inp, x, name="tower")


def build_model(cfg: ModelConfig) -> keras.Model:
    """The Siamese model for ``cfg.preset``: inputs (tile_a, tile_b) as float32 in [0, 1]."""
    tower = (seed_tower(cfg.size) if cfg.preset == "seed"
             else default_tower(cfg.size, cfg.width, cfg.embedding, cfg.normalize))
    return assemble(tower, cfg.preset)


def assemble(tower: keras.Model, preset: str) -> keras.Model:
    """Twin ``tower`` (shared weights) → distance (→ BN → Dense sigmoid for ``seed``)."""
    size = tower.input_shape[1]
    a = keras.Input((size, size, 3), name="tile_a")
    b = keras.Input((size, size, 3), name="tile_b")
    d = EuclideanDistance(name="distance")([tower(a), tower(b)])
    if preset == "seed":
        d = layers.BatchNormalization()(d)
        d = layers.Dense(1, activation="sigmoid")(d)
    return keras.Model([a, b], d, name=f"siamese_{preset}")


def embedding_trainer(tower: keras.Model) -> keras.Model:
    """The training twin of the ``default`` model: outputs [e(a) | e(b)] so that the loss can compare
    every a with every b in the batch (in-batch negatives). Shares ``tower``'s weights."""
    size = tower.input_shape[1]
    a = keras.Input((size, size, 3), name="tile_a")
    b = keras.Input((size, size, 3), name="tile_b")
    return keras.Model([a, b], layers.Concatenate(axis=1, name="embeddings")([tower(a), tower(b)]),
                       name="siamese_trainer")


def tower_of(model: keras.Model) -> keras.Model:
    return model.get_layer("tower")


class _Folded(layers.Layer):
    """Stands where a BatchNormalization was folded into the convolution before it (inference only)."""

    def call(self, inputs, training=None, mask=None):
        return inputs


def inference_tower(tower: keras.Model) -> keras.Model:
    """The tower for scoring: each BatchNormalization that directly follows a bias-free, linear convolution
    is folded into that convolution's weights and bias. Same outputs (within 1e-7), one core about 7 %
    faster (the BN's element-wise ops also cost oneDNN a layout change each). Not for training or saving;
    a tower with nothing to fold (``seed``) is returned as it is."""
    folds = {}
    for bn in tower.layers:
        if not isinstance(bn, layers.BatchNormalization) or bn.axis not in (-1, [-1], 3, [3]):
            continue
        conv = bn.input._keras_history.operation
        if (isinstance(conv, layers.Conv2D) and conv.activation is keras.activations.linear
                and [n.operation for n in conv._outbound_nodes] == [bn]):
            folds[conv.name] = bn
    if not folds:
        return tower
    gone = {bn.name for bn in folds.values()}

    def clone(layer):
        if layer.name in gone:
            return _Folded(name=layer.name)
        cfg = layer.get_config()
        if layer.name in folds:
            cfg["use_bias"] = True
        return layer.__class__.from_config(cfg)

    folded = keras.models.clone_model(tower, clone_function=clone)
    for layer in tower.layers:
        if layer.name in folds:
            bn = folds[layer.name]
            gamma, beta, mean, var = (np.asarray(w, np.float64) for w in
                                      (bn.gamma if bn.scale else 1.0, bn.beta if bn.center else 0.0,
                                       bn.moving_mean, bn.moving_variance))
            k = gamma / np.sqrt(var + bn.epsilon)
            w = layer.get_weights()
            bias = w[1] if layer.use_bias else 0.0
            folded.get_layer(layer.name).set_weights([(w[0] * k).astype("float32"),
                                                      ((bias - mean) * k + beta).astype("float32")])
        elif layer.name not in gone and layer.weights:
            folded.get_layer(layer.name).set_weights(layer.get_weights())
    return folded


def compile_model(model: keras.Model, preset: str, optimizer: str, learning_rate: float,
                  decay_steps: int = 0) -> keras.Model:
    """Compile for training: the pair model with the reference's contrastive loss (``seed``), or the
    embedding trainer with the in-batch contrastive loss (``default``); margin 1, accuracy at 0.5.
    ``decay_steps`` > 0 anneals the learning rate to zero along a cosine over that many steps."""
    from .losses import BatchContrastiveLoss, BatchPairAccuracy, ContrastiveLoss, PairAccuracy
    opt = {"rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam,
           "sgd": keras.optimizers.SGD}[optimizer or ("rmsprop" if preset == "seed" else "adam")]
    if model.name == "siamese_trainer":
        loss, metric = BatchContrastiveLoss(margin=1.0), BatchPairAccuracy(0.5)
    else:
        loss, metric = ContrastiveLoss(margin=1.0), PairAccuracy(0.5)
    lr = learning_rate or 0.001
    if decay_steps:
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=decay_steps, alpha=0.02)
    model.compile(optimizer=opt(learning_rate=lr), loss=loss, metrics=[metric])
    return model


def load_model_safe(path: Path, compile: bool = False):
    """Load a ``.keras`` model with safe_mode; anything unsafe or unknown becomes a one-line RunError."""
    from . import losses  # noqa: F401  (registers the custom loss classes; this module registers the layers)
    try:
        return keras.models.load_model(path, compile=compile, safe_mode=True)
    except Exception as e:
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise RunError(f"{path}: refused to load model ({msg}); only models trained by siamese_core load") from None
