#!/usr/bin/env bash
# Set up and run the culler benchmarks: bash benchmarks/run.sh [--quick] [run.py options]
# - benchmarks/.work/venv-original: the original culler, jupyterhub-idle-culler==2.0.0 from PyPI
# - matplotlib into the current interpreter if it is missing (for results.png)
# trio-culler runs from the current interpreter and this work tree (`pip install -e .` installs its dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
WORK=benchmarks/.work
VENV="$WORK/venv-original"
mkdir -p "$WORK"
if ! "$VENV/bin/python" -c 'import jupyterhub_idle_culler' 2>/dev/null; then
    echo "setting up $VENV (jupyterhub-idle-culler==2.0.0)" >&2
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check 'jupyterhub-idle-culler==2.0.0'
fi
if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
    echo "installing matplotlib into $("$PY" -c 'import sys; print(sys.prefix)')" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check matplotlib
fi
if ! "$PY" -c 'import trio, httpx, attrs, cattrs' 2>/dev/null; then
    echo "trio-culler's dependencies are missing: run 'pip install -e .' first (the original runs anyway)" >&2
fi
exec "$PY" benchmarks/run.py "$@"
