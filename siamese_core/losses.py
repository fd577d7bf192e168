"""Contrastive loss as a pure function plus a thin serializable Keras class around it.

Labels follow the reference: 0 = same place, 1 = different. ``d`` is what the model outputs (a
distance, or the reference's sigmoid of it): same pairs are pulled to 0, different pairs pushed
beyond the margin.
"""

from __future__ import annotations

import keras
from keras import ops


def contrastive_loss(y_true, d, margin: float = 1.0):
    """mean((1 − y)·d² + y·max(margin − d, 0)²), per the reference."""
    y = ops.cast(ops.reshape(y_true, (-1,)), d.dtype)
    d = ops.reshape(d, (-1,))
    return ops.mean((1.0 - y) * ops.square(d) + y * ops.square(ops.maximum(margin - d, 0.0)))


@keras.saving.register_keras_serializable(package="siamese_core")
class ContrastiveLoss(keras.losses.Loss):
    """Contrastive loss with ``margin`` (default 1.0, the reference's)."""

    def __init__(self, margin: float = 1.0, name: str = "contrastive", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        return contrastive_loss(y_true, y_pred, self.margin)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package="siamese_core")
class PairAccuracy(keras.metrics.MeanMetricWrapper):
    """Fraction of pairs where (score > threshold) equals the label (1 = different)."""

    def __init__(self, threshold: float = 0.5, name: str = "accuracy", dtype=None):
        super().__init__(fn=self._acc, name=name, dtype=dtype)
        self.threshold = float(threshold)

    def _acc(self, y_true, y_pred):
        pred = ops.cast(ops.reshape(y_pred, (-1,)) > self.threshold, "float32")
        return ops.cast(ops.equal(pred, ops.cast(ops.reshape(y_true, (-1,)), "float32")), "float32")

    def get_config(self):
        return {"threshold": self.threshold, "name": self.name, "dtype": self.dtype}
