"""Which devices a run trains on, and the ``tf.distribute.MirroredStrategy`` that spreads it over them.

``train --devices`` takes ``1`` (the default: one device, no strategy, exactly as before this option
existed), a number N, or ``all`` (every GPU; one CPU device when there is no GPU). With N > 1 every batch
of the run's ``batch_size`` (the *global* batch) is split in order into N equal parts (the last, short
batch of an epoch unevenly), one per replica; the variables are mirrored and the gradients summed.
What makes N devices train the same model as one:

* BatchNormalization is switched to synchronised statistics (Keras' ``synchronized=True``): the batch
  mean and variance are over the global batch, not each replica's share.
* The losses and the in-batch accuracy gather every replica's rows first (``all_gather``, which has a
  gradient), so the in-batch negatives come from the whole global batch, and then divide by the
  number of replicas: Keras sums the replicas' gradients and only scales losses that return one value
  per sample, while ours return one value per batch (see :mod:`siamese_core.learn.losses`).

Counting devices never starts TensorFlow's runtime: ``learn.train.one_op_at_a_time_on_cpu`` and the tests' logical
CPU devices must be configured before it starts.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from ..core.config import parse_devices
from ..core.errors import SiameseError


_STRATEGIES: dict = {}  # device names -> the process's MirroredStrategy over them (see Placement.strategy)


def device_name() -> str:
    """The accelerator TensorFlow will use: the GPU's name, or 'CPU (n cores)'."""
    from ..core.backend import tf
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        try:
            return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
        except Exception:
            return "GPU"
    return f"CPU ({os.cpu_count()} cores)"


def available() -> tuple[str, int]:
    """('GPU', n) when TensorFlow sees GPUs, else ('CPU', n logical CPU devices, normally 1)."""
    from ..core.backend import tf
    gpus = tf.config.list_physical_devices("GPU")
    phys = gpus or tf.config.list_physical_devices("CPU")
    n = sum(len(tf.config.get_logical_device_configuration(d) or [None]) for d in phys)
    return ("GPU" if gpus else "CPU"), n


@dataclass(frozen=True)
class Placement:
    """A resolved ``--devices`` choice: ``replicas`` devices of ``kind``; ``note`` says how ``all`` resolved."""

    choice: object
    replicas: int
    kind: str
    note: str = ""

    def describe(self) -> str:
        """The device line for status.json and the log, e.g. '2 × NVIDIA H200 (MirroredStrategy)'."""
        from .devices import device_name
        name = device_name()
        if self.replicas > 1:
            what = f"{name}" if self.kind == "GPU" else f"logical CPU devices on {name}"
            text = f"{self.replicas} × {what} (MirroredStrategy)"
        else:
            text = name
        return f"{text}; {self.note}" if self.note else text

    def strategy(self):
        """A MirroredStrategy over the first ``replicas`` devices, or None for one device (no strategy).

        One per set of devices and process, reused: a second MirroredStrategy over the same devices numbers
        its collective ops from the start again, and TensorFlow then matches them against the first one's
        (a second run in one process fails with "Shape mismatch in the collective instance")."""
        if self.replicas == 1:
            return None
        from ..core.backend import tf
        names = tuple(d.name for d in tf.config.list_logical_devices(self.kind)[: self.replicas])
        if names not in _STRATEGIES:
            _STRATEGIES[names] = tf.distribute.MirroredStrategy(list(names))
        return _STRATEGIES[names]

    def scope(self, strategy):
        """``strategy.scope()``, or a no-op context for one device."""
        return strategy.scope() if strategy is not None else contextlib.nullcontext()


def resolve_devices(choice) -> Placement:
    """``choice`` (1, N or 'all') → a :class:`Placement`; a one-line SiameseError when this machine has fewer.

    ``1`` never asks TensorFlow anything. ``all`` is every GPU, or one CPU device without a GPU (logical
    CPU devices are only used when asked for by number)."""
    choice = parse_devices(choice)
    if choice == 1:
        return Placement(1, 1, "")
    kind, n = available()
    if choice == "all":
        if kind == "GPU":
            return Placement("all", n, "GPU", f"--devices all: {n} GPU(s)")
        return Placement("all", 1, "CPU", "--devices all found no GPU, so it trains on 1 CPU device")
    if choice > n:
        have = f"{n} GPU(s)" if kind == "GPU" else f"no GPU and {n} CPU device(s)"
        raise SiameseError(f"devices={choice}: this machine has {have}; choose {n} or fewer (--devices {n}), "
                           f"or 'all'")
    return Placement(choice, choice, kind)


def prepare_for_replicas(model, train_ds) -> None:
    """What a model needs before ``fit`` under a multi-replica strategy: global-batch BatchNorm statistics
    (:func:`synchronize_batchnorm`) and a build that draws no batch (:func:`build_from_spec`)."""
    synchronize_batchnorm(model)
    build_from_spec(model, train_ds)


def build_from_spec(model, dataset) -> None:
    """Make ``model.fit`` build the model from ``dataset``'s element spec instead of drawing a batch.

    Under a strategy, Keras 3.15's ``fit`` first takes one batch from a throw-away iterator of the training
    data to build the model (``TensorFlowTrainer._maybe_symbolic_build``), then iterates the data afresh.
    That throw-away iteration advances the seeded shuffle and augmentation draws (``reshuffle_each_iteration``,
    ``rerandomize_each_iteration``), so N devices would see other batches than one device from the first
    step on. The build only needs shapes and dtypes, which the spec has. (A no-op on a Keras without that
    method: the two-device test would then show the shift.)"""
    original = getattr(model, "_maybe_symbolic_build", None)
    if original is None:
        return

    def build(iterator=None, data_batch=None):
        return original(data_batch=dataset.element_spec if data_batch is None else data_batch)
    model._maybe_symbolic_build = build


def synchronize_batchnorm(model) -> int:
    """Make every BatchNormalization in ``model`` (nested towers included) use global-batch statistics
    across replicas; returns how many. Saved with the model; at inference (moving averages) it changes nothing."""
    from ..core.backend import keras
    seen, count, todo = set(), 0, [model]
    while todo:
        layer = todo.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
            count += 1
        todo.extend(getattr(layer, "layers", []))
    return count
