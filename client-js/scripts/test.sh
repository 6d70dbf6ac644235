#!/usr/bin/env bash
# client-js: install dev dependencies, check formatting, build (tsc → dist/ with .d.ts, esbuild →
# dist/progress-gateway.js), compile the tests (strict, like the sources), then run every test
# with node's built-in runner. The integration tests start their own redis-server and
# `progress-gateway serve` from ../.venv, which the repository's scripts/test creates.
# Extra arguments go to `node --test` (e.g. --test-name-pattern=fallback).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
npm run --silent lint
npm run --silent build
npm run --silent build:test
node --test --test-reporter=spec --test-timeout=60000 "$@" build/test/*.test.js
