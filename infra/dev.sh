#!/usr/bin/env bash
# soundstage's developer entry point (the README's two commands go through here).
#   bash infra/dev.sh quickstart   set up .venv, start the local stack, run a first music job, keep serving
#   bash infra/dev.sh test         set up .venv with dev tools and the system packages the tests drive
#                                  (Chromium for the studio's browser tests, espeak-ng for non-English
#                                  speech), run the whole test suite
#   bash infra/dev.sh lint         ruff (lint + format check), mypy and lint-imports (architecture)
#   bash infra/dev.sh setup        only create/update .venv
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SOUNDSTAGE_VENV:-.venv}"
PY="$VENV/bin/python"

setup() {
  [ -x "$PY" ] || python3 -m venv "$VENV"
  # The CPU build of torch first, pinned: anything that wants torch is then satisfied and nothing
  # pulls the multi-GB CUDA wheels from the index.
  "$PY" -m pip install --quiet --disable-pip-version-check torch==2.13.0
  "$PY" -m pip install --quiet --disable-pip-version-check -e ".[dev]"
}

# Debian packages the suite needs: a real browser for the studio page and an offline speech synthesiser
# in many languages for the multilingual transcription tests.
SYSTEM_PACKAGES=(chromium chromium-driver espeak-ng)

setup_system() {
  local missing=()
  for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
  if ! command -v apt-get >/dev/null; then
    echo "the tests need these system packages (Debian names): ${missing[*]}; install them and re-run" >&2
    return 1
  fi
  echo "installing system packages for the tests: ${missing[*]}"
  "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

lint() {
  "$VENV/bin/ruff" check .
  "$VENV/bin/ruff" format --check .
  "$VENV/bin/mypy"
  "$VENV/bin/lint-imports"
}

run_pytest() {
  local rc=0
  "$PY" -m pytest "$@" || rc=$?
  if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    return 1
  fi
  return "$rc"
}

run_tests() {
  if [ "$#" -gt 0 ]; then
    run_pytest "$@"
    return
  fi
  # The whole suite: the tests that restart the Ray cluster itself run after it, in a process of their
  # own (the session's shared cluster cannot be re-initialised inside one pytest process).
  run_pytest
  run_pytest -m own_cluster
}

command="${1:-help}"
shift || true
case "$command" in
  setup) setup ;;
  quickstart) setup; exec "$VENV/bin/soundstage" serve --first-job "$@" ;;
  test) setup; setup_system; run_tests "$@" ;;
  lint) setup; lint ;;
  *) sed -n '2,8p' "$0"; exit 2 ;;
esac
