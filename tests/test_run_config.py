"""One RunConfig builder: the CLI offers every option of the Train page, and both build the same config."""

from __future__ import annotations

import json
import shutil

import pytest

from siamese_core.cli import parser
from siamese_core.cli.train import run_config
from siamese_core.core.config import RunConfig

from conftest import cli


def test_cli_and_builder_agree_on_every_option():
    args = parser().parse_args(["train", "--dataset", "d", "--preset", "default", "--epochs", "3", "--batch-size", "32",
                                "--learning-rate", "0.01", "--steps-per-epoch", "5", "--seed", "7", "--precision",
                                "float32", "--no-augment", "--identical", "--val-fraction", "0.2", "--negatives", "3",
                                "--pair-limit", "50", "--devices", "2", "--test-fraction", "0.15"])
    built = RunConfig.build("d", "default", epochs=3, batch_size=32, learning_rate=0.01, steps_per_epoch=5, seed=7,
                            precision="float32", augment=False, identical=True, val_fraction=0.2, negatives=3,
                            pair_limit=50, devices=2, test_fraction=0.15)
    assert run_config(args) == built and built.pairs.test_fraction == 0.15
    assert built.pairs.seed == built.train.seed == 7 and built.pairs.negatives == 3 and not built.train.augment
    assert built.train.devices == 2
    # options left out keep the preset's defaults
    plain = run_config(parser().parse_args(["train", "--dataset", "d"]))
    assert plain == RunConfig.for_preset("d", "default")


@pytest.mark.slow
def test_cli_options_reach_the_saved_run(tiny_ws, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(tiny_ws, ws, ignore=shutil.ignore_patterns("train.lock"))
    assert cli("--workspace", ws, "train", "--dataset", "tiny", "--epochs", 1, "--steps-per-epoch", 1,
               "--batch-size", 8, "--negatives", 3, "--no-augment", "--run-id", "opts", "--verbose", 0) == 0
    cfg = json.loads((ws / "runs" / "opts" / "config.json").read_text())
    assert cfg["pairs"]["negatives"] == 3 and cfg["train"]["augment"] is False
