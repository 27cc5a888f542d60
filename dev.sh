#!/usr/bin/env bash
# One entry point for a fresh clone: creates .venv in the repository root when missing, installs the pinned
# dependencies the command needs when they changed, then runs what was asked.
#   ./dev.sh apply --env local     -> python run.py apply --env local (against the embedded AWS)
#   ./dev.sh test [pytest args]    -> the whole test suite
#   ./dev.sh <any run.py command>  -> python run.py <command>
# Against a real account only the runtime set (requirements.txt) is installed; `test`, `--env local` and
# `local ...` also install the embedded AWS and the test tools (requirements-dev.txt).
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1; then python=$candidate; break; fi
  done
fi
[ -n "$python" ] || { echo "dev.sh: Python 3.11 or newer is needed and none was found on PATH" >&2; exit 1; }
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "dev.sh: $python is older than 3.11; set PYTHON=/path/to/python3.11" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "dev.sh: creating .venv" >&2
  "$python" -m venv .venv
fi
needs_dev=false
case "${1:-}" in test|local) needs_dev=true ;; esac
previous=""
for arg in "$@"; do
  if [ "$arg" = "--env=local" ] || { [ "$previous" = "--env" ] && [ "$arg" = "local" ]; }; then needs_dev=true; fi
  previous=$arg
done
# One stamp per set: the runtime set is part of the dev set, so installing the dev set satisfies both.
install() {
  local stamp=.venv/.dmp-deploy-installed-$1 want
  want=$(cat requirements.txt requirements-dev.txt constraints.txt | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] && [ "$(cat .venv/.dmp-deploy-installed-dev 2>/dev/null)" != "$want" ]; then
    echo "dev.sh: installing pinned dependencies ($2) into .venv" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$2" -c constraints.txt
    echo "$want" > "$stamp"
  fi
}
if $needs_dev; then install dev requirements-dev.txt; else install runtime requirements.txt; fi

if [ "${1:-}" = "test" ]; then
  shift
  if [ $# -gt 0 ]; then exec .venv/bin/python -m pytest "$@"; fi
  # The whole suite as three pytest processes at once: the crash sweep's two halves (a crash before the call,
  # and after it) and everything else. Each runs its own embedded AWS and none keeps two cores busy alone, so on
  # two cores this takes about half the suite's CPU time instead of the sum of three runs. The sweep's output is
  # shown once it has finished.
  before_log=$(mktemp) after_log=$(mktemp)
  .venv/bin/python -m pytest -m crash -k before-the-call >"$before_log" 2>&1 &
  before=$!
  .venv/bin/python -m pytest -m crash -k after-the-call >"$after_log" 2>&1 &
  after=$!
  rest_rc=0 before_rc=0 after_rc=0
  .venv/bin/python -m pytest -m "not crash" || rest_rc=$?
  wait "$before" || before_rc=$?
  wait "$after" || after_rc=$?
  for half in before after; do
    log=${half}_log
    echo
    echo "dev.sh: the crash sweep, crashes $half the call (pytest -m crash -k $half-the-call), run beside the rest:"
    cat "${!log}"
    rm -f "${!log}"
  done
  if [ "$rest_rc" -ne 0 ] || [ "$before_rc" -ne 0 ] || [ "$after_rc" -ne 0 ]; then
    echo "dev.sh: tests failed (exit codes: not crash $rest_rc, crash before $before_rc, crash after $after_rc)" >&2
    exit 1
  fi
  exit 0
fi
exec .venv/bin/python run.py "$@"
