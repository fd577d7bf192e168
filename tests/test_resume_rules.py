"""Resuming keeps what the user chose, refuses what cannot continue, and a dataset without same-place
pairs is refused before training on nothing."""

from __future__ import annotations

import json
import shutil

import pytest

from siamese_core.core.config import RunConfig
from siamese_core.runs.registry import create_run, run_path
from siamese_core.runs.run import Run

from conftest import cli

pytestmark = pytest.mark.slow  # trains and resumes runs of its own


@pytest.fixture
def ws(tiny_ws, tmp_path):
    w = tmp_path / "ws"
    shutil.copytree(tiny_ws, w, ignore=shutil.ignore_patterns("train.lock"))
    return w


def test_cli_resume_without_a_checkpoint_is_refused(ws, capsys):
    run = create_run(RunConfig.for_preset("tiny", "default", epochs=1), ws, "nockpt")
    run.write_status("stopped", reset=True)
    assert cli("--workspace", ws, "train", "--resume", "nockpt") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no checkpoint yet" in err
    assert not run.has_model()  # nothing was trained from scratch


def test_resume_keeps_the_threshold_the_user_saved(ws):
    assert cli("--workspace", ws, "train", "--dataset", "tiny", "--epochs", 1, "--steps-per-epoch", 2,
               "--batch-size", 16, "--run-id", "k", "--verbose", 0) == 0
    d = run_path("k", ws)
    cfg = json.loads((d / "config.json").read_text())
    cfg["train"]["epochs"] = 2  # as if it had been stopped after its first of two epochs
    (d / "config.json").write_text(json.dumps(cfg))
    Run(d).write_status("stopped", reset=True)
    Run(d).save_threshold(0.123, "user")
    assert cli("--workspace", ws, "train", "--resume", "k", "--verbose", 0) == 0
    info = Run(d).threshold_info()
    assert info["threshold"] == 0.123 and info["source"] == "user"
    assert json.loads((d / "status.json").read_text())["status"] == "finished"


def test_default_preset_refuses_a_dataset_without_same_place_pairs(ws, capsys):
    assert cli("--workspace", ws, "prepare", "--name", "single", "--limit", 12, "--size", 32, "--variants", 0) == 0
    capsys.readouterr()
    assert cli("--workspace", ws, "train", "--dataset", "single", "--epochs", 1, "--steps-per-epoch", 2,
               "--run-id", "empty", "--verbose", 0) == 2
    err = capsys.readouterr().err
    assert "no same-place training pairs" in err and "--variants 2" in err
