#!/usr/bin/env bash
# Time to start (issue 19, part 3; docs/benchmarks.md): the time from "pull" to a container's
# exit, for one image and one command, with the upstream (a local docker-registry) behind
# layercache-throttle (round trip and bytes/s per connection, like a distant registry):
#
#   a        full pull + overlayfs, direct: `ctr images pull` from the throttled registry,
#            then `ctr run` (containerd's default snapshotter)
#   b-cold   the same through layercache, fresh store
#   b-warm   the same again, same store (layercached restarted on it)
#   c        stargz lazy, direct: `ctr-remote images rpull` + `ctr run --snapshotter stargz`,
#            layercache-stargz pointed at the throttled registry
#   d        stargz through layercache, fresh store (its profile is recorded)
#   e        a second start on a fresh node: fresh store, d's profile imported
#            (PUT /admin/profiles/<manifest digest>) before the pull
#   f        warm: d's store (layercached restarted on it), fresh containerd + snapshotter
#   p        as e, and the start preloaded at the node's boot: `POST /admin/preload` with
#            "what": "start" (layercachectl preload --start) after the import, before
#            containerd and the snapshotter start (the clock starts at the pull, as for all)
#   q        as e, and the start preloaded at the pull's start (sent as the clock starts,
#            beside the rpull: a node whose job arrives the moment it boots)
#
# and d, e, f again for the same command in two images 4× larger: "big" (7 layers: the 4
# layers with twice the unread bytes, plus 3 layers of unread bytes) and "fat" (the same 4
# layers, the unread file of each 4× larger): the moonshot, start time independent of image
# size.
#
# Every start is on a fresh node: its own containerd (root, state, content store) and, for
# lazy starts, its own layercache-stargz (FUSE mounts), started before the clock starts and
# stopped (by PID, FUSE layers unmounted) after it stops; layercached is started for each run
# and stopped after it. The image (busybox from busybox-static, small files the container
# reads, large incompressible files it does not) is generated here, converted to eStargz with
# `ctr-remote images convert --estargz --oci` and pushed to the registry, as
# tests/e2e/lazy_test.cpp does. The container prints the files' checksums; each run's output
# is checked. Printed: a markdown table (medians, min–max, the issue's ratios) and, for the
# lazy starts through layercache, where the time went (from layercached's access log: the
# tag's HEAD, the mounts, local work before the first read and after the last, misses). Scenarios run interleaved (a, b, c, d, f, e, p, q, then d, f, e, p, q of each 4× image;
# RUNS rounds), so a change of load on the machine touches all of them alike. Needs root and
# /dev/fuse. Offline, on 127.0.0.1; bounded (every wait and command has a limit); cleans up
# on exit.
#
#   sudo bash scripts/timetostart.sh            # or: make timetostart
#
# Knobs (environment): RUNS (5), RTT_MS (30), BW (25MB: per connection), BIG_MIB (96: the
# unread file of each data layer; the image is ~3×BIG_MIB, the 4× ones ~12×BIG_MIB),
# SCENARIOS ("a b c d e f p q"), MOONSHOT (1: the 4× images' d, e, f), MODE (lazy: layercache's
# top-level `mode`, which sets chunk_size 256KiB, complete_partial false, eager_layers never,
# prefetch.quiet 3s; docs/configuration.md "mode"), CHUNK (cache.chunk_size), COMPLETE_PARTIAL,
# EAGER (prefetch.eager_layers), QUIET (prefetch.quiet): each unset = as MODE sets it, BG_FETCH (1: the snapshotter's background fetch, as its default; 0: -no-background-fetch),
# ESTARGZ_LEVEL (9: ctr-remote's default gzip level), KEEP (0; 1: keep the work directory
# with every run's logs), BUILD (build).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
RUNS=${RUNS:-5}
RTT_MS=${RTT_MS:-30}
BW=${BW:-25MB}
BIG_MIB=${BIG_MIB:-96}
SCENARIOS=${SCENARIOS:-a b c d e f p q}
MOONSHOT=${MOONSHOT:-1}
MODE=${MODE:-lazy}
CHUNK=${CHUNK:-}
COMPLETE_PARTIAL=${COMPLETE_PARTIAL:-}
EAGER=${EAGER:-}
QUIET=${QUIET:-}
BG_FETCH=${BG_FETCH:-1}
ESTARGZ_LEVEL=${ESTARGZ_LEVEL:-9}
KEEP=${KEEP:-0}
STEP_TIMEOUT=300  # seconds, each ctr command

log() { echo "timetostart: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (containerd, FUSE mounts)"
if ! [ -r /dev/fuse ] || ! [ -w /dev/fuse ]; then die "no usable /dev/fuse"; fi
[ -x /bin/busybox ] || die "/bin/busybox is missing (Debian: busybox-static)"
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
for tool in containerd ctr ctr-remote runc docker-registry curl python3 setpriv tar \
  sha256sum findmnt; do
  command -v "$tool" > /dev/null ||
    die "$tool is needed (Debian: containerd, runc, stargz-snapshotter, docker-registry; scripts/install-runtimes.sh)"
done
# Nothing leaves the machine: a request that is not to loopback fails at once.
export HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9
export http_proxy=$HTTP_PROXY https_proxy=$HTTPS_PROXY
export NO_PROXY=127.0.0.1,localhost,::1 no_proxy=127.0.0.1,localhost,::1

[ -f "$BUILD/build.ninja" ] ||
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
nice -n 19 cmake --build "$BUILD" -j "${BUILD_JOBS:-2}" --target layercached layercache-seed \
  layercache-throttle > /dev/null
# The snapshotter's target exists only where go and the library were there at configure time.
nice -n 19 cmake --build "$BUILD" -j "${BUILD_JOBS:-2}" --target layercache_stargz > /dev/null 2>&1 ||
  true
STARGZ=$BUILD/snapshotter/layercache-stargz
[ -x "$STARGZ" ] || die "$STARGZ was not built (needs golang-go and golang-github-containerd-stargz-snapshotter-dev)"

source scripts/lib.sh  # WORK, PIDS, wait_http, free_port, stop_pid, start_registry, start_throttle

forget_pid() {  # drop a stopped PID from PIDS, so cleanup never signals a reused one
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

unmount_under() {  # every mount at or under $1, deepest first (FUSE layers, rootfs, shm)
  local m mp
  for _ in 1 2 3; do
    m=$(awk -v p="$1" '$5 == p || index($5, p "/") == 1 { print length($5), $5 }' \
      /proc/self/mountinfo | sort -rn | cut -d' ' -f2-)
    [ -n "$m" ] || return 0
    while IFS= read -r mp; do umount -l "$mp" 2> /dev/null || true; done <<< "$m"
  done
}

# --- a node: layercache-stargz (lazy runs) and a containerd using it, in $WORK/node ---
NODE=$WORK/node
CTRD_PID=
SNAP_PID=
ctrx() {  # ctr or ctr-remote ($1) against the node's containerd, bounded
  local prog=$1
  shift
  timeout "$STEP_TIMEOUT" "$prog" --address "$NODE/containerd.sock" --namespace ttsbench "$@"
}

start_node() {  # $1 = lazy (with layercache-stargz) | full (containerd's overlayfs only)
  rm -rf --one-file-system "$NODE"
  mkdir -p "$NODE"
  local plugin=
  if [ "$1" = lazy ]; then
    local args=(-root "$NODE/stargz" -address "$NODE/stargz.sock" -log-level info)
    [ "$BG_FETCH" = 1 ] || args+=(-no-background-fetch)
    # --pdeathsig TERM: if this script dies, the snapshotter still unmounts its layers.
    setpriv --pdeathsig TERM "$STARGZ" "${args[@]}" > "$NODE/snapshotter.log" 2>&1 &
    SNAP_PID=$!
    PIDS+=("$SNAP_PID")
    for _ in $(seq 300); do
      [ -S "$NODE/stargz.sock" ] && break
      kill -0 "$SNAP_PID" 2> /dev/null || break
      sleep 0.1
    done
    [ -S "$NODE/stargz.sock" ] || { cat "$NODE/snapshotter.log" >&2; die "layercache-stargz did not come up"; }
    plugin="[proxy_plugins.stargz]
  type = \"snapshot\"
  address = \"$NODE/stargz.sock\""
  fi
  cat > "$NODE/config.toml" << TOML
version = 2
root = "$NODE/root"
state = "$NODE/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$NODE/containerd.sock"
[ttrpc]
  address = "$NODE/containerd.sock.ttrpc"
[debug]
  address = "$NODE/debug.sock"
$plugin
TOML
  containerd --config "$NODE/config.toml" > "$NODE/containerd.log" 2>&1 &
  CTRD_PID=$!
  PIDS+=("$CTRD_PID")
  for _ in $(seq 150); do
    timeout 10 ctr --address "$NODE/containerd.sock" version > /dev/null 2>&1 && return 0
    kill -0 "$CTRD_PID" 2> /dev/null || break
    sleep 0.2
  done
  cat "$NODE/containerd.log" >&2
  die "containerd did not come up"
}

stop_node() {  # $1 = where to keep the node's logs
  if [ -n "$CTRD_PID" ]; then
    # A run that failed may have left its task (and shim) behind: kill and delete it.
    for id in $(ctrx ctr tasks ls -q 2> /dev/null); do
      ctrx ctr tasks kill -s KILL "$id" > /dev/null 2>&1 || true
      ctrx ctr tasks rm -f "$id" > /dev/null 2>&1 || true
    done
    stop_pid "$CTRD_PID"
    forget_pid "$CTRD_PID"
    CTRD_PID=
  fi
  if [ -n "$SNAP_PID" ]; then
    stop_pid "$SNAP_PID"  # SIGTERM: it unmounts its FUSE layers
    forget_pid "$SNAP_PID"
    SNAP_PID=
  fi
  unmount_under "$NODE"
  if [ -n "${1:-}" ]; then
    mkdir -p "$1"
    cp "$NODE"/*.log "$1/" 2> /dev/null || true
  fi
  if findmnt -rn -o TARGET | grep -q "^$NODE"; then
    log "mounts left under $NODE; not removing it"
    return 1
  fi
  rm -rf --one-file-system "$NODE"
}

# --- layercached: one per run, store $1, fresh ($2 = yes) or as left by an earlier run ---
LC_PID=
start_lc() {
  local dir=$1
  [ "$2" = yes ] && rm -rf "$dir"
  mkdir -p "$dir"
  LC_PORT=$(free_port)
  ADMIN_PORT=$(free_port)
  cat > "$dir/layercache.yaml" << YML
mode: $MODE
server:
  listen:
    - address: 127.0.0.1:$LC_PORT
admin:
  address: 127.0.0.1:$ADMIN_PORT
log:
  level: warn
  access: true
cache:
  path: $dir/cache
  capacity: 8GiB
$([ -n "$CHUNK" ] && echo "  chunk_size: $CHUNK")
$([ -n "$COMPLETE_PARTIAL" ] && echo "  complete_partial: $COMPLETE_PARTIAL")
prefetch:
  enabled: true
$([ -n "$EAGER" ] && echo "  eager_layers: $EAGER")
$([ -n "$QUIET" ] && echo "  quiet: $QUIET")
upstreams:
  - name: origin
    url: $UPSTREAM
    default: true
YML
  "$BUILD/layercached" --config "$dir/layercache.yaml" >> "$dir/layercached.log" 2>&1 &
  LC_PID=$!
  PIDS+=("$LC_PID")
  wait_http "http://127.0.0.1:$LC_PORT/v2/"
  wait_http "http://127.0.0.1:$ADMIN_PORT/readyz"
}
stop_lc() {  # SIGTERM: open recording windows are saved into profiles
  [ -n "$LC_PID" ] || return 0
  stop_pid "$LC_PID"
  forget_pid "$LC_PID"
  LC_PID=
}

cleanup() {
  set +e
  stop_node ""
  stop_lc
  for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2> /dev/null; done
  unmount_under "$WORK"
  if [ "$KEEP" = 1 ]; then
    log "kept $WORK"
  elif findmnt -rn -o TARGET | grep -q "^$WORK"; then
    log "mounts left under $WORK; not removing it"
  else
    rm -rf --one-file-system "$WORK"
  fi
}

# --- the upstream: docker-registry with an access log, behind the throttle ---
start_registry upstream "formatter: text, accesslog: {disabled: false}"
REGISTRY=127.0.0.1:$REGISTRY_PORT
start_throttle "$RTT_MS" "$BW"
THROTTLED=${UPSTREAM#http://}

# --- the images: generated as an OCI layout, imported into a converter containerd,
# converted to eStargz, pushed ---
ARCH=$(dpkg --print-architecture 2> /dev/null || echo amd64)
GEN=$WORK/gen
mkdir -p "$GEN"
# The files the container reads (the same in both images) and their expected checksums.
mkdir -p "$GEN/read/etc/lazy" "$GEN/read/data/1" "$GEN/read/data/2" "$GEN/read/data/3"
echo "hello from a lazily pulled layer" > "$GEN/read/etc/lazy/hello.txt"
head -c $((64 * 1024)) /dev/urandom > "$GEN/read/data/1/small.bin"
head -c $((300 * 1024)) /dev/urandom > "$GEN/read/data/2/small.bin"
head -c $((3 * 1024 * 1024)) /dev/urandom > "$GEN/read/data/2/medium.bin"
head -c $((128 * 1024)) /dev/urandom > "$GEN/read/data/3/small.bin"
head -c $((4 * 1024 * 1024)) /dev/urandom > "$GEN/read/data/3/medium.bin"
READ_FILES=(/etc/lazy/hello.txt /data/1/small.bin /data/2/small.bin /data/2/medium.bin
  /data/3/small.bin /data/3/medium.bin)
(cd "$GEN/read" && for f in "${READ_FILES[@]}"; do sha256sum ".$f" | sed 's|  \./|  /|'; done) \
  > "$GEN/expected"
READ_BYTES=$(cd "$GEN/read" && cat "${READ_FILES[@]/#/.}" | wc -c)

# A layer directory: $1 = name; then path=SOURCE (a file from read/) or path=@MIB (random).
layer_dir() {
  local d=$GEN/dirs/$1 spec path src
  shift
  rm -rf "$d"
  mkdir -p "$d"
  for spec in "$@"; do
    path=${spec%%=*}
    src=${spec#*=}
    mkdir -p "$d/$(dirname "$path")"
    if [ "${src#@}" != "$src" ]; then
      head -c $((${src#@} * 1024 * 1024)) /dev/urandom > "$d/$path"
    else
      cp -p "$src" "$d/$path"
    fi
  done
}
tar_dir() {  # $1 = layer dir name → $GEN/layers/$1.tar
  mkdir -p "$GEN/layers"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$GEN/dirs/$1" \
    -cf "$GEN/layers/$1.tar" .
  rm -rf "$GEN/dirs/$1"
}

# oci_layout NAME LAYER…: an OCI image layout $GEN/NAME (uncompressed layers, ref name "src").
oci_layout() {
  local name=$1
  shift
  python3 - "$GEN/$name" "$ARCH" "${@/#/$GEN/layers/}" << 'PY'
import hashlib, json, os, sys
out, arch, layers = sys.argv[1], sys.argv[2], [l + ".tar" for l in sys.argv[3:]]
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)
def put(data=None, path=None):
    h = hashlib.sha256()
    if path:
        with open(path, "rb") as f:
            for b in iter(lambda: f.read(1 << 20), b""):
                h.update(b)
        size = os.path.getsize(path)
        os.rename(path, os.path.join(blobs, h.hexdigest()))
    else:
        h.update(data)
        size = len(data)
        with open(os.path.join(blobs, h.hexdigest()), "wb") as f:
            f.write(data)
    return "sha256:" + h.hexdigest(), size
descs = []
for l in layers:
    d, s = put(path=l)
    descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s})
config = json.dumps({"architecture": arch, "os": "linux", "config": {"Env": ["PATH=/bin"]},
                     "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in descs]}}).encode()
cd, cs = put(data=config)
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": cd, "size": cs},
                       "layers": descs}).encode()
md, ms = put(data=manifest)
with open(os.path.join(out, "oci-layout"), "w") as f:
    f.write('{"imageLayoutVersion":"1.0.0"}')
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
        "annotations": {"org.opencontainers.image.ref.name": "src"}}]}, f)
PY
}

# to_estargz NAME REPO: import the layout, convert, push REGISTRY/REPO:esgz (not throttled).
to_estargz() {
  local src=$REGISTRY/$2:src dst=$REGISTRY/$2:esgz
  tar -C "$GEN/$1" -cf - . | ctrx ctr images import --base-name "$REGISTRY/$2" --no-unpack - \
    > "$GEN/import.log" 2>&1 || { cat "$GEN/import.log" >&2; die "import of $1 failed"; }
  rm -rf "${GEN:?}/$1"
  ctrx ctr-remote images convert --estargz --oci --estargz-compression-level "$ESTARGZ_LEVEL" \
    "$src" "$dst" > "$GEN/convert.log" 2>&1 || { cat "$GEN/convert.log" >&2; die "convert failed"; }
  ctrx ctr-remote images push --plain-http "$dst" > "$GEN/push.log" 2>&1 ||
    { cat "$GEN/push.log" >&2; die "push failed"; }
  ctrx ctr images rm "$src" "$dst" > /dev/null 2>&1 || true
}

manifest_of() {  # repo → the esgz manifest (OCI) from the registry
  curl -sf --max-time 30 -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$REGISTRY/v2/$1/manifests/esgz"
}
digest_of() {
  curl -sfI --max-time 30 -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$REGISTRY/v2/$1/manifests/esgz" |
    tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" { print $2 }'
}
layer_bytes() {  # repo → "layers bytes" of its esgz manifest
  manifest_of "$1" | python3 -c '
import json, sys
m = json.load(sys.stdin)
print(len(m["layers"]), sum(l["size"] for l in m["layers"]))'
}

t_prep=$(date +%s)
STEP_TIMEOUT=1200  # import, convert, push of a 1.2 GB image on a loaded machine
log "generating the images (data layers of $BIG_MIB MiB unread + the files read$(
  [ "$MOONSHOT" = 1 ] && echo "; 4×: $((2 * BIG_MIB)) MiB × 6 and $((4 * BIG_MIB)) MiB × 3")) and converting them"
R=$GEN/read
layer_dir base0 bin/busybox=/bin/busybox etc/lazy/hello.txt="$R/etc/lazy/hello.txt"
layer_dir base1 data/1/big.bin=@"$BIG_MIB" data/1/small.bin="$R/data/1/small.bin"
layer_dir base2 data/2/big.bin=@"$BIG_MIB" data/2/small.bin="$R/data/2/small.bin" \
  data/2/medium.bin="$R/data/2/medium.bin"
layer_dir base3 data/3/big.bin=@"$BIG_MIB" data/3/small.bin="$R/data/3/small.bin" \
  data/3/medium.bin="$R/data/3/medium.bin"
for l in base0 base1 base2 base3; do tar_dir $l; done
start_node full
oci_layout app base0 base1 base2 base3
to_estargz app lazy/app
if [ "$MOONSHOT" = 1 ]; then
  # big: the same files read, in layers with twice the unread bytes, plus three layers of
  # unread bytes only (7 layers, ~4× the bytes). fat: the same 4 layers, each unread file 4×.
  B2=$((2 * BIG_MIB))
  B4=$((4 * BIG_MIB))
  layer_dir big0 bin/busybox=/bin/busybox etc/lazy/hello.txt="$R/etc/lazy/hello.txt"
  layer_dir big1 data/1/big.bin=@$B2 data/1/small.bin="$R/data/1/small.bin"
  layer_dir big2 data/2/big.bin=@$B2 data/2/small.bin="$R/data/2/small.bin" \
    data/2/medium.bin="$R/data/2/medium.bin"
  layer_dir big3 data/3/big.bin=@$B2 data/3/small.bin="$R/data/3/small.bin" \
    data/3/medium.bin="$R/data/3/medium.bin"
  layer_dir big4 data/4/unread.bin=@$B2
  layer_dir big5 data/5/unread.bin=@$B2
  layer_dir big6 data/6/unread.bin=@$B2
  for l in big0 big1 big2 big3 big4 big5 big6; do tar_dir $l; done
  oci_layout big big0 big1 big2 big3 big4 big5 big6
  to_estargz big lazy/big
  layer_dir fat0 bin/busybox=/bin/busybox etc/lazy/hello.txt="$R/etc/lazy/hello.txt"
  layer_dir fat1 data/1/big.bin=@$B4 data/1/small.bin="$R/data/1/small.bin"
  layer_dir fat2 data/2/big.bin=@$B4 data/2/small.bin="$R/data/2/small.bin" \
    data/2/medium.bin="$R/data/2/medium.bin"
  layer_dir fat3 data/3/big.bin=@$B4 data/3/small.bin="$R/data/3/small.bin" \
    data/3/medium.bin="$R/data/3/medium.bin"
  for l in fat0 fat1 fat2 fat3; do tar_dir $l; done
  oci_layout fat fat0 fat1 fat2 fat3
  to_estargz fat lazy/fat
fi
stop_node ""
rm -rf "$GEN/dirs" "$GEN/layers"
APP_DIGEST=$(digest_of lazy/app)
read -r APP_LAYERS APP_BYTES <<< "$(layer_bytes lazy/app)"
[ -n "$APP_DIGEST" ] || die "no eStargz manifest of lazy/app in the registry"
log "lazy/app:esgz $APP_DIGEST: $APP_LAYERS layers, $APP_BYTES bytes"
if [ "$MOONSHOT" = 1 ]; then
  BIG_DIGEST=$(digest_of lazy/big)
  read -r BIG_LAYERS BIG_BYTES <<< "$(layer_bytes lazy/big)"
  log "lazy/big:esgz $BIG_DIGEST: $BIG_LAYERS layers, $BIG_BYTES bytes"
  FAT_DIGEST=$(digest_of lazy/fat)
  read -r FAT_LAYERS FAT_BYTES <<< "$(layer_bytes lazy/fat)"
  log "lazy/fat:esgz $FAT_DIGEST: $FAT_LAYERS layers, $FAT_BYTES bytes"
fi
log "images prepared in $(($(date +%s) - t_prep)) s; $READ_BYTES bytes read by the container"
STEP_TIMEOUT=300

# --- one timed start ---
upstream_mark() { wc -l < "$WORK/upstream.log"; }
upstream_since() {  # a mark → "blob requests, blob body bytes" the registry served since
  tail -n +"$(($1 + 1))" "$WORK/upstream.log" |
    awk '/^[0-9.]+ - - \[/ && $7 ~ /\/blobs\// { n++; if ($10 ~ /^[0-9]+$/) b += $10 }
      END { printf "%d %.0f\n", n, b }'
}
now() { date +%s.%N; }
secs() { python3 -c 'import sys; print("%.3f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$1" "$2"; }

RESULTS=$WORK/results
: > "$RESULTS"
RUN_N=0
# timed_start SCENARIO IMAGE-KEY lazy|full REF: pull + run on the node, checks the output,
# appends "scenario image seconds pull_s run_s" (the upstream columns come from record()).
timed_start() {
  local scenario=$1 key=$2 mode=$3 ref=$4 t0 t1 t2 id
  RUN_N=$((RUN_N + 1))
  id=tts-$RUN_N
  local out=$WORK/logs/$RUN_N-$key-$scenario
  mkdir -p "$out"
  # The clock runs from the pull's start until `ctr run` returns: the task has exited and
  # been deleted. No --rm: removing the container and its snapshot is not part of the start
  # (they go with the node).
  t0=$(now)
  PRELOAD_PID=
  if [ -n "${PRELOAD_AT_T0:-}" ]; then
    preload_start "$PRELOAD_AT_T0" "$out/preload.json" &
    PRELOAD_PID=$!
  fi
  if [ "$mode" = lazy ]; then
    ctrx ctr-remote images rpull --plain-http "$ref" > "$out/pull.log" 2>&1 ||
      { cat "$out/pull.log" "$NODE/snapshotter.log" >&2; die "$scenario: rpull failed"; }
    t1=$(now)
    ctrx ctr run --snapshotter stargz "$ref" "$id" /bin/busybox sha256sum "${READ_FILES[@]}" \
      > "$out/output" 2>&1 || { cat "$out/output" >&2; die "$scenario: run failed"; }
  else
    ctrx ctr images pull --plain-http "$ref" > "$out/pull.log" 2>&1 ||
      { tail -5 "$out/pull.log" >&2; die "$scenario: pull failed"; }
    t1=$(now)
    ctrx ctr run "$ref" "$id" /bin/busybox sha256sum "${READ_FILES[@]}" \
      > "$out/output" 2>&1 || { cat "$out/output" >&2; die "$scenario: run failed"; }
  fi
  t2=$(now)
  tr -d '\r' < "$out/output" | diff -q - "$GEN/expected" > /dev/null ||
    { cat "$out/output" >&2; die "$scenario: the container printed wrong checksums"; }
  echo "pull_start $t0 run_start $t1 exit $t2" > "$out/times"
  LAST="$scenario $key $(secs "$t0" "$t2") $(secs "$t0" "$t1") $(secs "$t1" "$t2")"
  LAST_LOGS=$out
}
record() {  # $1 = upstream mark before the node started; appends LAST + upstream figures
  echo "$LAST $(upstream_since "$1")" >> "$RESULTS"
  log "run $RUN_N: $(tail -1 "$RESULTS")"
}

# direct: a node against the throttled registry
run_direct() {  # scenario key mode repo
  local mark
  start_node "$3"
  mark=$(upstream_mark)
  timed_start "$1" "$2" "$3" "$THROTTLED/$4:esgz"
  stop_node "$LAST_LOGS"
  record "$mark"
}
# preload_start REF FILE: what a start of REF (at the upstream) reads, as its profile says
preload_start() {
  curl -sf --max-time 30 -o "$2" -X POST -H "Content-Type: application/json" \
    --data "{\"reference\": \"$1\", \"upstream\": \"origin\", \"what\": \"start\"}" \
    "http://127.0.0.1:$ADMIN_PORT/admin/preload"
}
# through layercache: store $5, fresh ($6); $7 = a profile file to import first, $9 = when
# to preload the start: boot (before the node starts) or t0 (as the clock starts)
run_lc() {  # scenario key mode repo store fresh [profile digest [boot|t0]]
  local mark
  start_lc "$5" "$6"
  if [ -n "${7:-}" ]; then
    curl -sf --max-time 30 -o /dev/null -X PUT -H "Content-Type: application/json" --data-binary "@$7" \
      "http://127.0.0.1:$ADMIN_PORT/admin/profiles/$8" || die "$1: profile import refused"
  fi
  if [ "${9:-}" = boot ]; then
    preload_start "$4:esgz" "$WORK/preload.json" || die "$1: preload of the start refused"
  fi
  start_node "$3"
  mark=$(upstream_mark)
  PRELOAD_AT_T0=
  [ "${9:-}" = t0 ] && PRELOAD_AT_T0="$4:esgz"
  timed_start "$1" "$2" "$3" "127.0.0.1:$LC_PORT/$4:esgz"
  PRELOAD_AT_T0=
  if [ -n "${PRELOAD_PID:-}" ]; then  # the preload sent at t0 (curl: 30 s at most)
    wait "$PRELOAD_PID" || die "$1: preload of the start refused"
  fi
  stop_node "$LAST_LOGS"
  stop_lc
  cp "$5/layercached.log" "$LAST_LOGS/" 2> /dev/null || true
  : > "$5/layercached.log"
  record "$mark"
}
export_profile() {  # store, digest, file: the profile d recorded (saved when d's layercached stopped)
  start_lc "$1" no
  curl -sf --max-time 30 "http://127.0.0.1:$ADMIN_PORT/admin/profiles/$2" > "$3" ||
    die "no profile of $2 was recorded"
  stop_lc
  : > "$1/layercached.log"
  python3 -c '
import json, sys
p = json.load(open(sys.argv[1]))
e = p["entries"]
print("profile: %d entries, %d bytes" % (len(e), sum(x["length"] for x in e)))' "$3" >&2
}

has() { [[ " $SCENARIOS " == *" $1 "* ]]; }
lazy_set() {  # key repo digest: d, then f on d's store, then e (fresh store, d's profile)
  local key=$1 repo=$2 digest=$3
  local store=$WORK/lc-$key
  has d || has e || has f || has p || has q || return 0
  run_lc d "$key" lazy "$repo" "$store" yes
  if has e || has f || has p || has q; then
    export_profile "$store" "$digest" "$WORK/profile-$key.json"
    cp "$WORK/profile-$key.json" "$LAST_LOGS/profile.json"
    has f && run_lc f "$key" lazy "$repo" "$store" no
    has e && run_lc e "$key" lazy "$repo" "$WORK/lc-$key-e" yes "$WORK/profile-$key.json" "$digest"
    has p && run_lc p "$key" lazy "$repo" "$WORK/lc-$key-e" yes "$WORK/profile-$key.json" "$digest" boot
    has q && run_lc q "$key" lazy "$repo" "$WORK/lc-$key-e" yes "$WORK/profile-$key.json" "$digest" t0
  fi
  rm -rf "$store" "$WORK/lc-$key-e"
}

# One full and one lazy start, not counted: the binaries, the registry's files and the
# kernel's caches are then as warm for the first measured run as for the others.
log "warm-up: one full and one lazy start, direct (not counted)"
run_direct a app full lazy/app
run_direct c app lazy lazy/app
: > "$RESULTS"
for i in $(seq "$RUNS"); do
  log "--- round $i of $RUNS (load average $(cut -d' ' -f1-3 /proc/loadavg)) ---"
  has a && run_direct a app full lazy/app
  if has b; then
    run_lc b-cold app full lazy/app "$WORK/lc-b" yes
    run_lc b-warm app full lazy/app "$WORK/lc-b" no
    rm -rf "$WORK/lc-b"
  fi
  has c && run_direct c app lazy lazy/app
  lazy_set app lazy/app "$APP_DIGEST"
  if [ "$MOONSHOT" = 1 ]; then
    lazy_set big lazy/big "$BIG_DIGEST"
    lazy_set fat lazy/fat "$FAT_DIGEST"
  fi
done

# --- the table ---
echo
images="lazy/app:esgz ($APP_LAYERS layers, $((APP_BYTES / 1000000)) MB)"
[ "$MOONSHOT" = 1 ] && images="$images; 4×: lazy/big:esgz ($BIG_LAYERS layers, $((BIG_BYTES / 1000000)) MB), lazy/fat:esgz ($FAT_LAYERS layers, $((FAT_BYTES / 1000000)) MB)"
echo "time to start: $images"
echo "container: busybox sha256sum of ${#READ_FILES[@]} files, $READ_BYTES bytes; upstream behind" \
  "layercache-throttle, RTT $RTT_MS ms, $BW/s per connection; $RUNS runs each; layercache mode" \
  "$MODE$(for kv in chunk_size=$CHUNK complete_partial=$COMPLETE_PARTIAL eager_layers=$EAGER \
    quiet=$QUIET; do [ -n "${kv#*=}" ] && printf ', %s %s' "${kv%%=*}" "${kv#*=}"; done);" \
  "snapshotter background fetch" \
  "$([ "$BG_FETCH" = 1 ] && echo on || echo off)"
python3 - "$RESULTS" << 'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    s, key, total, pull, run, reqs, up = line.split()
    rows.setdefault((key, s), []).append((float(total), float(pull), float(run), int(reqs), float(up)))
names = {"a": "(a) full pull + overlayfs, direct", "b-cold": "(b) full pull through layercache, cold",
         "b-warm": "(b) full pull through layercache, warm", "c": "(c) stargz lazy, direct",
         "d": "(d) stargz through layercache, cold", "e": "(e) second start, fresh node, profile imported",
         "f": "(f) warm layercache, fresh node",
         "p": "(p) as (e), start preloaded at the node's boot",
         "q": "(q) as (e), start preloaded as the pull starts"}
med = {}
print("| scenario | median (s) | min–max (s) | pull / run, medians (s) | upstream blob requests / MB, medians |")
print("|---|---|---|---|---|")
suffix = {"app": "", "big": " — 4× image, more and larger layers", "fat": " — 4× image, same layers 4× larger"}
for key in ("app", "big", "fat"):
    for s in ("a", "b-cold", "b-warm", "c", "d", "e", "f", "p", "q"):
        r = rows.get((key, s))
        if not r:
            continue
        t = [x[0] for x in r]
        m = statistics.median(t)
        med[(key, s)] = m
        label = names[s] + suffix[key]
        print(f"| {label} | **{m:.2f}** | {min(t):.2f}–{max(t):.2f} | "
              f"{statistics.median(x[1] for x in r):.2f} / {statistics.median(x[2] for x in r):.2f} | "
              f"{statistics.median(x[3] for x in r):.0f} / {statistics.median(x[4] for x in r) / 1e6:.1f} |")
def ratio(label, a, b, target):
    if a in med and b in med:
        print(f"- {label}: {med[a] / med[b]:.2f} ({target})")
print()
ratio("e / f", ("app", "e"), ("app", "f"), "target ≤ 1.2")
ratio("p / f", ("app", "p"), ("app", "f"), "target ≤ 1.2")
ratio("q / f", ("app", "q"), ("app", "f"), "target ≤ 1.2")
ratio("a / e", ("app", "a"), ("app", "e"), "target ≥ 5")
ratio("d / c", ("app", "d"), ("app", "c"), "target ≤ 1")
for key, what in (("big", "more and larger layers"), ("fat", "same layers 4× larger")):
    for s in ("d", "e", "f", "p", "q"):
        ratio(f"4× image ({what}) ÷ image, {s}", (key, s), ("app", s), "target ≤ 1.1")
PY

# --- where the time goes: each lazy start through layercache, from layercached's access log
# (every request's start and end against the clock's start) ---
python3 - "$WORK/logs" << 'PY'
import datetime, glob, json, os, re, statistics, sys
def at(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
runs = {}
for d in sorted(glob.glob(os.path.join(sys.argv[1], "*-*-*"))):
    m = re.match(r"\d+-(app|big|fat)-([defpq])$", os.path.basename(d))
    if not m or not os.path.exists(os.path.join(d, "layercached.log")):
        continue
    _, t0, _, t1, _, t2 = open(os.path.join(d, "times")).read().split()
    t0, t1, t2 = float(t0), float(t1), float(t2)
    rows = []
    for line in open(os.path.join(d, "layercached.log")):
        if '"logger":"access"' not in line:
            continue
        j = json.loads(line)
        end = at(j["ts"])
        start = end - j["duration_ms"] / 1000
        if t0 - 0.01 <= start <= t2:
            rows.append((start, end, j))
    head = [r for r in rows if r[2]["route"] == "manifest" and r[2]["method"] == "HEAD"]
    pulled = [r for r in rows if r[0] < t1]
    reads = [r for r in rows if r[0] >= t1 and r[2]["route"] == "blob"]
    if not head or not pulled or not reads:
        continue
    runs.setdefault((m.group(1), m.group(2)), []).append((
        (head[0][1] - head[0][0]) * 1e3,
        (max(r[1] for r in pulled) - head[0][0]) * 1e3,
        (min(r[0] for r in reads) - t1) * 1e3,
        sum(r[1] - r[0] for r in reads) * 1e3,
        sum(1 for r in reads if r[2]["source"] == "miss"),
        (t2 - max(r[1] for r in reads)) * 1e3,
        (t2 - t0) * 1e3))
if runs:
    print()
    print("Where the time goes (medians, ms; from layercached's access log):")
    print()
    print("| start | HEAD of the tag | HEAD → last mount read | rpull return → first file read | file reads, summed | misses among them | last read → ctr run returns | total |")
    print("|---|---|---|---|---|---|---|---|")
    for key in ("app", "big", "fat"):
        for s in ("d", "e", "f", "p", "q"):
            r = runs.get((key, s))
            if r:
                cols = [statistics.median(x[i] for x in r) for i in range(7)]
                print(f"| ({s}) {key} | " + " | ".join(f"{c:.0f}" for c in cols) + " |")
PY
