#!/usr/bin/env bash
# Issue 23's benchmark: what `upstreams[].access: client` costs on warm pulls. One docker-registry
# with htpasswd Basic auth (users `node` and `alice`, bcrypt, made by `htpasswd -Bbn` as
# tests/support/registry.cpp does), seeded with one image, and two layercached side by side:
#   node    access: node (the default), the node's own credentials (auth: basic, user node);
#           the bench sends no credentials
#   client  access: client, no node credentials; the bench sends alice's
#           (`layercache-bench --header "Authorization: Basic …"`), which layercache checks with
#           the registry (a HEAD with them) once per repository per access_ttl (and once per
#           blob read by digest after its membership, learned from a manifest, expired)
# Each is warmed with one verified pull (and read back once); then ROUNDS rounds, each running
# through both (in alternating order: node first in odd rounds, client first in even ones) warm
# full pulls (every layer) and warm 64 KiB ranges. Reported: the median over the rounds of each
# mode's numbers, the ratio client/node, and what went upstream during the warm rounds: each
# instance's layercache_access_checks_total, layercache_access_cached_total (requests admitted
# with no check) and layercache_upstream_request_duration_seconds_count (requests it sent
# upstream), and the requests in the registry's access log.
#
# Knobs (environment): ACCESSBENCH_ROUNDS (5), ACCESSBENCH_LAYERS (8 × 16MiB),
# ACCESSBENCH_PULLS (4 warm pulls per round and mode, one client, 3 blobs at once),
# ACCESSBENCH_RANGES (2000 ranges per round and mode, 8 connections), ACCESSBENCH_TTL (60s: the
# client instance's access_ttl; e.g. 2s to see checks come back as their answers expire),
# ACCESSBENCH_REGISTRY_LOG (a file: the registry's log, access log included, is copied there at
# the end: which checks went upstream, when), BUILD (build). Offline, everything on 127.0.0.1 on
# free ports; docs/benchmarks.md has a run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ROUNDS=${ACCESSBENCH_ROUNDS:-5}
LAYERS=${ACCESSBENCH_LAYERS:-16MiB,16MiB,16MiB,16MiB,16MiB,16MiB,16MiB,16MiB}
PULLS=${ACCESSBENCH_PULLS:-4}
RANGES=${ACCESSBENCH_RANGES:-2000}
TTL=${ACCESSBENCH_TTL:-60s}
IMAGE=bench/app:v1

for tool in docker-registry htpasswd curl awk base64 "$BUILD/layercached" \
  "$BUILD/layercache-bench" "$BUILD/layercache-seed"; do
  command -v "$tool" > /dev/null || { echo "accessbench: $tool is missing" >&2; exit 2; }
done
case "$ROUNDS" in '' | *[!0-9]* | 0) echo "ACCESSBENCH_ROUNDS: 1 or more" >&2; exit 2 ;; esac
[ "$ROUNDS" -le 100 ] || { echo "ACCESSBENCH_ROUNDS: at most 100" >&2; exit 2; }

# Throwaway credentials, for this run only (files 0600 in $WORK, removed on exit).
umask 077
NODE_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
ALICE_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
printf '%s' "$NODE_PASSWORD" > "$WORK/node-password"
{
  htpasswd -Bbn node "$NODE_PASSWORD"
  htpasswd -Bbn alice "$ALICE_PASSWORD"
} | grep -v '^$' > "$WORK/htpasswd"
ALICE_AUTH="Authorization: Basic $(printf 'alice:%s' "$ALICE_PASSWORD" | base64 -w0)"

# Seed without auth (layercache-seed pushes anonymously), then serve the same storage with it.
start_registry origin
"$BUILD/layercache-seed" --registry "http://127.0.0.1:$REGISTRY_PORT" --repo bench/app --tag v1 \
  --layers "$LAYERS" > /dev/null
stop_pid "${PIDS[-1]}"
unset 'PIDS[-1]'
REGISTRY_PORT=$(free_port)
cat > "$WORK/origin-auth.yml" << YML
version: 0.1
log: {level: warn, formatter: text, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: $WORK/origin}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$REGISTRY_PORT, secret: $(head -c 12 /dev/urandom | base64 | tr -d '/+=')}
auth: {htpasswd: {realm: accessbench, path: $WORK/htpasswd}}
YML
docker-registry serve "$WORK/origin-auth.yml" > "$WORK/origin-auth.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$REGISTRY_PORT/v2/"
status() {  # URL: the status of an anonymous GET
  curl -s --max-time 10 -o /dev/null -w '%{http_code}' "$1"
}
die() {
  echo "accessbench: $*" >&2
  exit 1
}
code=$(status "http://127.0.0.1:$REGISTRY_PORT/v2/bench/app/manifests/v1")
[ "$code" = 401 ] || die "the registry let an anonymous client in ($code)"

# start_instance NAME UPSTREAM_EXTRA_YAML: a layercached on free ports; sets PORT[NAME],
# ADMIN[NAME].
declare -A PORT ADMIN
start_instance() {
  local port admin
  port=$(free_port)
  admin=$(free_port)
  cat > "$WORK/$1.yaml" << YML
server: {listen: [{address: 127.0.0.1:$port}], threads: 2}
admin: {address: 127.0.0.1:$admin}
log: {level: warn, access: false}
cache: {path: $WORK/$1-store, capacity: 2GiB}
prefetch: {eager_layers: never, fetch_published: false}
upstreams:
  - name: origin
    url: http://127.0.0.1:$REGISTRY_PORT
    default: true
$2
YML
  "$BUILD/layercached" --config "$WORK/$1.yaml" > "$WORK/$1.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$port/v2/"
  PORT[$1]=$port
  ADMIN[$1]=$admin
}
start_instance node "    auth: {type: basic, username: node, password_file: $WORK/node-password}"
start_instance client "    access: client
    access_ttl: $TTL"

# bench MODE ARGS...: layercache-bench against MODE's instance (with alice's credentials for
# client); its text report on stdout. Bounded: --max-seconds, and timeout(1) around it.
bench() {
  local mode=$1
  shift
  local auth=()
  [ "$mode" = client ] && auth=(--header "$ALICE_AUTH")
  timeout 300 "$BUILD/layercache-bench" "$@" --registry "http://127.0.0.1:${PORT[$mode]}" \
    --max-seconds 120 --timeout 30 "${auth[@]}"
}

metric() {  # mode, metric name[, scale]: its value (summed over labels) on that instance × scale
  curl -s --max-time 5 "http://127.0.0.1:${ADMIN[$1]}/metrics" |
    awk -v m="$2" -v k="${3:-1}" '
      $1 == m || index($1, m "{") == 1 { s += $2 }
      END { printf "%.0f", s * k }'
}
# mode: "checks cached upstream_requests upstream_µs" (µs: the requests' time to the header)
upstream_counts() {
  echo "$(metric "$1" layercache_access_checks_total)" \
    "$(metric "$1" layercache_access_cached_total)" \
    "$(metric "$1" layercache_upstream_request_duration_seconds_count)" \
    "$(metric "$1" layercache_upstream_request_duration_seconds_sum 1000000)"
}
registry_requests() {  # requests in the registry's access log so far
  grep -cE '"(GET|HEAD) /v2/' "$WORK/origin-auth.log" || true
}
field() {  # name, text report: the value of name= on its first line
  awk -v k="$1" '{
    for (i = 1; i <= NF; i++) if (index($i, k "=") == 1) { print substr($i, length(k) + 2); exit }
  }' <<< "$2"
}

# The credentials matter: without them the client instance must refuse; with alice's, serve.
code=$(status "http://127.0.0.1:${PORT[client]}/v2/bench/app/manifests/v1")
[ "$code" = 401 ] || die "access: client served a client without credentials ($code)"

# Warm-up: a verified pull fills each store; then one unmeasured pull and a few ranges read it
# back once (the first reads after a fill are slower: memtables, page cache).
for mode in node client; do
  if ! out=$(bench "$mode" full --image "$IMAGE" --count 1 --parallel 3 --verify) ||
    ! out=$(bench "$mode" full --image "$IMAGE" --count 1 --parallel 3) ||
    ! out=$(bench "$mode" ranges --image "$IMAGE" --range 64KiB --count 200 --concurrency 8); then
    die "the warm-up through $mode failed:"$'\n'"$out"
  fi
done
read -r warm_checks _ warm_upstream _ <<< "$(upstream_counts client)"

echo "image $IMAGE: layers $LAYERS; docker-registry with htpasswd (bcrypt) on 127.0.0.1"
echo "node: access: node, auth basic (user node)"
echo "client: access: client, access_ttl $TTL, the bench sends alice's Basic"
echo "each round and mode: $PULLS warm pulls (1 client, 3 blobs at once)," \
  "$RANGES warm 64 KiB ranges (8 connections)"
echo

declare -A before
for mode in node client; do before[$mode]=$(upstream_counts "$mode"); done
registry_before=$(registry_requests)
started=$(date +%s.%N)
rows=()
declare -A sent=([node]=0 [client]=0)
for r in $(seq "$ROUNDS"); do
  order="node client"
  [ $((r % 2)) = 0 ] && order="client node"
  for mode in $order; do
    pulls=$(bench "$mode" full --image "$IMAGE" --count "$PULLS" --parallel 3) ||
      die "pulls through $mode failed:"$'\n'"$pulls"
    ranges=$(bench "$mode" ranges --image "$IMAGE" --range 64KiB --count "$RANGES" \
      --concurrency 8 --seed "$r") || die "ranges through $mode failed:"$'\n'"$ranges"
    # + 1: the ranges' setup asks the manifest
    sent[$mode]=$((sent[$mode] + $(field requests "$pulls") + $(field requests "$ranges") + 1))
    row="$r $mode $(field pull_p50_ms "$pulls") $(field GB/s "$pulls")"
    rows+=("$row $(field req/s "$ranges") $(field p50_ms "$ranges") $(field p99_ms "$ranges")")
  done
done
elapsed=$(echo "$(date +%s.%N) - $started" | bc)
registry_after=$(registry_requests)

printf '%s\n' "${rows[@]}" | awk -v rounds="$ROUNDS" '
  function median(list, n,   a, i, j, t) {
    split(list, a, " ")
    for (i = 1; i <= n; i++)
      for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  { n[$2]++; pull[$2] = pull[$2] " " $3; gbps[$2] = gbps[$2] " " $4; rps[$2] = rps[$2] " " $5
    p50[$2] = p50[$2] " " $6; p99[$2] = p99[$2] " " $7
    per_round[$1] = per_round[$1] sprintf("  %s %.1f ms %.2f GB/s %.0f req/s", $2, $3, $4, $5) }
  END {
    printf "%-12s %16s %10s %14s %14s %14s\n", "mode", "warm pull p50", "pull GB/s",
      "ranges req/s", "range p50 ms", "range p99 ms"
    for (m = 0; m < 2; m++) {
      mode = m ? "client" : "node"
      v[mode, 1] = median(pull[mode], n[mode]); v[mode, 2] = median(gbps[mode], n[mode])
      v[mode, 3] = median(rps[mode], n[mode]); v[mode, 4] = median(p50[mode], n[mode])
      v[mode, 5] = median(p99[mode], n[mode])
      printf "%-12s %13.1f ms %10.2f %14.0f %14.3f %14.3f\n", mode, v[mode, 1], v[mode, 2],
        v[mode, 3], v[mode, 4], v[mode, 5]
    }
    printf "%-12s", "client/node"
    for (i = 1; i <= 5; i++) printf(i == 1 ? " %16.2f" : i == 2 ? " %10.2f" : " %14.2f",
                                    v["client", i] / v["node", i])
    printf "\n"
    printf "(medians over %d rounds; per round, in the order run:)\n", rounds
    for (r = 1; r <= rounds; r++) printf "round %d:%s\n", r, per_round[r]
  }'

echo
printf "upstream during the warm rounds (%.1f s; access_ttl %s):\n" "$elapsed" "$TTL"
for mode in node client; do
  read -r c0 a0 u0 t0 <<< "${before[$mode]}"
  read -r c1 a1 u1 t1 <<< "$(upstream_counts "$mode")"
  printf "  %-6s client requests %6d; access checks %4d, admitted without a check %6d;" \
    "$mode" "${sent[$mode]}" $((c1 - c0)) $((a1 - a0))
  printf " requests sent upstream %4d" $((u1 - u0))
  if [ $((u1 - u0)) -gt 0 ]; then
    printf " (mean %.2f ms to the header)" "$(echo "($t1 - $t0) / ($u1 - $u0) / 1000" | bc -l)"
  fi
  echo
done
echo "  (client's warm-up, before: $warm_checks access checks, $warm_upstream requests upstream)"
echo "  registry access log: $((registry_after - registry_before)) requests (both instances)"
if [ -n "${ACCESSBENCH_REGISTRY_LOG:-}" ]; then
  cp "$WORK/origin-auth.log" "$ACCESSBENCH_REGISTRY_LOG"
  echo "  registry log copied to $ACCESSBENCH_REGISTRY_LOG"
fi
echo "  (client requests: the bench's, its ranges' setup (the manifest) included)"
