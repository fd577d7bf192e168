"""One config object per stage, frozen and JSON round-trippable.

The same objects flow from the CLI or the dashboard into the saved dataset (``dataset.json``)
and run (``config.json``), so what was asked for is always what was recorded.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import SiameseError

SOURCES = ("synthetic", "folder", "pix2pix", "hf-parquet", "hf-hub", "ab", "pairs-csv", "scene")
DISTORTIONS = ("flip", "scale", "affine", "blur", "occlude", "brightness",
               "color", "gamma", "haze", "shadow", "season", "resolution", "jpeg", "noise", "zoom", "shift")
PRESETS = ("seed", "default")
#: the kinds of labelled pairs ``make-pairs`` writes (see :mod:`siamese_core.data.pairsets`); the last three
#: are the pairs whose tiles only partly agree (another footprint, a coarser image, a changed place)
PAIR_KINDS = ("two_dates", "two_dates_rot_scale", "rotated", "distorted", "simulated_dates",
              "overlap", "coarse", "changed")


def workspace_dir(path: str | os.PathLike | None = None) -> Path:
    """The workspace: ``path`` if given, else ``$SIAMESE_WORKSPACE``, else ``./workspace``."""
    return Path(path or os.environ.get("SIAMESE_WORKSPACE") or "workspace").expanduser().resolve()


def import_roots(workspace=None) -> list[Path]:
    """Folders whose files the dashboard may import by server path: the workspace, plus every folder in
    ``$SIAMESE_IMPORT_ROOTS`` (separated by ``os.pathsep``, e.g. ``/data/tiles:/srv/archive``)."""
    extra = [p for p in os.environ.get("SIAMESE_IMPORT_ROOTS", "").split(os.pathsep) if p.strip()]
    return [workspace_dir(workspace)] + [Path(p).expanduser().resolve() for p in extra]


def check_import_path(path: str, workspace=None) -> Path:
    """``path`` resolved (symlinks followed) if it lies inside one of :func:`import_roots`, else a
    one-line SiameseError: someone who can reach the dashboard must not pull any folder of the server."""
    p = Path(path).expanduser().resolve()
    roots = import_roots(workspace)
    if not any(p == r or p.is_relative_to(r) for r in roots):
        raise SiameseError(f"{path}: outside the folders the dashboard may import from "
                           f"({', '.join(str(r) for r in roots)}); add its folder to SIAMESE_IMPORT_ROOTS "
                           f"(separated by '{os.pathsep}') and restart the dashboard, or use the command line")
    return p


class _Config:
    """Mixin: ``to_dict`` / ``from_dict`` with a clear error for unknown keys."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None):
        d = dict(d or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise SiameseError(f"{cls.__name__}: unknown option(s) {unknown}; known: {sorted(names)}")
        for f in fields(cls):  # JSON turns tuples into lists
            if f.name in d and isinstance(d[f.name], list):
                d[f.name] = tuple(d[f.name])
        return cls(**d)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise SiameseError(msg)


@dataclass(frozen=True)
class DataConfig(_Config):
    """How a dataset is built: where tiles come from and which variants each tile gets.

    ``variants`` rotated copies per tile (the reference uses 2), each optionally given the
    ``distortions`` named in DISTORTIONS. ``column`` is the parquet image column (auto-detected
    when empty). ``window`` (sources ``ab`` and ``scene``) cuts each place's co-registered views, or the
    scene, into aligned square windows of that many source pixels (0 = the whole image), every ``stride``
    pixels (0 = ``window``: windows side by side, no overlap). ``bands`` chooses a raster's bands
    (``scene``, ``folder``: "3,2,1", "rgb", "sentinel2"; "" = 1,2,3, or band 1 as grey).
    """

    source: str = "synthetic"
    path: str = ""
    limit: int = 0  # 0 = all tiles (synthetic: 600)
    size: int = 128
    variants: int = 2
    distortions: tuple = ()
    seed: int = 0
    column: str = ""
    repo_id: str = "huggan/maps"
    window: int = 0  # ab, scene: window side in source pixels (0 = whole image)
    stride: int = 0  # ab, scene: step between windows (0 = window)
    bands: str = ""  # scene (and any raster): bands as "3,2,1" or a preset ("rgb", "sentinel2"); "" = 1,2,3 or grey

    def __post_init__(self):
        _check(self.source in SOURCES, f"unknown source {self.source!r}; choose one of {', '.join(SOURCES)}")
        _check(16 <= int(self.size) <= 1024, f"tile size {self.size} is out of range; use 16..1024 (e.g. 128)")
        _check(0 <= int(self.variants) <= 16, f"variants={self.variants} is out of range; use 0..16 (default 2)")
        _check(int(self.limit) >= 0, f"limit={self.limit} must be >= 0 (0 means all tiles)")
        bad = [d for d in self.distortions if d not in DISTORTIONS]
        _check(not bad, f"unknown distortion(s) {bad}; choose from {', '.join(DISTORTIONS)}")
        _check(self.source in ("synthetic", "hf-hub") or bool(self.path),
               f"source {self.source!r} needs a path (--path)")
        _check(int(self.window) == 0 or int(self.window) >= 8,
               f"window={self.window} is out of range; use 0 (the whole image) or at least 8 px")
        _check(int(self.stride) >= 0, f"stride={self.stride} must be >= 0 (0 means the window size)")
        _check(int(self.window) == 0 or self.source in ("ab", "scene"),
               f"window={self.window} applies only to --source ab or scene; drop --window")
        _check(not self.bands or self.source in ("scene", "folder"),
               f"bands={self.bands!r} applies only to --source scene or folder (rasters); drop --bands")
        _check(int(self.stride) == 0 or int(self.window) > 0,
               f"stride={self.stride} needs a window; pass --window too (or drop --stride)")


@dataclass(frozen=True)
class PairsConfig(_Config):
    """How labelled pairs are drawn from a dataset (label 0 = same place, 1 = different).

    ``rule="reference"`` is the tutorial's three rules per image: (i, a member of its group) → 0,
    (i, an image of another group) → 1, and with ``identical`` (i, i) → 0. ``negatives`` draws that
    many different-place pairs per image. The split is by group (place) into three: ``train``, ``calibration``
    (``val_fraction`` of the places: Keras' validation loss, and the threshold is fitted on them) and ``test``
    (``test_fraction``: never used for training or the threshold; every reported number comes from them). No
    source tile has images in two splits. ``limit`` caps the number of anchor images (the reference used 2,000).
    A run saved before the test split existed reads ``test_fraction`` 0 (:meth:`RunConfig.from_dict`).
    """

    rule: str = "reference"
    identical: bool = True
    negatives: int = 1
    val_fraction: float = 0.1
    seed: int = 0
    limit: int = 0
    test_fraction: float = 0.1

    def __post_init__(self):
        _check(self.rule in ("reference",), f"unknown pair rule {self.rule!r}; use 'reference'")
        _check(0.0 < float(self.val_fraction) < 1.0, f"val_fraction={self.val_fraction} must be between 0 and 1 (e.g. 0.1)")
        _check(0.0 <= float(self.test_fraction) < 1.0,
               f"test_fraction={self.test_fraction} must be at least 0 and below 1 (e.g. 0.1)")
        _check(float(self.val_fraction) + float(self.test_fraction) < 1.0,
               f"val_fraction={self.val_fraction} + test_fraction={self.test_fraction} leave no places to train on; "
               f"keep their sum below 1 (e.g. 0.1 and 0.1)")
        _check(1 <= int(self.negatives) <= 16, f"negatives={self.negatives} is out of range; use 1..16")
        _check(int(self.limit) >= 0, f"pair limit={self.limit} must be >= 0 (0 means all images)")


@dataclass(frozen=True)
class ModelConfig(_Config):
    """The network: ``seed`` is the reference model exactly; ``default`` is this project's design."""

    preset: str = "default"
    size: int = 128
    embedding: int = 128
    width: int = 32
    normalize: bool = False  # per-tile exposure/colour standardisation first (the default preset turns it on)

    def __post_init__(self):
        _check(self.preset in PRESETS, f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")


# Keras dtype policies for training. mixed_float16 is for NVIDIA GPUs with tensor cores (it adds
# loss scaling); mixed_bfloat16 for GPUs and CPUs with native bfloat16 (on CPUs without AMX it is slower).
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def parse_devices(value):
    """A ``--devices`` choice as the config stores it: 'all' or a whole number >= 1 (text such as '2'
    is accepted); anything else is a one-line SiameseError naming the value."""
    if isinstance(value, str) and value.strip().lower() == "all":
        return "all"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
           f"devices={value!r} is not a device count; use a whole number >= 1 (1 = one device, the default) or 'all'")
    return value


@dataclass(frozen=True)
class TrainConfig(_Config):
    """Optimisation settings. ``threshold`` 0 means: fit it on the calibration pairs (seed keeps 0.2)."""

    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 0.0
    optimizer: str = ""
    augment: bool = True
    threshold: float = 0.0
    seed: int = 0
    steps_per_epoch: int = 0  # 0 = one pass over the training pairs
    precision: str = "float32"  # a Keras dtype policy: see PRECISIONS
    devices: int | str = 1  # 1 = one device, no strategy; N or 'all': MirroredStrategy (siamese_core.learn.devices)

    def __post_init__(self):
        object.__setattr__(self, "devices", parse_devices(self.devices))  # '2' -> 2, 'ALL' -> 'all'
        _check(self.precision in PRECISIONS,
               f"precision={self.precision!r} is not one of {', '.join(PRECISIONS)}")
        _check(int(self.epochs) >= 1, f"epochs={self.epochs} must be >= 1")
        _check(1 <= int(self.batch_size) <= 4096, f"batch_size={self.batch_size} is out of range; use 1..4096")
        _check(int(self.steps_per_epoch) >= 0, f"steps_per_epoch={self.steps_per_epoch} must be >= 0")


def preset_defaults(preset: str) -> tuple[PairsConfig, ModelConfig, TrainConfig]:
    """The pair, model and training settings that a preset starts from (CLI flags override them)."""
    if preset == "seed":  # the reference, exactly
        return (PairsConfig(identical=True, negatives=1, limit=2000),
                ModelConfig(preset="seed"),
                TrainConfig(epochs=30, batch_size=8, optimizer="rmsprop", learning_rate=0.001,
                            augment=False, threshold=0.2))
    if preset == "default":
        return (PairsConfig(identical=False, negatives=2),
                ModelConfig(preset="default", normalize=True),
                TrainConfig(epochs=20, batch_size=64, optimizer="adam", learning_rate=0.002, augment=True))
    raise SiameseError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")


@dataclass(frozen=True)
class RunConfig(_Config):
    """Everything a training run needs; saved as the run's ``config.json``."""

    dataset: str
    pairs: PairsConfig = field(default_factory=PairsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        pairs = dict(d.get("pairs") or {})
        if pairs and "test_fraction" not in pairs:  # saved before the test split: its pairs have no test places
            pairs["test_fraction"] = 0.0
        return cls(dataset=d["dataset"], pairs=PairsConfig.from_dict(pairs),
                   model=ModelConfig.from_dict(d.get("model")), train=TrainConfig.from_dict(d.get("train")))

    @classmethod
    def build(cls, dataset: str, preset: str = "default", *, seed: int | None = None, identical: bool | None = None,
              val_fraction: float | None = None, test_fraction: float | None = None, negatives: int | None = None,
              pair_limit: int | None = None, **train_overrides) -> "RunConfig":
        """The one way the CLI and the dashboard turn a user's choices into a run's config: the preset's
        defaults, then every option given (None = keep the preset's). ``seed`` seeds pairs and training."""
        cfg = cls.for_preset(dataset, preset, seed=seed, **train_overrides)
        chosen = {"identical": identical, "val_fraction": val_fraction, "test_fraction": test_fraction,
                  "negatives": negatives, "limit": pair_limit, "seed": seed}
        return cfg.replace(pairs=cfg.pairs.replace(**{k: v for k, v in chosen.items() if v is not None}))

    @classmethod
    def for_preset(cls, dataset: str, preset: str = "default", **train_overrides) -> "RunConfig":
        pairs, model, train = preset_defaults(preset)
        overrides = {k: v for k, v in train_overrides.items() if v is not None}
        return cls(dataset=dataset, pairs=pairs, model=model, train=train.replace(**overrides))
