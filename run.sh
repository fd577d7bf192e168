#!/usr/bin/env bash
# One entry point for a fresh machine:
#   ./run.sh app    set up (virtual environment + requirements) and open the dashboard
#   ./run.sh test   set up (plus the test tools from requirements-dev.txt, Ray from requirements-scale.txt and
#                   Chromium for the browser test), check the import layers (lint-imports), run the whole test suite
#   ./run.sh test fast   the same without the tests marked slow (and without Ray and Chromium): about 2 minutes
#   ./run.sh setup  only set up
# VENV=path chooses the virtual environment (default .venv); FRESH_VENV=1 recreates it (as CI does). A requirements
# file is installed again only when it changed (a stamp in the environment remembers what was installed).
set -euo pipefail
cd "$(dirname "$0")"
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"

install() {  # pip install -r FILE, unless this very FILE (same content) was installed into $VENV before
  local stamp="$VENV/.installed-$1-$(sha1sum < "$1" | cut -c1-16)"
  if [ -e "$stamp" ]; then return; fi
  echo "==> installing $1"
  "$VENV/bin/python" -m pip install -q -r "$1"
  touch "$stamp"
}

setup() {
  if [ "${FRESH_VENV:-0}" = 1 ]; then rm -rf "$VENV"; fi
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtual environment $VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
  fi
  install requirements.txt
  # the package itself, editable: `python -m siamese_core` and `siamese-tiles` then work from any folder
  local stamp="$VENV/.installed-package-$(sha1sum < pyproject.toml | cut -c1-16)"
  if [ ! -e "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --no-deps -e . && touch "$stamp"
  fi
}

dev() {  # the test tools: pytest, hypothesis, playwright, import-linter
  install requirements-dev.txt
}

scale() {  # the optional Ray extra (embed, score --engine ray): the tests run it, the dashboard does not need it
  install requirements-scale.txt
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
    shift || true
    tier=()
    setup
    dev
    if [ "${1:-}" = fast ]; then  # everyday work: every test not marked slow (no Ray, no browser, no big training)
      shift
      tier=(-m "not slow")
    else  # the whole suite, as CI runs it
      scale
      browser
    fi
    echo "==> lint-imports (the layers of siamese_core, pyproject.toml [tool.importlinter])"
    "$VENV/bin/lint-imports" --no-cache
    echo "==> mkdocs build --strict (the docs; a broken link fails)"
    NO_MKDOCS_2_WARNING=1 "$VENV/bin/mkdocs" build --strict
    # two worker processes (TEST_WORKERS, 0 = one process); a test file stays on one worker, with its fixtures
    exec "$VENV/bin/python" -m pytest -q --durations=20 -n "${TEST_WORKERS:-2}" --dist loadfile \
      ${tier[@]+"${tier[@]}"} "$@" ;;
  *) echo "usage: ./run.sh [app|test [fast]|setup]" >&2; exit 2 ;;
esac
