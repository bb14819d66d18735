#!/usr/bin/env bash
# `make demo`: works offline. A local docker-registry seeded with a generated 3-layer image,
# layercache in front of it, skopeo pulling through layercache; digests compared.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
start_demo_registry
PROXY_PORT=$("$BUILD/layercache-seed" --free-port)
ADMIN_PORT=$("$BUILD/layercache-seed" --free-port)
write_demo_config "$PROXY_PORT" "$ADMIN_PORT"
"$BUILD/layercached" --config "$WORK/layercache.yaml" > "$WORK/layercached.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$PROXY_PORT/v2/"
echo "layercached on 127.0.0.1:$PROXY_PORT in front of it"
start=$(date +%s%N)
skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$PROXY_PORT/demo/app:v1" "dir:$WORK/pulled"
end=$(date +%s%N)
echo "skopeo copy through layercache: $(( (end - start) / 1000000 )) ms"
ok=1
for f in "$WORK"/pulled/*; do
  name=$(basename "$f")
  [ "$name" = version ] && continue
  if [ "$name" = manifest.json ]; then
    got="sha256:$(sha256sum "$f" | cut -d' ' -f1)"
    [ "$got" = "$DEMO_DIGEST" ] || ok=0
    printf '  %-14s %s %s\n' manifest "$got" "$([ "$got" = "$DEMO_DIGEST" ] && echo ok || echo MISMATCH)"
    continue
  fi
  got=$(sha256sum "$f" | cut -d' ' -f1)
  [ "$got" = "$name" ] || ok=0
  printf '  %-14s sha256:%s %s bytes %s\n' blob "$got" "$(stat -c %s "$f")" "$([ "$got" = "$name" ] && echo ok || echo MISMATCH)"
done
if [ $ok = 1 ]; then echo "demo: every digest matches the upstream's"; else echo "demo: DIGEST MISMATCH"; exit 1; fi
echo "metrics (http://127.0.0.1:$ADMIN_PORT/metrics):"
curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" |
  grep -E '^layercache_(http_response_bytes_total|upstream_received_bytes_total|cache_used_bytes|cache_blobs)[{ ]' |
  sed 's/^/  /' || true
