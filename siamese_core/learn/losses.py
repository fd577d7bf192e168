"""Contrastive loss as a pure function plus a thin serializable Keras class around it.

Labels follow the reference: 0 = same place, 1 = different. ``d`` is what the model outputs (a
distance, or the reference's sigmoid of it): same pairs are pulled to 0, different pairs pushed
beyond the margin.

Under a ``tf.distribute`` strategy with several replicas (``train --devices N``) each loss first gathers
every replica's rows (:func:`across_replicas`), so it is the loss of the whole global batch (for the
in-batch loss: every other pair of the global batch is a negative), and divides it by the number of
replicas, because Keras sums the replicas' gradients and leaves a loss that returns one value (not one
per sample) unscaled. With one device nothing changes.
"""

from __future__ import annotations

from ..core.backend import keras, tf
from keras import ops  # noqa: E402  (after the backend)


def across_replicas(*values):
    """(values gathered along axis 0 from every replica, number of replicas) inside a multi-replica step;
    (values, 1) unchanged otherwise. The gather has a gradient: each replica gets back its own rows' share."""
    ctx = tf.distribute.get_replica_context()
    n = ctx.num_replicas_in_sync if ctx is not None else 1
    if n == 1:
        return values, 1
    return tuple(ctx.all_gather(v, axis=0) for v in values), n


def _per_replica(loss, n: int):
    """A global-batch loss as each of ``n`` replicas must return it (Keras sums their gradients)."""
    return loss if n == 1 else loss / ops.cast(n, loss.dtype)


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
        (y_true, y_pred), n = across_replicas(y_true, y_pred)
        return _per_replica(contrastive_loss(y_true, y_pred, self.margin), n)

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


def _split_embeddings(y_pred):
    e = ops.shape(y_pred)[1] // 2
    return y_pred[:, :e], y_pred[:, e:]


def _pair_matrix(y_true, y_pred):
    """Distances between every a_i and every b_j, and the same-place mask (same group id)."""
    ea, eb = _split_embeddings(y_pred)
    sq = (ops.sum(ops.square(ea), axis=1, keepdims=True) + ops.transpose(ops.sum(ops.square(eb), axis=1, keepdims=True))
          - 2.0 * ops.matmul(ea, ops.transpose(eb)))
    d = ops.sqrt(ops.maximum(sq, 1e-7))
    g = ops.reshape(ops.cast(y_true, "int64"), (-1, 1))
    same = ops.cast(ops.equal(g, ops.transpose(g)), d.dtype)
    return d, same


def batch_contrastive_loss(group_ids, embeddings, margin: float = 1.0):
    """Contrastive loss over all B×B pairs of a batch of B same-place pairs (in-batch negatives).

    ``embeddings`` is [e(a) | e(b)] of shape (B, 2E); ``group_ids`` (B,) says which place each pair
    shows, so a_i and b_j are the same place exactly when their group ids match. Same and different
    pairs are averaged separately, so each counts half.
    """
    d, same = _pair_matrix(group_ids, embeddings)
    diff = 1.0 - same
    pos = ops.sum(same * ops.square(d)) / ops.maximum(ops.sum(same), 1.0)
    neg = ops.sum(diff * ops.square(ops.maximum(margin - d, 0.0))) / ops.maximum(ops.sum(diff), 1.0)
    return pos + neg


@keras.saving.register_keras_serializable(package="siamese_core")
class BatchContrastiveLoss(keras.losses.Loss):
    """:func:`batch_contrastive_loss` as a Keras loss; y_true = group ids, y_pred = [e(a) | e(b)]."""

    def __init__(self, margin: float = 1.0, name: str = "batch_contrastive", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        (y_true, y_pred), n = across_replicas(y_true, y_pred)
        return _per_replica(batch_contrastive_loss(y_true, y_pred, self.margin), n)

    def get_config(self):
        return {"margin": self.margin, "name": self.name}


@keras.saving.register_keras_serializable(package="siamese_core")
class BatchPairAccuracy(keras.metrics.Mean):
    """Balanced accuracy over all B×B pairs of a batch at ``threshold``: mean of same-pair and
    different-pair accuracy (so the many in-batch negatives do not swamp it)."""

    def __init__(self, threshold: float = 0.5, name: str = "accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.threshold = float(threshold)

    def update_state(self, y_true, y_pred, sample_weight=None):
        (y_true, y_pred), _ = across_replicas(y_true, y_pred)  # the global batch's pairs, on every replica
        d, same = _pair_matrix(y_true, y_pred)
        pred_same = ops.cast(d <= self.threshold, d.dtype)
        acc_pos = ops.sum(same * pred_same) / ops.maximum(ops.sum(same), 1.0)
        acc_neg = ops.sum((1.0 - same) * (1.0 - pred_same)) / ops.maximum(ops.sum(1.0 - same), 1.0)
        return super().update_state(0.5 * (acc_pos + acc_neg))

    def get_config(self):
        return {"threshold": self.threshold, "name": self.name, "dtype": self.dtype}
