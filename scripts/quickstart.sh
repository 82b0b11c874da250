#!/usr/bin/env bash
# The first README command: from a fresh clone, install what is missing and run the platform.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_python_packages
ensure_node_modules
ensure_services
log "starting cvtrain (Ctrl-C stops it cleanly)"
exec npm start
