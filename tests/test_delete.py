"""Deleting datasets and runs: from the library, the command line and the dashboard; refused in one line while a
training job uses them and for the bundled run; a crash midway never leaves half of one listed.

A "live job" here is what the tool itself takes for one: a process (this test's) holding the workspace's
training lock for a run whose status says it is running, with that process's pid.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from apptools import ok, open_app, texts, widget  # noqa: E402
from conftest import cli, dead_owner_tag  # noqa: E402
from siamese_core.runs.delete import delete_run  # noqa: E402
from siamese_core.runs.liveness import process_start  # noqa: E402
from siamese_core.runs.lock import acquire_train_lock, no_launch  # noqa: E402
from siamese_core.runs.registry import list_runs, open_run, run_path  # noqa: E402
from siamese_core.runs.run import BUNDLED_DIR, PRETRAINED, Run  # noqa: E402
from siamese_core.core.errors import DatasetError, RunError  # noqa: E402
from siamese_core.runs.delete import delete_dataset
from siamese_core.data.store import list_datasets  # noqa: E402


@pytest.fixture
def ws(app_ws) -> Path:
    """A private copy of the tiny workspace (dataset 'tiny', finished runs 'seed1' and 'def1'), plus dataset
    'other' (a copy of 'tiny' under another name)."""
    shutil.copytree(app_ws / "datasets" / "tiny", app_ws / "datasets" / "other")
    return app_ws


@contextmanager
def live_job(ws: Path, run_id: str):
    """Hold the training lock for ``run_id`` and mark it running with this process, as a training job does."""
    fd = acquire_train_lock(run_id, ws)
    run = open_run(run_id, ws)
    run.write_status("running", reset=True, pid=os.getpid(), pid_start=process_start(os.getpid()))
    try:
        yield run
    finally:
        os.close(fd)
        run.write_status("stopped", reset=True)


def _listed(ws) -> list[str]:
    return [r for r in list_runs(ws) if r != PRETRAINED]


# --- the library -----------------------------------------------------------------------------------------

def test_delete_run_removes_it_and_leaves_no_trash(ws):
    path = run_path("seed1", ws)
    delete_run("seed1", ws)
    assert _listed(ws) == ["def1"] and not path.exists()
    assert not [p for p in (ws / "runs").iterdir() if p.name.startswith(".")]
    with pytest.raises(RunError, match="run 'seed1' not found"):
        delete_run("seed1", ws)


def test_a_crash_after_the_rename_lists_nothing_and_is_swept_next_time(ws, monkeypatch):
    import siamese_core.runs.delete as delete_module
    from siamese_core.core.procs import OWNER, owner_tag
    monkeypatch.setattr(delete_module, "remove", lambda *a, **k: None)  # the process dies before removing it
    delete_run("seed1", ws)
    monkeypatch.undo()
    trash = [p for p in (ws / "runs").iterdir() if p.name.startswith(".trash-seed1@")]
    assert len(trash) == 1 and Run(trash[0]).exists()  # a complete run, under a hidden name
    assert owner_tag() in trash[0].name  # its writer is named: this process, alive, so the trash stays for now
    assert _listed(ws) == ["def1"]
    delete_run("def1", ws)
    assert [p.name for p in (ws / "runs").iterdir()] == [trash[0].name]
    # the writer died (as a killed process does): the next deletion, or the next start, sweeps its trash
    dead = trash[0].with_name(OWNER.sub(dead_owner_tag(), trash[0].name))
    trash[0].rename(dead)
    cli("--workspace", ws, "list")
    assert not any((ws / "runs").iterdir())


def test_the_bundled_run_cannot_be_deleted(ws):
    if not Run(BUNDLED_DIR).exists():
        pytest.skip("no bundled run in this checkout")
    with pytest.raises(RunError, match="bundled run 'pretrained' is part of the package"):
        delete_run(PRETRAINED, ws)
    assert Run(BUNDLED_DIR).has_model()


def test_a_live_run_and_its_dataset_are_refused_others_are_not(ws):
    with live_job(ws, "def1"):
        with pytest.raises(RunError, match=r"run 'def1' is running; stop it first \(python -m siamese_core stop"):
            delete_run("def1", ws)
        with pytest.raises(DatasetError, match="dataset 'tiny' is used by the running job 'def1'; stop it first"):
            delete_dataset("tiny", ws)
        delete_run("seed1", ws)  # another run: the job keeps any launch from starting meanwhile
        delete_dataset("other", ws)  # another dataset
    assert _listed(ws) == ["def1"] and list_datasets(ws) == ["tiny"]
    delete_dataset("tiny", ws)  # the job ended
    assert list_datasets(ws) == [] and _listed(ws) == ["def1"]  # its runs keep their models
    assert open_run("def1", ws).has_model()


def test_a_live_status_without_the_lock_is_refused_too(ws):
    """A run whose status names a live process (e.g. a job just launched) is refused even when no lock is seen."""
    run = open_run("def1", ws)
    run.write_status("running", reset=True, pid=os.getpid(), pid_start=process_start(os.getpid()))
    with pytest.raises(RunError, match="run 'def1' is running"):
        delete_run("def1", ws)
    with pytest.raises(DatasetError, match="used by the running job 'def1'"):
        delete_dataset("tiny", ws)


def test_no_job_can_start_while_a_deletion_holds_the_lock(ws):
    with no_launch(ws) as job:
        assert job is None
        with pytest.raises(RunError, match="already running"):
            acquire_train_lock("x", ws)
    os.close(acquire_train_lock("x", ws))  # free again afterwards


# --- the command line ----------------------------------------------------------------------------------

def test_cli_delete_asks_for_confirmation(ws, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal: only --yes deletes
    assert cli("--workspace", ws, "delete", "--run", "seed1") == 2
    err = capsys.readouterr().err
    assert err == "error: delete run 'seed1': nothing deleted; pass --yes to confirm (this cannot be undone)\n"
    assert "seed1" in _listed(ws)

    class Tty(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(sys, "stdin", Tty("n\n"))
    assert cli("--workspace", ws, "delete", "--run", "seed1") == 1
    assert "seed1" in _listed(ws) and "kept" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", Tty("y\n"))
    assert cli("--workspace", ws, "delete", "--run", "seed1") == 0
    assert capsys.readouterr().out == "deleted run 'seed1'\n" and _listed(ws) == ["def1"]


def test_cli_delete_with_yes_and_its_refusals(ws, capsys):
    assert cli("--workspace", ws, "delete", "--dataset", "other", "--yes") == 0
    assert list_datasets(ws) == ["tiny"]
    assert cli("--workspace", ws, "delete", "--dataset", "nope", "--yes") == 2
    assert "dataset 'nope' not found" in capsys.readouterr().err
    with live_job(ws, "def1"):
        capsys.readouterr()
        assert cli("--workspace", ws, "delete", "--run", "def1", "--yes") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "run 'def1' is running; stop it first" in err
        assert cli("--workspace", ws, "delete", "--dataset", "tiny", "--yes") == 2
        assert "used by the running job 'def1'" in capsys.readouterr().err
    assert open_run("def1", ws).has_model() and list_datasets(ws) == ["tiny"]
    if Run(BUNDLED_DIR).exists():
        assert cli("--workspace", ws, "delete", "--run", PRETRAINED, "--yes") == 2
        assert "cannot be deleted" in capsys.readouterr().err


# --- the dashboard ---------------------------------------------------------------------------------------

def _delete(at, key: str, name: str):
    widget(at, "selectbox", f"{key}_pick").set_value(name)
    widget(at, "button", f"{key}_delete").click().run()
    ok(at)
    assert any(name in w.value and "cannot be undone" in w.value for w in at.warning), [w.value for w in at.warning]
    widget(at, "button", f"{key}_confirm").click().run()
    ok(at)
    return at


def test_home_deletes_a_dataset_after_confirmation(ws):
    at = open_app("home")
    widget(at, "selectbox", "home_del_pick").set_value("other")
    widget(at, "button", "home_del_delete").click().run()
    widget(at, "button", "home_del_cancel").click().run()  # cancelled: nothing happens
    ok(at)
    assert sorted(list_datasets(ws)) == ["other", "tiny"]
    _delete(at, "home_del", "other")
    assert list_datasets(ws) == ["tiny"]
    assert "Deleted dataset other" in texts(at).replace("**", "")
    assert widget(at, "selectbox", "home_del_pick").options == ["tiny"]


@pytest.mark.slow
def test_train_page_deletes_a_run_and_refuses_the_live_one(ws):
    at = open_app("train")
    _delete(at, "train_del", "seed1")
    assert _listed(ws) == ["def1"]
    assert "Deleted run seed1" in texts(at).replace("**", "")
    with live_job(ws, "def1"):
        at = open_app("train")
        _delete(at, "train_del", "def1")
        errors = [e.value for e in at.error]
        assert any("run 'def1' is running; stop it first" in e for e in errors), errors
        assert _listed(ws) == ["def1"]
        at = open_app("home")
        _delete(at, "home_del", "tiny")
        errors = [e.value for e in at.error]
        assert any("dataset 'tiny' is used by the running job 'def1'" in e for e in errors), errors
        assert "tiny" in list_datasets(ws)
