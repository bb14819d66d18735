#!/usr/bin/env bash
# The lazy-start scenario (issue 6): a container start's read set — a few hundred ranges over
# the layers of a multi-hundred-MiB image, in a fixed order — replayed by range requests
# through layercache against an upstream behind layercache-throttle (round-trip latency and a
# per-connection byte rate). For each (chunk size, prefetch concurrency):
#
#   direct   the read set straight against the throttled upstream
#   cold     empty store, no profile (eager_layers: never, then auto)
#   second   store emptied of chunks (DELETE /admin/blobs) but the recorded profile kept:
#            the manifest is served, prefetch replays the profile, the reads follow at once
#   warm     every chunk stored
#
# and prefetch precision for the second start (chunk bytes prefetched that the reads used).
# Offline, on 127.0.0.1; bounded (every wait and run has a limit); cleans up on exit.
#
#   bash scripts/lazystart.sh
#
# Knobs (environment): LAYERS (96MiB x 4), READS (300), RTT_MS (30), BW (25MB per connection),
# CHUNKS ("256KiB 1MiB"), PF_CONCURRENCY ("4 16"), CLIENTS (4: reads in flight, like a lazy
# snapshotter's FUSE threads), IO_THREADS (2: cache.io_threads), MAX_IDLE (16: the upstream's
# max_idle_connections), BUILD (build), STORAGE (registry: docker-registry serves the blobs;
# redirect: it answers blob GETs 307 to a storage host — nginx on its storage directory,
# behind a throttle of its own — as Artifact Registry, Docker Hub and ECR do), STORAGE_RANGES
# (with redirect: empty = the storage host answers several ranges in one multipart 206; 1 =
# it answers them with the whole blob, as GCS and S3 do), REDIRECT_REUSE (60s: layercache's
# upstreams[].redirect_reuse).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
LAYERS=${LAYERS:-96MiB,96MiB,96MiB,96MiB}
READS=${READS:-300}
RTT_MS=${RTT_MS:-30}
BW=${BW:-25MB}
CHUNKS=${CHUNKS:-256KiB 1MiB}
PF_CONCURRENCY=${PF_CONCURRENCY:-4 16}
CLIENTS=${CLIENTS:-4}

[ -f "$BUILD/build.ninja" ] ||
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
nice -n 19 cmake --build "$BUILD" -j 2 --target layercached layercache-seed layercache-bench \
  layercache-throttle > /dev/null
STORAGE=${STORAGE:-registry}
tools="docker-registry curl python3"
[ "$STORAGE" = redirect ] && tools="$tools nginx"
for tool in $tools; do
  command -v "$tool" > /dev/null || { echo "lazystart: $tool is needed" >&2; exit 1; }
done

source scripts/lib.sh  # WORK, PIDS, cleanup on exit, wait_http, free_port, stop_pid, start_registry, start_throttle
log() { echo "lazystart: $*" >&2; }

# --- upstream: docker-registry seeded with one image, behind the throttle ---
if [ "$STORAGE" = redirect ]; then
  start_storage_host storage "$WORK/upstream" "${STORAGE_RANGES:-}"
  start_throttle "$RTT_MS" "$BW" "$STORAGE_PORT" storage-throttle
  start_registry upstream "" "$THROTTLE_URL"
else
  start_registry upstream
fi
DIGEST=$("$BUILD/layercache-seed" --registry "http://127.0.0.1:$REGISTRY_PORT" --repo lazy/app \
  --tag v1 --layers "$LAYERS" --seed 6)
start_throttle "$RTT_MS" "$BW"

# --- the read set: per layer its tar header, then "files" read front to back in 16-128 KiB
# pieces; files of all layers interleaved in a fixed pseudo-random order ---
curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
  "http://127.0.0.1:$REGISTRY_PORT/v2/lazy/app/manifests/v1" > "$WORK/manifest.json"
python3 - "$WORK/manifest.json" "$READS" > "$WORK/reads" << 'PY'
import json, random, sys
m = json.load(open(sys.argv[1]))
reads_wanted = int(sys.argv[2])
rng = random.Random(6)
layers = [(l["digest"], l["size"]) for l in m["layers"]]
files = []
for d, size in layers:
    files.append([(d, 0, 4096)])  # the tar header
for _ in range(reads_wanted):
    d, size = rng.choice(layers)
    pieces = rng.randint(1, 6)
    off = rng.randrange(0, size - 1024 * 1024)
    f = []
    for _ in range(pieces):
        n = rng.choice([16, 32, 64, 128]) * 1024
        f.append((d, off, n))
        off += n
    files.append(f)
rng.shuffle(files[len(layers):])
out = [r for f in files for r in f][:reads_wanted]
for d, off, n in out:
    print(d, off, n)
PY
READ_BYTES=$(awk '{ s += $3 } END { print s }' "$WORK/reads")
log "image $DIGEST ($LAYERS), $(wc -l < "$WORK/reads") reads of $((READ_BYTES / 1024)) KiB in all"

replay() {  # url → seconds (errors make the run fail)
  "$BUILD/layercache-bench" replay --registry "$1" --repo lazy/app --read-set "$WORK/reads" \
    --concurrency "$CLIENTS" --max-seconds 600 --json > "$WORK/replay.json"
  python3 - "$WORK/replay.json" << 'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["scenarios"][0]
if s.get("errors", 0):
    sys.exit("replay errors: %s" % s.get("first_error", "?"))
print("%.3f" % r["seconds"])
PY
}

metric() {  # name → value from layercached's /metrics (0 when absent)
  curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" |
    awk -v n="$1" '$1 == n { print $2; found = 1 } END { if (!found) print 0 }'
}

LC_PID=
start_layercache() {  # chunk size, prefetch concurrency, eager mode, fresh store (yes|no)
  local dir=$WORK/lc
  [ "$4" = yes ] && rm -rf "$dir"
  mkdir -p "$dir"
  LC_PORT=$(free_port)
  ADMIN_PORT=$(free_port)
  cat > "$dir/layercache.yaml" << YML
server:
  listen:
    - address: 127.0.0.1:$LC_PORT
admin:
  address: 127.0.0.1:$ADMIN_PORT
log:
  level: warn
  access: false
cache:
  path: $dir/cache
  capacity: 8GiB
  chunk_size: $1
  complete_partial: false
  io_threads: ${IO_THREADS:-2}
prefetch:
  window: 10s
  concurrency: $2
  eager_layers: $3
upstreams:
  - name: lazy
    url: $UPSTREAM
    default: true
    max_idle_connections: ${MAX_IDLE:-16}
    redirect_reuse: ${REDIRECT_REUSE:-60s}
YML
  "$BUILD/layercached" --config "$dir/layercache.yaml" > "$dir/layercached.log" 2>&1 &
  LC_PID=$!
  PIDS+=("$LC_PID")
  wait_http "http://127.0.0.1:$LC_PORT/v2/"
}

get_manifest() {
  curl -sf -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://127.0.0.1:$LC_PORT/v2/lazy/app/manifests/v1"
}

wait_profile() {  # until the profile is saved (at most 60 s)
  for _ in $(seq 600); do
    curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/admin/profiles/$DIGEST" && return 0
    sleep 0.1
  done
  log "no profile was saved"
  return 1
}

wait_prefetch_idle() {  # until no prefetch job waits and no fill runs (at most ~120 s)
  for _ in $(seq 3000); do
    [ "$(metric layercache_prefetch_queue_depth)" = 0 ] &&
      [ "$(metric layercache_cache_fills_in_flight)" = 0 ] && return 0
    sleep 0.02
  done
}

DIRECT=$(replay "$UPSTREAM")
log "direct: $DIRECT s"
RESULTS=$WORK/results
: > "$RESULTS"
for chunk in $CHUNKS; do
  for conc in $PF_CONCURRENCY; do
    start_layercache "$chunk" "$conc" auto yes
    get_manifest
    cold_auto=$(replay "http://127.0.0.1:$LC_PORT")
    stop_pid "$LC_PID"

    start_layercache "$chunk" "$conc" never yes
    get_manifest
    cold=$(replay "http://127.0.0.1:$LC_PORT")
    wait_profile
    curl -sf -o /dev/null -X DELETE -H "Content-Type: application/json" \
      "http://127.0.0.1:$ADMIN_PORT/admin/blobs"
    fetched0=$(metric layercache_prefetch_fetched_bytes_total)
    used0=$(metric layercache_prefetch_used_bytes_total)
    get_manifest
    second=$(replay "http://127.0.0.1:$LC_PORT")
    wait_prefetch_idle
    fetched=$(metric layercache_prefetch_fetched_bytes_total)
    used=$(metric layercache_prefetch_used_bytes_total)
    warm=$(replay "http://127.0.0.1:$LC_PORT")
    # The prefetch alone: chunks emptied again, the manifest served, no reads; until idle.
    curl -sf -o /dev/null -X DELETE -H "Content-Type: application/json" \
      "http://127.0.0.1:$ADMIN_PORT/admin/blobs"
    t0=$(date +%s.%N)
    get_manifest
    sleep 0.05
    wait_prefetch_idle
    alone=$(python3 -c "import sys; print('%.3f' % (float(sys.argv[2]) - float(sys.argv[1])))" \
      "$t0" "$(date +%s.%N)")
    stop_pid "$LC_PID"
    log "prefetch alone: $alone s"
    log "chunk $chunk, prefetch concurrency $conc: cold $cold s (eager $cold_auto s), second $second s, warm $warm s"
    echo "$chunk $conc $cold_auto $cold $second $warm $fetched0 $fetched $used0 $used $alone" >> "$RESULTS"
  done
done

echo
echo "lazy start: $(wc -l < "$WORK/reads") reads, $((READ_BYTES / 1024)) KiB, $CLIENTS in flight;" \
  "image $LAYERS; upstream behind layercache-throttle, RTT $RTT_MS ms, $BW/s per connection;" \
  "blobs from ${STORAGE}${STORAGE_RANGES:+ (max_ranges $STORAGE_RANGES)}," \
  "redirect_reuse ${REDIRECT_REUSE:-60s}; direct $DIRECT s"
python3 - "$RESULTS" "$DIRECT" "$READ_BYTES" << 'PY'
import sys
direct = float(sys.argv[2])
read_bytes = float(sys.argv[3])
print("| chunk | prefetch conc. | cold, eager auto (s) | cold, no eager (s) | second start (s) | warm (s) | cold ÷ second | second ÷ warm | prefetched MiB | chunk precision | byte precision | prefetch alone (s) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    chunk, conc, ca, c, s, w, f0, f, u0, u, alone = line.split()
    ca, c, s, w = map(float, (ca, c, s, w))
    fetched = float(f) - float(f0)
    used = float(u) - float(u0)
    prec = used / fetched if fetched else 0
    bprec = read_bytes / fetched if fetched else 0
    print(f"| {chunk} | {conc} | {ca:.2f} | {c:.2f} | {s:.2f} | {w:.2f} | {c / s:.1f}× | {s / w:.2f}× | {fetched / 2**20:.1f} | {prec:.0%} | {bprec:.0%} | {float(alone):.2f} |")
PY
