"""The Train form launches only from its button: Enter in a number field must not start a job."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]


def _forms(node):
    for child in (node.children.values() if isinstance(getattr(node, "children", None), dict) else []):
        proto = getattr(child, "proto", None)
        if proto is not None and "form" in getattr(proto.DESCRIPTOR, "fields_by_name", {}) and proto.HasField("form"):
            yield proto.form
        yield from _forms(child)


def test_train_form_does_not_submit_on_enter(tiny_ws, tmp_path, monkeypatch):
    import shutil
    ws = tmp_path / "ws"
    shutil.copytree(tiny_ws, ws, ignore=shutil.ignore_patterns("train.lock"))
    monkeypatch.setenv("SIAMESE_WORKSPACE", str(ws))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120).run()
    at.switch_page("app_pages/train.py").run()
    forms = {f.form_id: f for f in _forms(at._tree)}
    assert "train_form" in forms
    assert forms["train_form"].enter_to_submit is False
