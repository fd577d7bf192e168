#!/usr/bin/env bash
# One entry point for a fresh machine:
#   ./run.sh app    set up (virtual environment + requirements) and open the dashboard
#   ./run.sh test   set up (plus the test tools from requirements-dev.txt, Ray from requirements-scale.txt and
#                   Chromium for the browser test), check the import layers (lint-imports), run the whole test suite
#   ./run.sh setup  only set up
# VENV=path chooses the virtual environment (default .venv); FRESH_VENV=1 recreates it.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"

setup() {
  if [ "${FRESH_VENV:-0}" = 1 ]; then rm -rf "$VENV"; fi
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtual environment $VENV"
    "$PY" -m venv "$VENV"
  fi
  echo "==> installing requirements.txt"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r requirements.txt
  # the package itself, editable: `python -m siamese_core` and `siamese-tiles` then work from any folder
  "$VENV/bin/python" -m pip install -q --no-deps -e .
}

dev() {  # the test tools: pytest, hypothesis, playwright, import-linter
  echo "==> installing requirements-dev.txt"
  "$VENV/bin/python" -m pip install -q -r requirements-dev.txt
}

scale() {  # the optional Ray extra (embed, score --engine ray): the tests run it, the dashboard does not need it
  echo "==> installing requirements-scale.txt"
  "$VENV/bin/python" -m pip install -q -r requirements-scale.txt
}

browser() {  # Debian's Chromium for the end-to-end browser test (Playwright drives it; nothing is downloaded)
  if [ -x /usr/bin/chromium ]; then return; fi
  echo "==> installing Chromium (apt-get)"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null \
    || echo "warning: could not install Chromium; the browser test will be skipped" >&2
}

case "${1:-app}" in
  setup) setup ;;
  app)
    setup
    shift || true
    exec "$VENV/bin/python" -m streamlit run streamlit_app.py "$@" ;;
  test)
    setup
    dev
    scale
    browser
    shift || true
    echo "==> lint-imports (the layers of siamese_core, pyproject.toml [tool.importlinter])"
    "$VENV/bin/lint-imports" --no-cache
    exec "$VENV/bin/python" -m pytest -q --durations=20 "$@" ;;
  *) echo "usage: ./run.sh [app|test|setup]" >&2; exit 2 ;;
esac
