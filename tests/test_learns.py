"""A model must learn: a tiny default model trained for a few dozen steps clearly beats the same model
left untrained, on its test places: never used for training or for its threshold (evaluation.json)."""

from __future__ import annotations

import json

import pytest

from conftest import cli

pytestmark = pytest.mark.slow  # trains a model long enough to learn


def _auc(ws, rid) -> float:
    ev = json.loads((ws / "runs" / rid / "evaluation.json").read_text())
    assert ev["pairs"]["split"] == "test" and ev["pairs"]["places"] == 4  # 10% of 40 places
    return ev["without_identical"]["roc_auc"]


def test_a_tiny_model_beats_chance_and_its_untrained_self(tmp_path):
    ws = tmp_path / "ws"
    assert cli("--workspace", ws, "prepare", "--name", "t", "--limit", 40, "--size", 48) == 0
    common = ("--workspace", ws, "train", "--dataset", "t", "--batch-size", 16, "--val-fraction", 0.25,
              "--seed", 0, "--verbose", 0)
    assert cli(*common, "--epochs", 2, "--steps-per-epoch", 20, "--run-id", "trained") == 0
    assert cli(*common, "--epochs", 1, "--steps-per-epoch", 1, "--learning-rate", 1e-9, "--run-id", "untrained") == 0
    trained, untrained = _auc(ws, "trained"), _auc(ws, "untrained")
    assert trained > 0.8, trained
    assert trained > untrained + 0.15, (trained, untrained)
