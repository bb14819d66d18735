#!/usr/bin/env bash
# `make run`: layercached with the built-in config (Docker Hub as default upstream) when
# Docker Hub answers; otherwise with a local demo upstream, so it always starts.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
if [ -n "${CONFIG:-}" ]; then
  exec "$BUILD/layercached" --config "$CONFIG"
fi
if curl -s -m 5 -o /dev/null https://registry-1.docker.io/v2/; then
  echo "Docker Hub reachable: built-in config (listen 127.0.0.1:5000)"
  exec "$BUILD/layercached"
fi
echo "Docker Hub not reachable: starting a local demo upstream instead"
start_demo_registry
write_demo_config 5000 9401
echo "try: skopeo inspect --tls-verify=false docker://127.0.0.1:5000/demo/app:v1"
"$BUILD/layercached" --config "$WORK/layercache.yaml" &
PIDS+=($!)
wait "${PIDS[-1]}"
