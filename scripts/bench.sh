#!/usr/bin/env bash
# First layercache benchmark (docs/benchmarks.md). Offline, everything on 127.0.0.1:
# a local docker-registry seeded with one 256 MiB layer, layercached in front of it (empty cache
# in a temporary directory, chunk_size 1MiB, log level warn), and layercache-bench measuring the
# same requests through layercache and directly against the registry, in one run:
#   (a) cold full-blob GET (layercache's first fetch, cache empty) vs direct
#   (b) warm full-blob throughput, sequential then 4 connections, vs direct
#   (c) warm 64 KiB random-range latency (unaligned offsets, 8 connections) vs direct, and the
#       same with offsets aligned to 64 KiB (so a range never spans two 1 MiB chunks)
# Knobs (environment): BENCH_LAYER (256MiB), BENCH_FULL_N (5), BENCH_FULL_CONC_N (8),
# BENCH_RANGES_N (2000), BENCH_SEED (1), BUILD (build).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
LAYER=${BENCH_LAYER:-256MiB}
FULL_N=${BENCH_FULL_N:-5}
FULL_CONC_N=${BENCH_FULL_CONC_N:-8}
RANGES_N=${BENCH_RANGES_N:-2000}
SEED=${BENCH_SEED:-1}

cmake --build "$BUILD" -j 2 --target layercached layercache-seed layercache-bench

source scripts/lib.sh
DEMO_LAYERS=$LAYER start_demo_registry > /dev/null
DIRECT="http://127.0.0.1:$REGISTRY_PORT"
manifest=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
  "$DIRECT/v2/demo/app/manifests/v1")
LAYER_DIGEST=$(printf '%s' "$manifest" | tr -d ' \n' | sed 's/.*"layers":\[//' |
  grep -o 'sha256:[0-9a-f]\{64\}' | head -1)
BLOB_PATH="/v2/demo/app/blobs/$LAYER_DIGEST"
SIZE=$(curl -sfI "$DIRECT$BLOB_PATH" | tr -d '\r' | sed -n 's/^[Cc]ontent-[Ll]ength: *//p')
if [ -z "$LAYER_DIGEST" ] || [ -z "$SIZE" ]; then
  echo "bench: no layer found in $manifest" >&2
  exit 1
fi

PROXY_PORT=$("$BUILD/layercache-seed" --free-port)
cat > "$WORK/layercache.yaml" <<YML
server:
  listen:
    - address: 127.0.0.1:$PROXY_PORT
admin:
  address: 127.0.0.1:0
log:
  level: warn
cache:
  path: $WORK/cache
  capacity: 2GiB
  chunk_size: 1MiB
upstreams:
  - name: demo
    url: $DIRECT
    default: true
YML
"$BUILD/layercached" --config "$WORK/layercache.yaml" > "$WORK/layercached.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$PROXY_PORT/v2/"
PROXY="http://127.0.0.1:$PROXY_PORT"

echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB RAM," \
  "load:$(uptime | sed 's/.*load average://')"
echo "blob: $LAYER_DIGEST ($SIZE bytes); registry $DIRECT, layercache $PROXY"

RESULTS=()
run() {  # label, then layercache-bench arguments without --url; runs direct then layercache
  local label=$1 base
  shift
  for base in "$DIRECT" "$PROXY"; do
    local out
    out=$(timeout 300 "$BUILD/layercache-bench" "$@" --url "$base$BLOB_PATH" 2>&1) || true
    echo "  $label $([ "$base" = "$DIRECT" ] && echo direct || echo layercache): $out"
    RESULTS+=("$label|$([ "$base" = "$DIRECT" ] && echo direct || echo layercache)|$out")
  done
}
get() {  # label, side, key → value from the recorded line
  local line
  for line in "${RESULTS[@]}"; do
    case $line in
      "$1|$2|"*)
        sed -n "s|.* $3=\([^ ]*\).*|\1|p" <<<"${line#*|*|}" | head -1
        return
        ;;
    esac
  done
}

echo "raw results:"
run cold full --count 1 --concurrency 1
run warm1 full --count "$FULL_N" --concurrency 1
run warm4 full --count "$FULL_CONC_N" --concurrency 4
run ranges ranges --size "$SIZE" --range 64KiB --count "$RANGES_N" --concurrency 8 --seed "$SEED"
run aligned ranges --size "$SIZE" --range 64KiB --align 64KiB --count "$RANGES_N" --concurrency 8 \
  --seed "$SEED"
echo "layercache store after the run: $(du -sh "$WORK/cache" | cut -f1)"
if grep -q . "$WORK/layercached.log"; then
  echo "layercached log (warn and above):"
  sed 's/^/  /' "$WORK/layercached.log" | tail -20
fi

row() {  # text, label, key, unit
  local lc direct ratio
  lc=$(get "$2" layercache "$3")
  direct=$(get "$2" direct "$3")
  ratio=$(awk -v a="$lc" -v b="$direct" \
    'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f", a / b }')
  printf '| %-44s | %12s | %12s | %6s |\n' "$1 ($4)" "${lc:--}" "${direct:--}" "$ratio"
}
errors() {
  local e total=0 label side
  for label in cold warm1 warm4 ranges aligned; do
    for side in layercache direct; do
      e=$(get "$label" "$side" errors)
      total=$((total + ${e:-1}))
    done
  done
  echo "$total"
}
echo
printf '| %-44s | %12s | %12s | %6s |\n' measurement layercache direct ratio
printf '|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..46})" "$(printf -- '-%.0s' {1..14})" \
  "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..8})"
row "cold full GET, 1 request" cold seconds s
row "cold full GET, 1 request" cold GB/s GB/s
row "warm full GET, $FULL_N sequential" warm1 GB/s GB/s
row "warm full GET, $FULL_N sequential, p50" warm1 p50_ms ms
row "warm full GET, $FULL_CONC_N over 4 connections" warm4 GB/s GB/s
row "warm full GET, 4 connections, p50" warm4 p50_ms ms
row "64 KiB random range, 8 connections" ranges req/s req/s
row "64 KiB random range, p50" ranges p50_ms ms
row "64 KiB random range, p90" ranges p90_ms ms
row "64 KiB random range, p99" ranges p99_ms ms
row "64 KiB random range, max" ranges max_ms ms
row "64 KiB aligned range, 8 connections" aligned req/s req/s
row "64 KiB aligned range, p50" aligned p50_ms ms
row "64 KiB aligned range, p99" aligned p99_ms ms
echo
echo "failed requests (all lines, both sides): $(errors)"
