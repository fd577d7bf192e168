"""Helpers shared by the AppTest files: open the app on a page, find a widget by key, read its text."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "streamlit_app.py")
TIMEOUT = 120


def open_app(page: str | None = None, query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if query:
        at.query_params.update(query)
    at.run()
    ok(at)
    if page and page != "home":
        at.switch_page(f"app_pages/{page}.py").run()
        ok(at)
    return at


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def widget(at: AppTest, kind: str, key: str):
    items = [w for w in getattr(at, kind) if w.key == key]
    assert items, f"no {kind} with key {key!r}; have {[w.key for w in getattr(at, kind)]}"
    return items[0]


def texts(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "success", "warning", "error", "title", "subheader", "header"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def counts_line(at: AppTest) -> str:
    lines = [m.value for m in at.markdown if "thr-counts" in m.value]
    assert lines, "the confusion counts line is missing"
    return lines[0]
