#!/usr/bin/env bash
# The first README command: from a fresh clone, install what is missing, run the platform (API,
# workers and a local gpu-node), train a model through the public API (scripts/demo.ts), and
# keep the platform running until Ctrl-C. QUICKSTART_DEMO=0 skips the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_python_packages
ensure_node_modules
ensure_services

PORT="${PORT:-4000}"
export PORT
log "starting cvtrain on port $PORT"
node --import tsx src/main.ts &
server=$!
trap 'kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; exit 0' INT TERM

for _ in $(seq 1 240); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { log "the server exited; see the log above"; exit 1; }
  sleep 0.5
done

if [ "${QUICKSTART_DEMO:-1}" != 0 ]; then
  # Give the local gpu-node a moment to register, so the demo's session starts at once.
  sleep 3
  CVTRAIN_API_URL="http://127.0.0.1:$PORT" node --import tsx scripts/demo.ts || log "the demo failed (the platform keeps running)"
fi
log "cvtrain is running: http://127.0.0.1:$PORT/graphql (GraphiQL in a browser). Ctrl-C stops it."
wait "$server"
