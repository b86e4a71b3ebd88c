#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine, then runs lint, type checks and every test.
#
#   bash scripts/test.sh            # the whole suite, as CI runs it
#   bash scripts/test.sh -k engine  # extra arguments go to pytest
#
# It creates .venv (Python >= 3.11) with the project and its test extras (JupyterHub and jupyter_server from
# PyPI among them), installs configurable-http-proxy from npm and Debian's chromium when they are missing,
# and runs ruff, mypy and pytest. Safe to run again: every step is idempotent.
#
# The whole suite (no arguments, or FLOORS=1) then proves the dependency floors: .venv-floors gets every runtime
# dependency at the lowest version pyproject.toml allows (scripts/floor_constraints.py) and runs the unit tests
# once more there: not the integration tests (a real JupyterHub brings its own, newer, versions of some of these)
# nor the slow ones: about 3 minutes on a busy two-core machine, where the whole suite takes 8. FLOORS=0 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
echo "==> installing trio-culler with its test dependencies into $VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[test]"

bash scripts/install-integration-deps.sh

# The status page's browser tests drive Debian's Chromium through Playwright (never `playwright install`, which
# downloads a browser build of its own).
if ! command -v chromium >/dev/null 2>&1; then
  echo "==> installing Debian's chromium for the browser tests"
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
  fi
fi

export PATH="$PWD/$VENV/bin:$PATH"
export HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}

echo "==> ruff"
ruff check .
ruff format --check .
echo "==> mypy --strict"
mypy
echo "==> pytest"
set +e
python -m pytest -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
if [ "$status" -ne 0 ]; then
  exit "$status"
fi

if [ "${FLOORS:-$([ "$#" -eq 0 ] && echo 1 || echo 0)}" = 1 ]; then
  FLOOR_VENV=${FLOOR_VENV:-.venv-floors}
  echo "==> unit tests with every runtime dependency at its floor, in $FLOOR_VENV"
  if [ ! -x "$FLOOR_VENV/bin/python" ]; then
    "$PYTHON" -m venv "$FLOOR_VENV"
  fi
  python scripts/floor_constraints.py > "$FLOOR_VENV/floors.txt"
  cat "$FLOOR_VENV/floors.txt"
  # The constraints pin the project's own dependencies; the test tools are whatever pip finds beside them.
  "$FLOOR_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$FLOOR_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c "$FLOOR_VENV/floors.txt" \
    -e . pytest pytest-trio hypothesis trustme pyyaml
  "$FLOOR_VENV/bin/python" -m pip check
  "$FLOOR_VENV/bin/python" -m pytest -p no:cacheprovider -q -m "not slow and not integration" \
    --ignore=tests/integration tests
fi
