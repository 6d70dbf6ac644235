#!/usr/bin/env bash
# client-js: install dev dependencies, check formatting, build (tsc → dist/ with .d.ts, esbuild →
# dist/progress-gateway.js), compile the tests (strict, like the sources), then run every test
# with node's built-in runner. The integration tests start their own redis-server and
# `progress-gateway serve` / `progress-gateway demo` from ../.venv, which the repository's
# scripts/test creates. The browser tests drive Debian's Chromium (/usr/bin/chromium, or
# $CHROMIUM_PATH) through playwright-core; it is installed with apt when missing. No browser is
# ever downloaded by npm or Playwright. Screenshots go to ../test-output/browser/.
# Extra arguments go to `node --test` (e.g. --test-name-pattern=fallback).
set -euo pipefail
cd "$(dirname "$0")/.."

export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if [ ! -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ]; then
  echo "== installing chromium (for the browser tests)"
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "chromium is missing and installing it needs root" >&2; exit 1; }
    SUDO=(sudo)
  fi
  "${SUDO[@]}" apt-get update -q
  # Headless Chromium needs none of its recommends (fonts, desktop integration, …): ~25
  # packages instead of ~125.
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
fi

hidden=node_modules/.package-lock.json
if [ -f "$hidden" ] && [ "$hidden" -nt package-lock.json ] && [ "$hidden" -nt package.json ]; then
  # Installed by npm after the last change to the manifests (the test command's pytest step
  # installs it for the docs and packaging tests): npm ci would only reinstall the same tree.
  echo "== node_modules is up to date with package-lock.json"
elif [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
npm run --silent lint
npm run --silent build
npm run --silent build:test
# Node 20 applies --test-timeout to a whole file: the browser file runs ~60 s on a loaded host.
node --test --test-reporter=spec --test-timeout=180000 "$@" build/test/*.test.js
