#!/usr/bin/env bash
# The test command (README): installs what the tests need, starts PostgreSQL/Redis if stopped,
# then runs the TypeScript type check, the architecture rules, the vitest suite and the Python
# trainer suite.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_python_packages
ensure_node_modules
ensure_services

log "type check"
npx tsc -p tsconfig.json --noEmit
log "architecture rules (dependency-cruiser)"
npm run -s lint:deps
log "TypeScript tests (vitest)"
npx vitest run "$@"
log "Python trainer tests (pytest)"
/usr/bin/python3 -m pytest trainers/tests -q -p no:cacheprovider
log "all tests passed"
