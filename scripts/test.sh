#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine, then runs lint, type checks and every test.
#
#   bash scripts/test.sh            # the whole suite, as CI runs it
#   bash scripts/test.sh -k engine  # extra arguments go to pytest
#
# It creates .venv (Python >= 3.11) with the project and its test extras (JupyterHub and jupyter_server from
# PyPI among them), installs configurable-http-proxy from npm, Debian's chromium, podman and mmdebstrap, and promtool
# from Debian's prometheus package, when they are missing, and runs ruff, mypy and pytest. Safe to run again: every
# step is idempotent.
#
# The whole suite (no arguments, or FLOORS=1) also proves the dependency floors: .venv-floors gets every runtime
# dependency at the lowest version pyproject.toml allows (scripts/floor_constraints.py) and runs the unit tests
# once more there: not the integration tests (a real JupyterHub brings its own, newer, versions of some of these)
# nor the slow ones. FLOORS=0 skips it.
#
# With no arguments the tests run as four pytest processes side by side: the integration tests (tests/integration)
# in two, which spend most of their time waiting for real hubs, servers and kernels (well under half a core
# each), the unit tests and the floors run, which are CPU-bound. The integration tests that wait longest (the
# three-minute soak, the container image build, the warnings' and the notice's end-to-end runs, the 500-server
# pass: $LONG_INTEGRATION)
# run in one stream, the others in the other, so neither waits for the other's longest. Each test still runs
# exactly once per run (the unit tests once more at the floors); the side runs' output is printed when all are
# done. SERIAL=1 runs one pytest over everything, then the floors, one after the other.
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

# The container image test (tests/integration/test_container.py) builds the Dockerfile with Debian's podman (chroot
# isolation: no container is ever started) on a base image that mmdebstrap makes from Debian's packages; without
# both it is skipped. Recommends left out: the test needs neither a container runtime's extras nor fakechroot.
if ! command -v podman >/dev/null 2>&1 || ! command -v mmdebstrap >/dev/null 2>&1; then
  echo "==> installing Debian's podman and mmdebstrap for the container image test"
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman mmdebstrap
  else
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman mmdebstrap
  fi
fi

# The single-user extension (trio-culler-notice/, a package of its own): built from source with Node and the npm
# registry, installed into $VENV (the integration tests' single-user servers load it), then its own mypy and
# tests, browser included. They run for the whole suite; NOTICE=0 skips them, NOTICE=1 runs them with pytest
# arguments too. A re-run skips the build when the package did not change. See scripts/notice-extension.sh.
TESTS=${NOTICE:-$([ "$#" -eq 0 ] && echo 1 || echo 0)} bash scripts/notice-extension.sh "$VENV"

# The alert rules' tests (tests/test_alerts.py) check docs/alerts.yml with promtool, from Debian's prometheus
# package. Only the command is taken, into the venv: installing the package would also start a Prometheus server.
if ! command -v promtool >/dev/null 2>&1 && [ ! -x "$VENV/bin/promtool" ]; then
  echo "==> taking promtool from Debian's prometheus package into $VENV/bin (the alert rules' tests)"
  promtool_dir=$(mktemp -d)
  if ! (cd "$promtool_dir" && apt-get download -qq prometheus 2>/dev/null); then
    if [ "$(id -u)" -eq 0 ]; then apt-get update -qq; else sudo apt-get update -qq; fi
    (cd "$promtool_dir" && apt-get download -qq prometheus)
  fi
  dpkg-deb -x "$promtool_dir"/prometheus_*.deb "$promtool_dir/root"
  install -m 0755 "$promtool_dir/root/usr/bin/promtool" "$VENV/bin/promtool"
  rm -rf "$promtool_dir"
fi

export PATH="$PWD/$VENV/bin:$PATH"
export HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}

echo "==> ruff"
ruff check .
ruff format --check .
echo "==> mypy --strict"
mypy
echo "==> pytest"

# The floors run: every unit test once more, in .venv-floors with the runtime dependencies at their floors.
floors() {
  local floor_venv=${FLOOR_VENV:-.venv-floors}
  echo "==> unit tests with every runtime dependency at its floor, in $floor_venv"
  if [ ! -x "$floor_venv/bin/python" ]; then
    "$PYTHON" -m venv "$floor_venv"
  fi
  python scripts/floor_constraints.py > "$floor_venv/floors.txt"
  cat "$floor_venv/floors.txt"
  # The constraints pin the project's own dependencies; the test tools are whatever pip finds beside them.
  "$floor_venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$floor_venv/bin/python" -m pip install --quiet --disable-pip-version-check -c "$floor_venv/floors.txt" \
    -e . pytest pytest-trio hypothesis trustme pyyaml
  "$floor_venv/bin/python" -m pip check
  run_pytest "$floor_venv/bin/python" -q -m "not slow and not integration" --ignore=tests/integration tests
}

# One pytest run; exit status 5 (nothing collected) counts as a failure.
run_pytest() {
  local python=$1 status=0
  shift
  local started=$SECONDS
  "$python" -m pytest -p no:cacheprovider "$@" || status=$?
  echo "==> pytest $* took $((SECONDS - started)) s"
  if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    return 1
  fi
  return "$status"
}

run_floors=${FLOORS:-$([ "$#" -eq 0 ] && echo 1 || echo 0)}
LONG_INTEGRATION="tests/integration/test_soak_hub.py tests/integration/test_container.py
  tests/integration/test_warnings.py tests/integration/test_notice_browser.py tests/integration/test_bulk.py"

if [ "$#" -gt 0 ] || [ "${SERIAL:-0}" = 1 ]; then
  run_pytest python "$@"
  if [ "$run_floors" = 1 ]; then
    floors
  fi
  exit 0
fi

# The whole suite: the long integration tests, the unit tests and the floors run, each in a session of its own (so
# that an interrupted run can end all of it), beside the other integration tests in the foreground.
long_ignores=()
for file in $LONG_INTEGRATION; do
  long_ignores+=("--ignore=$file")
done
long_log=$(mktemp "${TMPDIR:-/tmp}/trio-culler-long.XXXXXX")
unit_log=$(mktemp "${TMPDIR:-/tmp}/trio-culler-unit.XXXXXX")
floors_log=$(mktemp "${TMPDIR:-/tmp}/trio-culler-floors.XXXXXX")
export -f run_pytest floors
export PYTHON LONG_INTEGRATION
# shellcheck disable=SC2016  # expanded by the inner bash
setsid bash -c 'set -euo pipefail; run_pytest python --durations=10 $LONG_INTEGRATION' > "$long_log" 2>&1 < /dev/null &
long_job=$!
setsid bash -c 'set -euo pipefail; run_pytest python --ignore=tests/integration tests' > "$unit_log" 2>&1 < /dev/null &
unit=$!
floors_job=
if [ "$run_floors" = 1 ]; then
  setsid bash -c 'set -euo pipefail; floors' > "$floors_log" 2>&1 < /dev/null &
  floors_job=$!
fi
trap 'for job in $long_job $unit $floors_job; do kill -- -"$job" 2>/dev/null || true; done' EXIT
integration_status=0
run_pytest python --durations=10 "${long_ignores[@]}" tests/integration || integration_status=$?
long_status=0
wait "$long_job" || long_status=$?
unit_status=0
wait "$unit" || unit_status=$?
floors_status=0
if [ -n "$floors_job" ]; then
  wait "$floors_job" || floors_status=$?
fi
trap - EXIT
echo "==> the long integration tests, run beside the others:"
cat "$long_log"
echo "==> the unit tests, run beside the integration tests:"
cat "$unit_log"
if [ -n "$floors_job" ]; then
  echo "==> the floors run, beside them too:"
  cat "$floors_log"
fi
rm -f "$long_log" "$unit_log" "$floors_log"
if [ "$integration_status" -ne 0 ] || [ "$long_status" -ne 0 ] || [ "$unit_status" -ne 0 ] ||
  [ "$floors_status" -ne 0 ]; then
  echo "==> failed: integration tests exited $integration_status and $long_status, unit tests $unit_status," \
    "floors run $floors_status" >&2
  exit 1
fi
