#!/usr/bin/env bash
# The single-user extension (trio-culler-notice/, a package of its own): build it from source, install it into
# the test venv, and run its own checks. scripts/test.sh calls this; it also runs alone:
#
#   bash scripts/notice-extension.sh [VENV]        # build + install, then mypy and its tests
#   TESTS=0 bash scripts/notice-extension.sh       # build + install only
#
# `pip install ./trio-culler-notice` compiles the TypeScript and bundles it with JupyterLab's own builder
# (jupyter-builder, jlpm): Node comes from the machine, the npm packages from registry.npmjs.org exactly as
# trio-culler-notice/yarn.lock pins them. The wheel it installs needs no Node. It also brings JupyterLab and
# Notebook 7 into the venv, where the integration tests' single-user servers load the extension.
#
# A re-run skips the build and install when no file of trio-culler-notice/ (tracked or new, build output aside)
# changed since the last install into this venv: the stamp is a digest of them all. FORCE=1 builds anyway.
#
# Its tests: the notice API's handlers on a real jupyter_server (pytest-jupyter), the page's wording under
# `node --test`, `jupyter labextension list` / `jupyter server extension list`, and Debian's chromium against a
# real `jupyter lab` on 127.0.0.1 (screenshots under pytest's tmp path; the test prints where).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=$(cd "${1:-${VENV:-.venv}}" && pwd)
PACKAGE=trio-culler-notice
STAMP="$VENV/.$PACKAGE.sha256"

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "notice-extension: '$tool' is not on PATH; the extension's build needs Node.js >= 20 with npm" >&2
    exit 1
  fi
done

# The digest of the package's sources, or nothing outside a git checkout (then it is always built).
sources_digest() {
  git ls-files -z --cached --others --exclude-standard -- "$PACKAGE" 2>/dev/null |
    sort -z | xargs -0 --no-run-if-empty sha256sum | sha256sum | cut -d' ' -f1
}

digest=$(sources_digest || true)
if [ "${FORCE:-0}" != 1 ] && [ -n "$digest" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$digest" ] &&
  "$VENV/bin/python" -c "import trio_culler_notice" 2>/dev/null; then
  echo "==> $PACKAGE: unchanged since its last install into $VENV, not rebuilt"
else
  echo "==> $PACKAGE: building from source (node $(node --version)) and installing into $VENV"
  started=$SECONDS
  rm -f "$STAMP"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "./$PACKAGE[test]"
  [ -n "$digest" ] && echo "$digest" > "$STAMP"
  echo "==> $PACKAGE: built and installed in $((SECONDS - started)) s"
fi

if [ "${TESTS:-1}" = 1 ]; then
  started=$SECONDS
  echo "==> $PACKAGE: mypy --strict"
  (cd "$PACKAGE" && "$VENV/bin/mypy")
  echo "==> $PACKAGE: its tests"
  status=0
  (cd "$PACKAGE" && PATH="$VENV/bin:$PATH" "$VENV/bin/python" -m pytest -p no:cacheprovider) || status=$?
  echo "==> $PACKAGE: checks took $((SECONDS - started)) s"
  if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests in $PACKAGE: that is a failure" >&2
    exit 1
  fi
  exit "$status"
fi
