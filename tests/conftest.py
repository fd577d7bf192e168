"""Shared fixtures: a throw-away workspace with a tiny synthetic dataset and tiny trained runs; and the test tiers.

Everything is real (real Keras training on 32-48 px tiles for a few steps); only sizes are small. A test is
marked ``slow`` (in its file) when it trains beyond the session fixture ``tiny_ws``, starts Ray, a browser, a
Streamlit server or heavy subprocesses; every other test is marked ``fast`` here.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

AERIAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "aerial-sample"


def pytest_collection_modifyitems(config, items):
    """Tiers: a test not marked ``slow`` is ``fast`` (``./run.sh test fast`` runs ``-m "not slow"``)."""
    for item in items:
        if item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.fast)


def cli(*args) -> int:
    from siamese_core.cli import main
    return main([str(a) for a in args])


def dead_owner_tag() -> str:
    """The owner tag (siamese_core.core.procs.owner_tag) a process had that has exited since: what a killed writer
    leaves in the names of its temporary files. A real process (``true``), started and reaped here."""
    import subprocess
    from siamese_core.core.procs import owner_tag, process_start
    p = subprocess.Popen(["sleep", "5"])
    start = process_start(p.pid)
    p.kill()
    p.wait()
    machine = owner_tag().split("-")[0]  # "@<machine>"
    return f"{machine}-{p.pid}-{start}"


@pytest.fixture(scope="session")
def tiny_ws(tmp_path_factory) -> Path:
    """A workspace with dataset 'tiny' (24 synthetic tiles, 48 px) and finished runs 'seed1', 'def1'."""
    ws = tmp_path_factory.mktemp("ws")
    assert cli("--workspace", ws, "prepare", "--name", "tiny", "--limit", 24, "--size", 48) == 0
    for preset, rid in (("seed", "seed1"), ("default", "def1")):
        code = cli("--workspace", ws, "train", "--dataset", "tiny", "--preset", preset, "--epochs", 1,
                   "--steps-per-epoch", 3, "--batch-size", 16, "--run-id", rid, "--verbose", 0)
        assert code == 0
    return ws


@pytest.fixture
def tiny_copy(tiny_ws, tmp_path) -> Path:
    """A private copy of the tiny workspace, for a test that adds runs to it: ``tiny_ws`` is shared by the whole
    session (and copied by other modules), so it keeps exactly what its docstring lists, in any test order."""
    ws = tmp_path / "tiny"
    shutil.copytree(tiny_ws, ws, ignore=shutil.ignore_patterns("train.lock"))
    return ws


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Path:
    """An empty workspace, also set as $SIAMESE_WORKSPACE."""
    monkeypatch.setenv("SIAMESE_WORKSPACE", str(tmp_path / "ws"))
    return tmp_path / "ws"


@pytest.fixture(scope="module")
def app_base(tiny_ws, tmp_path_factory) -> Path:
    """A copy of the tiny workspace, made once per test module (never changed: tests get app_ws)."""
    base = tmp_path_factory.mktemp("appws") / "ws"
    shutil.copytree(tiny_ws, base, ignore=shutil.ignore_patterns("train.lock"))
    return base


@pytest.fixture
def app_ws(app_base, tmp_path, monkeypatch) -> Path:
    """A private copy of the tiny workspace, set as $SIAMESE_WORKSPACE, in the repository root (tests may change it)."""
    ws = tmp_path / "ws"
    shutil.copytree(app_base, ws)
    monkeypatch.setenv("SIAMESE_WORKSPACE", str(ws))
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    return ws
