#!/usr/bin/env bash
# client-js: install dev dependencies, build (tsc → dist/, esbuild → dist/progress-gateway.js),
# type-check and compile the tests, then run every test with node's built-in runner.
# The integration tests start their own redis-server and `progress-gateway serve`
# (from ../.venv, which the repository's scripts/test creates).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
npm run --silent build
npm run --silent build:test
node --test --test-reporter=spec --test-timeout=60000 "$@" build/test/*.test.js
