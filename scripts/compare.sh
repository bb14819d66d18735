#!/usr/bin/env bash
# Side by side (issue 7, docs/benchmarks.md): the same scenarios against
#   direct          the upstream itself (a local docker-registry)
#   layercache      layercached from this build, fresh store
#   nginx           nginx as a slice-module caching proxy (slice 1m, key $uri$slice_range)
#   registry-proxy  docker-registry in pull-through proxy mode (proxy: remoteurl)
#   layercache-tls  layercached with a TLS listener (listen[].tls), clients over HTTPS
#   nginx-tls       the nginx backend above with an `ssl` listener: the same cert and key
# each cold (cache wiped, process restarted) and warm, with layercache-bench as the client (over
# HTTPS for the -tls pair, checking the certificate against a CA made for the run with openssl:
# EC P-256, for 127.0.0.1; the cipher each one negotiates is printed under the table).
# Offline, everything on 127.0.0.1. Optionally layercache-throttle sits between everything
# (direct clients included) and the upstream, so it behaves like a distant registry.
#
# Scenarios, per backend, in this order:
#   cold pull    1 client pulls the image(s): manifest, config, layers (PARALLEL at once),
#                digests verified; the backend's cache is empty
#   warm pull    CLIENTS clients pull WARM_PULLS times in all (warm after the cold pull)
#   warm ranges  RANGES random 64 KiB ranges over the layers, 8 connections
#   cold ranges  COLD_RANGES random 64 KiB ranges (another seed) after a restart with an empty cache
#   herd         HERD clients at once GET one cold layer (after another restart); layercached's
#                resident memory is sampled from /proc while the streams are open
# For each: the upstream's requests and body bytes, from its access log (every line the
# registry wrote while the scenario ran, and until the log had been quiet for 2 s).
#
# Knobs (environment): COMPARE_LAYERS (64MiB,64MiB,64MiB: the image's layers, incompressible),
# COMPARE_IMAGES (1), COMPARE_PARALLEL (3), COMPARE_CLIENTS (4), COMPARE_WARM_PULLS (8),
# COMPARE_RANGES (2000), COMPARE_COLD_RANGES (500), COMPARE_HERD (100),
# COMPARE_BACKENDS ("direct layercache nginx registry-proxy"), COMPARE_CHUNK (layercache's
# cache.chunk_size, 1MiB; nginx's slice stays 1m), COMPARE_MAX_SECONDS (120 per
# scenario), THROTTLE_RTT_MS and THROTTLE_BW (e.g. 30 and 25MB: round trip added and bytes/s
# per connection and direction; unset: no throttle), BUILD (build), BUILD_JOBS (2),
# COMPARE_STORAGE (registry: docker-registry serves blobs itself; redirect: it answers blob GETs
# 307 to a storage host — nginx on its storage directory, behind a throttle of its own when
# there is one — as Artifact Registry, Docker Hub and ECR do; the upstream's requests and bytes
# are then the registry's and the storage host's together; the nginx backend is left out by
# default, as its slice cache does not follow redirects), COMPARE_STORAGE_RANGES (with
# redirect: 1 = the storage host answers several ranges with the whole blob, as GCS and S3),
# COMPARE_SCENARIOS ("pulls cold_ranges herd": pulls = cold pull, warm pull and warm ranges;
# e.g. "herd" alone, with COMPARE_LAYERS=64MiB, for the memory of HERD streams),
# COMPARE_TLS (1: the default backends and then layercache-tls nginx-tls; with redirect storage
# layercache-tls alone),
# COMPARE_ROUNDS (1: each backend once; N: N rounds, every other one in reverse order, so that
# each pair runs alternated on a busy machine; ratios of each pair per round under the table),
# COMPARE_LOG (a file: layercached logs there at debug level with its access log, appended
# across its restarts — each fill's header, body and store times, each request's duration and
# source; where a tail comes from: `grep '^{' FILE | jq -c 'select(.logger=="access")'`),
# COMPARE_STRACE (a scenario's name, e.g. warm_pull: the backend's system calls during it,
# `strace -c -f`, on stderr; BUILD may be another tree's build, e.g. to count main's calls).
# Issue 22's HTTPS comparison, 8 × 64 MiB warm and warm 64 KiB ranges, both pairs in 5 rounds
# (docs/benchmarks.md):
#   COMPARE_LAYERS=64MiB COMPARE_SCENARIOS=pulls COMPARE_ROUNDS=5 \
#     COMPARE_BACKENDS="layercache nginx layercache-tls nginx-tls" scripts/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
LAYERS=${COMPARE_LAYERS:-64MiB,64MiB,64MiB}
NIMAGES=${COMPARE_IMAGES:-1}
PARALLEL=${COMPARE_PARALLEL:-3}
CLIENTS=${COMPARE_CLIENTS:-4}
WARM_PULLS=${COMPARE_WARM_PULLS:-8}
RANGES=${COMPARE_RANGES:-2000}
COLD_RANGES=${COMPARE_COLD_RANGES:-500}
HERD=${COMPARE_HERD:-100}
CHUNK=${COMPARE_CHUNK:-1MiB}
STORAGE=${COMPARE_STORAGE:-registry}
if [ "$STORAGE" = redirect ]; then
  BACKENDS=${COMPARE_BACKENDS:-direct layercache registry-proxy}
else
  BACKENDS=${COMPARE_BACKENDS:-direct layercache nginx registry-proxy}
fi
if [ "${COMPARE_TLS:-}" = 1 ] && [ -z "${COMPARE_BACKENDS:-}" ]; then
  BACKENDS="$BACKENDS layercache-tls"
  [ "$STORAGE" = redirect ] || BACKENDS="$BACKENDS nginx-tls"
fi
ROUNDS=${COMPARE_ROUNDS:-1}
MAX_SECONDS=${COMPARE_MAX_SECONDS:-120}
SCENARIOS=${COMPARE_SCENARIOS:-pulls cold_ranges herd}
LOG_LEVEL=warn LOG_ACCESS=false
[ -n "${COMPARE_LOG:-}" ] && LOG_LEVEL=debug LOG_ACCESS=true
RTT_MS=${THROTTLE_RTT_MS:-}
BW=${THROTTLE_BW:-}

[ -f "$BUILD/build.ninja" ] ||
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
nice -n 19 cmake --build "$BUILD" -j "${BUILD_JOBS:-2}" --target layercached layercache-seed \
  layercache-bench layercache-throttle > /dev/null
TOOLS="docker-registry nginx curl awk"
[[ " $BACKENDS " == *-tls\ * ]] && TOOLS="$TOOLS openssl"
for tool in $TOOLS; do
  command -v "$tool" > /dev/null || { echo "compare: $tool is needed (make compare installs nginx)" >&2; exit 1; }
done

source scripts/lib.sh  # WORK, PIDS, cleanup on exit, wait_http, free_port, stop_pid, start_registry, start_throttle
RESULTS=$WORK/results
: > "$RESULTS"
BACKEND_PID=
BACKEND_URL=

log() { echo "compare: $*" >&2; }

# --- TLS: a CA and a server certificate for 127.0.0.1 (EC P-256), shared by the -tls pair ---
TLS_DIR=$WORK/tls
CA=$TLS_DIR/ca.pem
BENCH_TLS=()  # layercache-bench's options for the running backend
TLS_INFO=     # "backend: protocol cipher; …" as openssl s_client negotiates them
if [[ " $BACKENDS " == *-tls\ * ]]; then
  mkdir -p "$TLS_DIR"
  printf '%s\n' "subjectAltName = IP:127.0.0.1" "basicConstraints = critical,CA:FALSE" \
    "extendedKeyUsage = serverAuth" > "$TLS_DIR/server.ext"
  {
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout "$TLS_DIR/ca.key" -out "$CA" -days 2 -subj "/CN=compare.sh CA"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" -subj "/CN=127.0.0.1"
    openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$CA" -CAkey "$TLS_DIR/ca.key" \
      -CAcreateserial -days 2 -extfile "$TLS_DIR/server.ext" -out "$TLS_DIR/server.pem"
  } > "$TLS_DIR/openssl.log" 2>&1 || { cat "$TLS_DIR/openssl.log" >&2; exit 1; }
fi
wait_https() {  # url: bounded wait (15 s) until it answers over TLS with the run's CA
  for _ in $(seq 150); do
    curl -s --cacert "$CA" -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  return 1
}
tls_info() {  # backend: what openssl s_client (the bench's library) negotiates with it
  local hostport=${BACKEND_URL#https://} got
  got=$(openssl s_client -connect "$hostport" -CAfile "$CA" < /dev/null 2> /dev/null |
    sed -n 's/^New, \(.*\), Cipher is \(.*\)/\1 \2/p' | head -1)
  [[ "$TLS_INFO" == *"$1:"* ]] || TLS_INFO+="${TLS_INFO:+; }$1: ${got:-unknown}"
}

# --- the upstream: docker-registry with an access log, seeded, maybe behind the throttle ---
STORAGE_LOG=/dev/null
if [ "$STORAGE" = redirect ]; then
  start_storage_host storage "$WORK/upstream" "${COMPARE_STORAGE_RANGES:-}"
  STORAGE_LOG=$WORK/storage/access.log
  STORAGE_URL="http://127.0.0.1:$STORAGE_PORT"
  if [ -n "$RTT_MS$BW" ]; then
    start_throttle "${RTT_MS:-0}" "${BW:-0}" "$STORAGE_PORT" storage-throttle
    STORAGE_URL=$THROTTLE_URL
  fi
  start_registry upstream "formatter: text, accesslog: {disabled: false}" "$STORAGE_URL"
else
  start_registry upstream "formatter: text, accesslog: {disabled: false}"
fi
IMAGES=
for i in $(seq "$NIMAGES"); do
  "$BUILD/layercache-seed" --registry "http://127.0.0.1:$REGISTRY_PORT" --repo "demo/app$i" \
    --tag v1 --layers "$LAYERS" --seed "$i" > /dev/null
  IMAGES=${IMAGES:+$IMAGES,}demo/app$i:v1
done
UPSTREAM="http://127.0.0.1:$REGISTRY_PORT"
if [ -n "$RTT_MS$BW" ]; then start_throttle "${RTT_MS:-0}" "${BW:-0}"; fi
manifest=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
  "http://127.0.0.1:$REGISTRY_PORT/v2/demo/app1/manifests/v1")
HERD_DIGEST=$(printf '%s' "$manifest" | tr -d ' \n' | sed 's/.*"layers":\[//' |
  grep -o 'sha256:[0-9a-f]\{64\}' | head -1)
HERD_SIZE=$(curl -sfIL "http://127.0.0.1:$REGISTRY_PORT/v2/demo/app1/blobs/$HERD_DIGEST" |
  tr -d '\r' | sed -n 's/^[Cc]ontent-[Ll]ength: *//p')
IMAGE_BYTES=0
for i in $(seq "$NIMAGES"); do
  m=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://127.0.0.1:$REGISTRY_PORT/v2/demo/app$i/manifests/v1" | tr -d ' \n')
  for n in $(printf '%s' "$m" | grep -o '"size":[0-9]*' | cut -d: -f2); do
    IMAGE_BYTES=$((IMAGE_BYTES + n))
  done
done

# Upstream requests and bytes: lines of the registry's access log and, with a storage host,
# of its access log too (both in combined format).
log_lines() { echo "$(wc -l < "$WORK/upstream.log") $(wc -l < "$STORAGE_LOG")"; }
settle() {  # until the access logs have not grown for 2 s (at most 30 s)
  local last=-1 same=0 n
  for _ in $(seq 300); do
    n=$(($(wc -c < "$WORK/upstream.log") + $(wc -c < "$STORAGE_LOG")))
    if [ "$n" = "$last" ]; then
      same=$((same + 1))
      [ "$same" -ge 20 ] && return 0
    else
      same=0
      last=$n
    fi
    sleep 0.1
  done
}
upstream_since() {  # "registry-lines storage-lines" (from log_lines) → "requests bytes"
  local marks=($1)
  {
    tail -n +"$((marks[0] + 1))" "$WORK/upstream.log"
    tail -n +"$((marks[1] + 1))" "$STORAGE_LOG"
  } | awk '/^[0-9.]+ - - \[/ { n++; if ($10 ~ /^[0-9]+$/) b += $10 } END { printf "%d %.0f\n", n, b }'
}

# --- the backends: start_<name> sets BACKEND_URL and BACKEND_PID (empty for direct) ---
start_direct() {
  BACKEND_PID=
  BACKEND_URL=$UPSTREAM
  BENCH_TLS=()
}

start_layercache() {  # $1 = tls: its one listener serves HTTPS with the run's certificate
  local port dir=$WORK/layercache tls=
  rm -rf "$dir"
  mkdir -p "$dir"
  port=$(free_port)
  ADMIN_PORT=$(free_port)
  [ "${1:-}" = tls ] && tls="
      tls: {cert_file: $TLS_DIR/server.pem, key_file: $TLS_DIR/server.key}"
  cat > "$dir/layercache.yaml" << YML
server:
  listen:
    - address: 127.0.0.1:$port$tls
admin:
  address: 127.0.0.1:$ADMIN_PORT
log:
  level: $LOG_LEVEL
  access: $LOG_ACCESS
cache:
  path: $dir/cache
  capacity: 8GiB
  chunk_size: $CHUNK
upstreams:
  - name: demo
    url: $UPSTREAM
    default: true
YML
  if [ -n "${COMPARE_LOG:-}" ]; then
    echo "compare: layercached started $(date -u +%FT%T.%3NZ), round ${ROUND:-1}" >> "$COMPARE_LOG"
    "$BUILD/layercached" --config "$dir/layercache.yaml" >> "$COMPARE_LOG" 2>&1 &
  else
    "$BUILD/layercached" --config "$dir/layercache.yaml" > "$dir/layercached.log" 2>&1 &
  fi
  BACKEND_PID=$!
  PIDS+=("$BACKEND_PID")
  if [ -n "$tls" ]; then
    BACKEND_URL="https://127.0.0.1:$port"
    BENCH_TLS=(--ca-file "$CA")
    wait_https "$BACKEND_URL/v2/"
  else
    BACKEND_URL="http://127.0.0.1:$port"
    BENCH_TLS=()
    wait_http "$BACKEND_URL/v2/"
  fi
}
start_layercache-tls() { start_layercache tls; }

start_nginx() {  # $1 = tls: its listener is `ssl`, with the run's certificate
  local port dir=$WORK/nginx ssl='' scheme=http
  rm -rf "$dir"
  mkdir -p "$dir/cache"
  port=$(free_port)
  if [ "${1:-}" = tls ]; then
    # TLS 1.3 as layercached speaks it (nginx 1.22's default stops at 1.2); nginx's defaults
    # otherwise (ssl_buffer_size 16k, its ciphers); no kTLS on these machines
    ssl="ssl;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate $TLS_DIR/server.pem;
    ssl_certificate_key $TLS_DIR/server.key;"
    scheme=https
  fi
  # (a plain request to an ssl listener gets nginx's 400: enough to know it listens)
  run_nginx "$dir" auto "
  access_log off;
  proxy_cache_path $dir/cache levels=1:2 keys_zone=layers:32m max_size=8g inactive=1d
                   use_temp_path=off;
  upstream registry {
    server ${UPSTREAM#http://};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$port ${ssl:-;}
    location / {
      slice 1m;
      proxy_cache layers;
      proxy_cache_key \$uri\$slice_range;
      proxy_set_header Range \$slice_range;
      proxy_cache_valid 200 206 1h;
      proxy_cache_lock on;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_pass http://registry;
    }
  }" "http://127.0.0.1:$port/v2/"
  BACKEND_PID=$NGINX_PID
  BACKEND_URL="$scheme://127.0.0.1:$port"
  BENCH_TLS=()
  [ -z "$ssl" ] || BENCH_TLS=(--ca-file "$CA")
}
start_nginx-tls() { start_nginx tls; }

start_registry-proxy() {
  local port dir=$WORK/registry-proxy
  rm -rf "$dir"
  mkdir -p "$dir/storage"
  port=$(free_port)
  cat > "$dir/config.yml" << YML
version: 0.1
log: {level: warn, formatter: text, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $dir/storage}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port}
proxy: {remoteurl: $UPSTREAM}
YML
  docker-registry serve "$dir/config.yml" > "$dir/registry.log" 2>&1 &
  BACKEND_PID=$!
  PIDS+=("$BACKEND_PID")
  BACKEND_URL="http://127.0.0.1:$port"
  BENCH_TLS=()
  wait_http "$BACKEND_URL/v2/"
}

restart() {  # backend: stop it, wipe its cache, start it again
  stop_pid "$BACKEND_PID"
  "start_$1"
}

# CPU time (user + system, in clock ticks) the backend has used so far: its process and its
# children (nginx's workers); empty for direct.
TICKS=$(getconf CLK_TCK)
backend_ticks() {
  [ -n "$BACKEND_PID" ] || return 0
  local p
  for p in "$BACKEND_PID" $(pgrep -P "$BACKEND_PID"); do
    awk '{ print $14 + $15 }' "/proc/$p/stat" 2> /dev/null || true
  done | awk '{ t += $1 } END { print t + 0 }'
}

# COMPARE_STRACE=scenario: `strace -c -f` on every thread of the backend's processes while that
# scenario runs (it slows them: its round's times mean nothing); the counts go to stderr.
TRACER=
strace_start() {
  [ -n "$BACKEND_PID" ] || return 0
  local args=() p t
  for p in "$BACKEND_PID" $(pgrep -P "$BACKEND_PID"); do
    for t in /proc/"$p"/task/*; do args+=(-p "${t##*/}"); done
  done
  strace -c -f -o "$WORK/strace.txt" "${args[@]}" 2> /dev/null &
  TRACER=$!
  sleep 2  # attached to every thread
}
strace_stop() {  # backend
  [ -n "$TRACER" ] || return 0
  kill -INT "$TRACER" 2> /dev/null || true
  wait "$TRACER" 2> /dev/null || true
  TRACER=
  log "strace -c -f of $1 (round $ROUND):"
  head -25 "$WORK/strace.txt" | sed 's/^/  /' >&2
}

# Runs one scenario: `scenario backend name layercache-bench-arguments…`; records
# "name|backend|upstream requests|upstream bytes|backend CPU seconds|bench line|round".
ROUND=1
scenario() {
  local backend=$1 name=$2 mark out up ticks cpu=
  shift 2
  mark=$(log_lines)
  ticks=$(backend_ticks)
  [ "${COMPARE_STRACE:-}" = "$name" ] && strace_start
  out=$(timeout $((MAX_SECONDS + 180)) "$BUILD/layercache-bench" "$@" "${BENCH_TLS[@]}" \
    --max-seconds "$MAX_SECONDS" 2> "$WORK/bench.err" | head -1) || true
  [ "${COMPARE_STRACE:-}" = "$name" ] && strace_stop "$backend"
  [ -n "$out" ] || out="failed: $(head -c 300 "$WORK/bench.err" | tr '\n' ' ')"
  # (before settle: the backend's CPU while the client ran, not its idle seconds after)
  [ -z "$ticks" ] || cpu=$(awk -v a="$ticks" -v b="$(backend_ticks)" -v hz="$TICKS" \
    'BEGIN { printf "%.2f", (b - a) / hz }')
  settle
  up=$(upstream_since "$mark")
  echo "$name|$backend|${up% *}|${up#* }|$cpu|$out|$ROUND" >> "$RESULTS"
  log "$name $backend: $out; upstream: ${up% *} requests, ${up#* } bytes"
  if [ -s "$WORK/bench.err" ]; then sed 's/^/  /' "$WORK/bench.err" | head -3 >&2; fi
}

# The herd, with layercached's memory sampled every 100 ms, and at the same time the established
# client connections and what its caches hold (metrics: memory cache, block cache, memtables —
# resident memory beyond them is what alert LayercacheHighMemory watches).
herd() {
  local backend=$1 sampler port
  port=${BACKEND_URL##*:}
  if [[ "$backend" == layercache* ]]; then
    local idle
    idle=$(awk '/^VmRSS/ { print $2 }' "/proc/$BACKEND_PID/status")
    (
      for _ in $(seq 3000); do
        rss=$(awk '/^(VmRSS|RssFile)/ { printf "%s ", $2 }' "/proc/$BACKEND_PID/status" \
          2> /dev/null) || break
        conns=$(ss -Htn state established "( sport = :$port )" 2> /dev/null | wc -l)
        held=$(curl -s --max-time 1 "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '
          /^layercache_cache_memory_bytes / { m = $2 }
          /^layercache_cache_write_buffer_bytes / { w = $2 }
          /^layercache_cache_block_cache_bytes / { b = $2 }
          END { if (m == "") exit 1; printf "%d %d %d", m / 1024, w / 1024, b / 1024 }') || {
          sleep 0.1  # no scrape (a loaded machine): no sample, not one with empty caches
          continue
        }
        echo "${rss% * } $conns $held ${rss#* }"
        sleep 0.1
      done
    ) > "$WORK/herd.samples" &
    sampler=$!
    PIDS+=("$sampler")
  fi
  scenario "$backend" herd full --url "$BACKEND_URL/v2/demo/app1/blobs/$HERD_DIGEST" \
    --count "$HERD" --concurrency "$HERD"
  if [[ "$backend" == layercache* ]]; then
    stop_pid "$sampler"
    local peak hwm streams cached memtables beyond files
    read -r peak _ cached _ < <(sort -n "$WORK/herd.samples" | tail -1)
    streams=$(sort -n -k2 "$WORK/herd.samples" | tail -1 | cut -d' ' -f2)
    memtables=$(sort -n -k4 "$WORK/herd.samples" | tail -1 | cut -d' ' -f4)
    # The sample with the most beyond the caches, and how much of it is file-backed (code and
    # libraries, the same in every run: most of the idle figure).
    read -r beyond files < <(awk '{ b = $1 - $3 - $4 - $5; if (b > max) { max = b; f = $6 } }
      END { print max + 0, f + 0 }' "$WORK/herd.samples")
    hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$BACKEND_PID/status")
    MEMORY="layercached resident memory: $((idle / 1024)) MiB idle before the herd,"
    MEMORY+=" peak VmRSS $((peak / 1024)) MiB while serving (up to $streams client"
    MEMORY+=" connections established at once; memory cache $((cached / 1024)) MiB then),"
    MEMORY+=" at most $((beyond / 1024)) MiB beyond the memory cache, block cache and memtables"
    MEMORY+=" ($((files / 1024)) MiB of it file-backed),"
    MEMORY+=" memtables up to $((memtables / 1024)) MiB, VmHWM $((hwm / 1024)) MiB"
    log "$MEMORY"
  fi
}

MEMORY=
wanted() { [[ " $SCENARIOS " == *" $1 "* ]]; }
REVERSED=$(echo "$BACKENDS" | tr ' ' '\n' | tac | xargs)
for ROUND in $(seq "$ROUNDS"); do
  for backend in $([ $((ROUND % 2)) = 1 ] && echo "$BACKENDS" || echo "$REVERSED"); do
    log "--- $backend$([ "$ROUNDS" = 1 ] || echo ", round $ROUND") ---"
    "start_$backend"
    [[ "$backend" == *-tls ]] && tls_info "$backend"
    if wanted pulls; then
      scenario "$backend" cold_pull full --registry "$BACKEND_URL" --image "$IMAGES" --count 1 \
        --concurrency 1 --parallel "$PARALLEL" --verify
      scenario "$backend" warm_pull full --registry "$BACKEND_URL" --image "$IMAGES" \
        --count "$WARM_PULLS" --concurrency "$CLIENTS" --parallel "$PARALLEL"
      scenario "$backend" warm_ranges ranges --registry "$BACKEND_URL" --image "$IMAGES" \
        --range 64KiB --count "$RANGES" --concurrency 8 --seed 1
      restart "$backend"
    fi
    if wanted cold_ranges; then
      scenario "$backend" cold_ranges ranges --registry "$BACKEND_URL" --image "$IMAGES" \
        --range 64KiB --count "$COLD_RANGES" --concurrency 8 --seed 2
      restart "$backend"
    fi
    wanted herd && herd "$backend"
    if [[ "$backend" == layercache* ]] && grep -qs . "$WORK/layercache/layercached.log"; then
      log "layercached log (warn and above):"
      tail -5 "$WORK/layercache/layercached.log" | sed 's/^/  /' >&2
    fi
    stop_pid "$BACKEND_PID"
  done
done

# --- the table ---
commit=$(git rev-parse --short HEAD 2> /dev/null || echo unknown)
git diff --quiet HEAD 2> /dev/null || commit="$commit+uncommitted"
echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM," \
  "load average:$(uptime | sed 's/.*load average://'); commit $commit"
echo "image(s): $NIMAGES × layers $LAYERS (+ config), $IMAGE_BYTES bytes each pull;" \
  "upstream: docker-registry $(docker-registry --version 2> /dev/null | awk '{ print $3 }')" \
  "$([ "$STORAGE" = redirect ] && echo "redirecting blob GETs to an nginx storage host${COMPARE_STORAGE_RANGES:+ (max_ranges $COMPARE_STORAGE_RANGES)}")" \
  "$([ -n "$RTT_MS$BW" ] && echo "behind layercache-throttle: RTT ${RTT_MS:-0} ms, ${BW:-unlimited}/s per connection" || echo "on loopback, no throttle");" \
  "$(nginx -v 2>&1 | sed 's/.*: //'); layercache chunk_size $CHUNK"
echo
awk -F'|' -v image_bytes="$IMAGE_BYTES" -v nimages="$NIMAGES" -v warm_pulls="$WARM_PULLS" \
  -v clients="$CLIENTS" -v herd="$HERD" -v herd_size="$HERD_SIZE" -v ranges="$RANGES" \
  -v cold_ranges="$COLD_RANGES" -v rounds="$ROUNDS" '
function val(line, key,   re, m) {
  re = "(^| )" key "=[^ ]*"
  if (match(line, re)) { m = substr(line, RSTART, RLENGTH); sub(/^ /, "", m); sub(/^[^=]*=/, "", m); return m }
  return ""
}
{
  name[NR] = $1; backend[NR] = $2; up_req[NR] = $3; up_bytes[NR] = $4; cpu[NR] = $5; line[NR] = $6
  round[NR] = $7
  if (rounds > 1) backend[NR] = $2 " #" $7
  if ($2 == "direct") direct[$1, $7] = NR
}
END {
  label["cold_pull"] = "cold pull, 1 client"
  label["warm_pull"] = "warm pull, " warm_pulls " by " clients " clients"
  label["warm_ranges"] = "warm 64 KiB ranges, " ranges
  label["cold_ranges"] = "cold 64 KiB ranges, " cold_ranges
  label["herd"] = "herd: " herd " GETs of 1 cold blob"
  printf "| %-31s | %-17s | %8s | %6s | %7s | %9s | %8s | %8s | %9s | %6s | %8s | %4s | %5s |\n", \
    "scenario", "backend", "s", "GB/s", "req/s", "TTFB p50", "p50 ms", "p99 ms", "vs direct", \
    "up req", "up MiB", "err", "CPU s"
  split("31 17 8 6 7 9 8 8 9 6 8 4 5", width, " ")
  rule = "|"
  for (c = 1; c <= 13; c++) {
    dashes = ""
    for (k = 0; k < width[c] + (c <= 2 ? 2 : 1); k++) dashes = dashes "-"
    rule = rule dashes (c <= 2 ? "" : ":") "|"
  }
  print rule
  for (i = 1; i <= NR; i++) {
    l = line[i]
    if (l ~ /^failed/) {
      printf "| %-31s | %-17s | %s |\n", label[name[i]], backend[i], l
      continue
    }
    secs = val(l, "seconds"); p50 = val(l, "p50_ms")
    primary = (name[i] ~ /ranges/) ? p50 : secs
    ratio = "-"
    if ((name[i], round[i]) in direct) {
      d = line[direct[name[i], round[i]]]
      dp = (name[i] ~ /ranges/) ? val(d, "p50_ms") : val(d, "seconds")
      if (dp + 0 > 0) ratio = sprintf("%.2f", primary / dp)
    }
    printf "| %-31s | %-17s | %8.3f | %6.3f | %7.1f | %9.2f | %8.2f | %8.2f | %9s | %6d | %8.1f | %4d | %5s |\n", \
      label[name[i]], backend[i], secs, val(l, "GB/s"), val(l, "req/s"), val(l, "ttfb_p50_ms"), \
      p50, val(l, "p99_ms"), ratio, up_req[i], up_bytes[i] / 1048576, val(l, "errors"), \
      cpu[i] == "" ? "-" : cpu[i]
  }
}' "$RESULTS"
echo
echo "vs direct: time (pulls, herd) or p50 latency (ranges) relative to the same scenario run"
echo "directly against the upstream; below 1 is faster. up req / up MiB: requests and body bytes"
echo "the upstream served during the scenario (access log). CPU s: user + system seconds of the"
echo "backend's processes while the client ran (the steadier figure on a shared machine). A pull"
echo "moves $IMAGE_BYTES bytes per image; the herd blob has $HERD_SIZE bytes."
[ -n "$MEMORY" ] && echo "$MEMORY"
[ -n "$TLS_INFO" ] && echo "TLS (openssl s_client, the bench's library and defaults): $TLS_INFO"

# --- each pair side by side: layercache ÷ nginx, plain and over TLS, round by round ---
awk -F'|' -v rounds="$ROUNDS" '
function val(line, key,   re, m) {
  re = "(^| )" key "=[^ ]*"
  if (match(line, re)) { m = substr(line, RSTART, RLENGTH); sub(/^ /, "", m); sub(/^[^=]*=/, "", m); return m }
  return ""
}
function ratio(a, b) { return (b + 0 > 0 && a != "") ? sprintf("%.2f", a / b) : "-" }
{ at[$1, $2, $7] = $6; cpu[$1, $2, $7] = $5; if (!($1 in seen)) { seen[$1] = 1; names[++n] = $1 } }
END {
  split("layercache nginx layercache-tls nginx-tls", b, " ")
  out = ""
  for (k = 1; k <= n; k++) {
    s = names[k]
    for (p = 1; p <= 3; p += 2) {
      cells = ""; any = 0
      for (r = 1; r <= rounds; r++) {
        l = at[s, b[p], r]; x = at[s, b[p + 1], r]
        if (l == "" || x == "" || l ~ /^failed/ || x ~ /^failed/) {
          cells = cells sprintf(" | %18s", "-")
          continue
        }
        any = 1
        c = " (" ratio(cpu[s, b[p], r], cpu[s, b[p + 1], r]) ")"
        if (s ~ /ranges/) {
          cells = cells sprintf(" | %18s", ratio(val(l, "p50_ms"), val(x, "p50_ms")) " / " \
            ratio(val(l, "p99_ms"), val(x, "p99_ms")) c)
        } else {
          cells = cells sprintf(" | %18s", ratio(val(l, "seconds"), val(x, "seconds")) c)
        }
      }
      if (any) out = out sprintf("| %-11s | %-26s%s |\n", s, b[p] " / " b[p + 1], cells)
    }
  }
  if (out == "") exit
  head = sprintf("| %-11s | %-26s", "scenario", "pair"); rule = "|-------------|----------------------------"
  for (r = 1; r <= rounds; r++) {
    head = head sprintf(" | %18s", "round " r)
    rule = rule "|-------------------:"
  }
  print ""
  print "Pairs, round by round (the backends of a round run one after the other, every other round"
  print "in reverse order): time / time for pulls and the herd, p50 / p50 and p99 / p99 for ranges;"
  print "in brackets: CPU seconds of the backends, layercache / nginx. Below 1: layercache is faster"
  print "(uses less CPU)."
  print ""
  print head " |"
  print rule "|"
  printf "%s", out
}' "$RESULTS"
exit 0
