#!/usr/bin/env bash
# Install what the real-JupyterHub integration tests (tests/integration) need beyond Python packages:
# configurable-http-proxy, the proxy JupyterHub starts, which comes from npm.
#
# Python packages (jupyterhub, jupyter_server, ...) come from the project's own `pip install -e .[test]`;
# this script does not touch pip.
#
# Idempotent and non-interactive: it installs chp only when `configurable-http-proxy` is not on PATH, and
# prints every step.  Meant to run as root on Debian with Node >= 20 and npm already installed.
#
# Environment:
#   CHP_VERSION   npm version spec to install (default: 5, the current major; it supports Node >= 20)
set -euo pipefail

CHP_VERSION="${CHP_VERSION:-5}"

say() { printf 'install-integration-deps: %s\n' "$*"; }

if command -v configurable-http-proxy >/dev/null 2>&1; then
    say "configurable-http-proxy already installed: $(command -v configurable-http-proxy)" \
        "($(configurable-http-proxy --version 2>/dev/null || echo 'version unknown'))"
    exit 0
fi

for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        say "error: '$tool' is not on PATH; install Node.js >= 20 with npm first" >&2
        exit 1
    fi
done
say "using node $(node --version), npm $(npm --version)"

say "running: npm install --global configurable-http-proxy@${CHP_VERSION}"
# --no-audit/--no-fund: no extra registry round-trips or banners in CI logs; no prompts either way.
npm install --global --no-audit --no-fund --loglevel=error "configurable-http-proxy@${CHP_VERSION}"

# npm's global bin directory may not be on PATH (e.g. a custom prefix): say where it went.
if ! command -v configurable-http-proxy >/dev/null 2>&1; then
    prefix="$(npm prefix --global)"
    say "error: installed, but configurable-http-proxy is not on PATH; add ${prefix}/bin to PATH" >&2
    exit 1
fi
say "installed $(command -v configurable-http-proxy) ($(configurable-http-proxy --version))"
