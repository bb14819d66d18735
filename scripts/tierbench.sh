#!/usr/bin/env bash
# Issue 21's benchmark: N node layercaches cold-pulling one image at once through a throttled
# origin (a distant registry), without and with a tier of layercaches between them and the
# origin. Reports each mode's time until every node has the whole image (digests verified) and
# the bytes the origin sent (the sum of layercache_upstream_received_bytes_total over the
# instances that talk to it: the nodes without a tier, the tier members with one).
#
# Knobs (environment): TIER_NODES (4), TIER_MEMBERS (2: hashed), TIER_LAYERS (6 × 16MiB),
# THROTTLE_RTT_MS (30), THROTTLE_BW (25MB per connection), BUILD (build).
# Offline, everything on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

NODES=${TIER_NODES:-4}
MEMBERS=${TIER_MEMBERS:-2}
LAYERS=${TIER_LAYERS:-16MiB,16MiB,16MiB,16MiB,16MiB,16MiB}
RTT=${THROTTLE_RTT_MS:-30}
BW=${THROTTLE_BW:-25MB}

start_registry origin
"$BUILD/layercache-seed" --registry "http://127.0.0.1:$REGISTRY_PORT" --repo bench/app --tag v1 \
  --layers "$LAYERS" > /dev/null
start_throttle "$RTT" "$BW"

# start_instance NAME UPSTREAM [MIRRORS_YAML]: a layercached on free ports; sets PORT, ADMIN.
start_instance() {
  PORT=$(free_port)
  ADMIN=$(free_port)
  cat > "$WORK/$1.yaml" <<YML
server: {listen: [{address: 127.0.0.1:$PORT}], threads: 2}
admin: {address: 127.0.0.1:$ADMIN}
log: {level: warn, access: false}
cache: {path: $WORK/$1-store, capacity: 2GiB}
prefetch: {eager_layers: never, fetch_published: false}
upstreams:
  - name: origin
    url: $2
    default: true
${3:-}
YML
  "$BUILD/layercached" --config "$WORK/$1.yaml" > "$WORK/$1.log" 2>&1 &
  PIDS+=($!)
  eval "PID_$1=$!"
  wait_http "http://127.0.0.1:$PORT/v2/"
}

received() {  # admin port: the upstream body bytes it received
  curl -s "http://127.0.0.1:$1/metrics" |
    awk '/^layercache_upstream_received_bytes_total/ {s += $2} END {printf "%.0f", s}'
}

# pull_all PORT...: every node pulls the image at once; prints the seconds until all are done.
pull_all() {
  local start end pids=()
  start=$(date +%s.%N)
  for p in "$@"; do
    "$BUILD/layercache-bench" full --registry "http://127.0.0.1:$p" --image bench/app:v1 \
      --count 1 --parallel 4 --verify --timeout 600 > "$WORK/pull-$p.txt" 2>&1 &
    pids+=($!)
  done
  local failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  end=$(date +%s.%N)
  [ "$failed" = 0 ] || { echo "a pull failed:" >&2; cat "$WORK"/pull-*.txt >&2; exit 1; }
  echo "$end - $start" | bc
}

run_mode() {  # $1 = direct | tier
  local mode=$1 node_ports=() counted=() mirrors="" stop=()
  if [ "$mode" = tier ]; then
    mirrors="    mirror_select: hash
    mirrors:"
    for m in $(seq "$MEMBERS"); do
      start_instance "tier$m" "$THROTTLE_URL"
      mirrors+="
      - url: http://127.0.0.1:$PORT"
      counted+=("$ADMIN")
      stop+=("tier$m")
    done
  fi
  for n in $(seq "$NODES"); do
    start_instance "${mode}_node$n" "$THROTTLE_URL" "$mirrors"
    node_ports+=("$PORT")
    [ "$mode" = direct ] && counted+=("$ADMIN")
    stop+=("${mode}_node$n")
  done
  local seconds bytes=0
  seconds=$(pull_all "${node_ports[@]}")
  for a in "${counted[@]}"; do bytes=$((bytes + $(received "$a"))); done
  printf "%-7s %d nodes%s: all pulled in %6.2f s; origin sent %6.1f MiB\n" "$mode" "$NODES" \
    "$([ "$mode" = tier ] && echo ", tier of $MEMBERS (hash)")" "$seconds" \
    "$(echo "$bytes / 1048576" | bc -l)"
  for s in "${stop[@]}"; do
    local var="PID_$s"
    stop_pid "${!var}"
  done
}

echo "image bench/app:v1: layers $LAYERS; origin behind layercache-throttle (RTT $RTT ms, $BW/s per connection)"
run_mode direct
run_mode tier
