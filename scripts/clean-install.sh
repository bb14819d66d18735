#!/usr/bin/env bash
# `make clean-install-check` (issue 24): the .deb and deploy/batch/start-layercache.sh on a
# clean Debian 12, not on this machine (which has every -dev package, so it cannot show that
# the package's Depends are complete).
#
# 1. A minimal Debian 12 root: `debootstrap --variant=minbase bookworm` from this machine's
#    apt mirror, kept as $BUILD/clean-root/bookworm.tar.zst (a later run unpacks it: seconds).
# 2. package: in a fresh copy of that root (chroot; /proc, a minimal /dev and /run mounted),
#    `apt-get install ./layercache_*.deb` as docs/operations.md says — the packages apt adds
#    are the real dependency closure, printed with their installed size; `ldd` finds every
#    library; `layercached --check-config` on the packaged config; the installed layercached
#    run as the `layercache` user (the packaged store, a free loopback port: a plain chroot
#    shares the host's network) in front of a docker-registry started here and seeded by
#    layercache-seed; a manifest and a blob pulled with curl from the host and their digests
#    checked, the blob again with the registry stopped (from the store); SIGTERM (exit 0);
#    `apt-get purge --autoremove layercache`: no file, user or group of layercache left and
#    the root's package list as before the install.
# 3. start-script: in another fresh copy, deploy/batch/start-layercache.sh as the Batch job
#    runs it (root, no environment), with LAYERCACHE_DEB naming the .deb copied into the root
#    instead of the gs:// URL. It installs the package and docker.io with apt, writes the
#    node's config (checked) and dockerd's registry-mirrors, then stops where it needs
#    systemd (PID 1 is not systemd in a chroot): the exit status and message are checked, and
#    the files it wrote; a second run changes nothing. What needs systemd (starting
#    layercached.service, reloading docker.service, /readyz) cannot run here.
#
# Root, apt and debootstrap (installed when missing), zstd, docker-registry, curl, python3.
# Not root: exit 77 (ctest's skip). Knobs: BUILD (build), DEB (default: the newest
# $BUILD/dist/layercache_*.deb, from `make deb`; MAKE_DEB=1: `cpack -G DEB` of $BUILD into a
# temporary directory, as ctest runs it), MIRROR and SECURITY_MIRROR (default: this
# machine's apt sources for bookworm and bookworm-security), PHASES ("package start-script"),
# CLEAN_INSTALL_IF_CACHED=1 (ctest -L clean-install): exit 77 unless the root is cached
# already or RUN_CLEAN_INSTALL=1 (the first run's debootstrap takes minutes).
# Every mount and process is under a temporary directory in $BUILD/clean-root, unmounted,
# stopped and removed on every exit path.
# shellcheck disable=SC2016 # dpkg-query's ${Field} formats, a script run in the root
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SUITE=bookworm
PHASES=${PHASES:-package start-script}
SEED=$BUILD/layercache-seed
CACHE=$(realpath -m "$BUILD")/clean-root
ROOT_TAR=$CACHE/$SUITE.tar.zst
ARCHIVES=$CACHE/apt-archives  # downloaded .debs, kept between runs (apt still resolves)
STARTED=$(date +%s)

step() { echo "[$(($(date +%s) - STARTED)) s] $*"; }
fail() { echo "clean-install: FAIL: $*" >&2; exit 1; }

if [ "$(id -u)" != 0 ]; then
  echo "clean-install: SKIP: not root (chroot and mount need root)"
  exit 77
fi
command -v apt-get >/dev/null || { echo "clean-install: SKIP: no apt-get"; exit 77; }
case $CACHE in *[[:space:]]*) fail "$CACHE: a path with blanks";; esac
if [ "${CLEAN_INSTALL_IF_CACHED:-0}" = 1 ] && [ "${RUN_CLEAN_INSTALL:-0}" != 1 ] &&
  [ ! -s "$ROOT_TAR" ]; then
  echo "clean-install: SKIP: no cached root $ROOT_TAR (make clean-install-check makes it;" \
    "RUN_CLEAN_INSTALL=1 runs debootstrap here)"
  exit 77
fi

[ -x "$SEED" ] || fail "$SEED missing (cmake --build $BUILD --target layercache-seed)"
missing=()
for tool in debootstrap:debootstrap zstd:zstd docker-registry:docker-registry curl:curl \
  python3:python3 dpkg-shlibdeps:dpkg-dev; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

mkdir -p "$CACHE" "$ARCHIVES/partial"
WORK=$(mktemp -d "$CACHE/run.XXXXXX")
chmod 0755 "$WORK"
mkdir "$WORK/roots"
PIDS=()

# Everything mounted under directory $1, deepest first (debootstrap's own /proc and /sys too,
# should it be cut short).
unmount_under() {
  local m
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" || echo "cannot unmount $m" >&2
  done < <(awk -v w="$1/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r)
}

# Processes whose root directory is one of our roots: started in them by this script (a
# maintainer script's daemon, layercached).
kill_in_roots() {
  local p root
  for p in /proc/[0-9]*; do
    root=$(readlink "$p/root" 2>/dev/null) || continue
    case $root in "$WORK"/*) kill -9 "${p#/proc/}" 2>/dev/null || true;; esac
  done
}

stop_pid() {  # SIGTERM, 10 s, SIGKILL
  local pid=$1
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  kill_in_roots
  unmount_under "$WORK"
  if awk -v w="$WORK/" 'index($2, w) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
    echo "clean-install: mounts left under $WORK, not removing it" >&2
    status=1
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# The roots live in memory (a few hundred MB each, one at a time): dpkg's many fsyncs and the
# removal of a root cost nothing there, and nothing of them is left on disk.
mount -t tmpfs -o mode=0755,size=4g clean-install "$WORK/roots"

if [ "${MAKE_DEB:-0}" = 1 ]; then
  cpack -G DEB -B "$WORK/cpack" --config "$BUILD/CPackConfig.cmake" > "$WORK/cpack.log" 2>&1 ||
    { cat "$WORK/cpack.log" >&2; fail "cpack -G DEB"; }
  DEB=$(find "$WORK/cpack" -maxdepth 1 -name 'layercache_*.deb')
elif [ -z "${DEB:-}" ]; then
  DEB=$(find "$BUILD/dist" -maxdepth 1 -name 'layercache_*.deb' -printf '%T@ %p\n' 2>/dev/null |
    sort -n | tail -1 | cut -d' ' -f2-)
fi
if [ -z "$DEB" ] || [ ! -f "$DEB" ]; then fail "no .deb (run \`make deb\`, or DEB=path)"; fi
DEB=$(realpath "$DEB")
DEB_NAME=$(basename "$DEB")

# The URI of this machine's apt source for suite $1 (one-line and deb822 files), else $2.
host_source() {
  local uri=""
  uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    sed -E 's/\[[^]]*\]//' | awk -v s="$1" '$1 == "deb" && $3 == s { print $2; exit }')
  if [ -z "$uri" ]; then
    uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v s="$1" '
      BEGIN { RS = ""; FS = "\n" }
      { uris = ""; suites = ""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { uris = $i; sub(/^URIs:[ \t]*/, "", uris) }
          if ($i ~ /^Suites:/) { suites = " " $i " " }
        }
        if (uris != "" && index(suites, " " s " ")) { split(uris, u, " "); print u[1]; exit } }')
  fi
  echo "${uri:-$2}"
}
MIRROR=${MIRROR:-$(host_source "$SUITE" http://deb.debian.org/debian)}
SECURITY_MIRROR=${SECURITY_MIRROR:-$(host_source "$SUITE-security" \
  http://deb.debian.org/debian-security)}

# --- the clean root ------------------------------------------------------------------------

make_root_tarball() {
  local dir=$WORK/roots/debootstrap
  step "debootstrap --variant=minbase $SUITE from $MIRROR (cached as $ROOT_TAR)"
  debootstrap --variant=minbase --arch="$(dpkg --print-architecture)" "$SUITE" "$dir" \
    "$MIRROR" > "$WORK/debootstrap.log" 2>&1 || {
    tail -30 "$WORK/debootstrap.log" >&2
    fail "debootstrap failed (log above)"
  }
  # The sources of a Debian 12 host: the release, its updates and security.
  cat > "$dir/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/archives/*.deb
  tar --numeric-owner --xattrs -C "$dir" -I 'zstd -T0 -6' -cf "$ROOT_TAR.tmp" .
  mv "$ROOT_TAR.tmp" "$ROOT_TAR"
  rm -rf "$dir"
  step "root cached: $(du -h "$ROOT_TAR" | cut -f1)"
}

# A fresh copy of the root in $WORK/$1 with /proc, a minimal /dev, /run and the shared apt
# download directory mounted; sets ROOT.
new_root() {
  ROOT=$WORK/roots/$1
  mkdir "$ROOT"
  tar --numeric-owner --xattrs -C "$ROOT" -I zstd -xpf "$ROOT_TAR"
  mount -t proc proc "$ROOT/proc"
  mount -t tmpfs -o mode=0755,nosuid,size=16m dev "$ROOT/dev"
  local n
  for n in null zero full random urandom tty; do
    touch "$ROOT/dev/$n"
    mount --bind "/dev/$n" "$ROOT/dev/$n"
  done
  mkdir "$ROOT/dev/pts" "$ROOT/dev/shm"
  mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$ROOT/dev/pts"
  ln -s pts/ptmx "$ROOT/dev/ptmx"
  ln -s /proc/self/fd "$ROOT/dev/fd"
  # /run as at boot: a tmpfs with /run/lock (/var/lock is a link to it).
  mount -t tmpfs -o mode=0755,nosuid,size=16m run "$ROOT/run"
  mkdir -m 1777 "$ROOT/run/lock"
  mount --bind "$ARCHIVES" "$ROOT/var/cache/apt/archives"
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  # Services a package would start (docker.io's dockerd) are not started: this root shares
  # the host's network. Our package starts nothing without systemd either way.
  printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
  chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
}

in_root() {
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@"
}

packages() { in_root dpkg-query -W -f '${Package}:${Architecture} ${Version}\n' | sort; }

# --- phase package ---------------------------------------------------------------------------

free_port() { "$SEED" --free-port; }

wait_http() {  # url [pid]: bounded wait (20 s) until it answers
  for _ in $(seq 200); do
    curl -s -o /dev/null "$1" && return 0
    if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then fail "$1: the server exited"; fi
    sleep 0.1
  done
  fail "no answer from $1"
}

start_registry() {  # sets REGISTRY_PORT, REGISTRY_PID
  REGISTRY_PORT=$(free_port)
  mkdir -p "$WORK/registry"
  cat > "$WORK/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: 127.0.0.1:$REGISTRY_PORT}
EOF
  docker-registry serve "$WORK/registry.yml" > "$WORK/registry.log" 2>&1 &
  REGISTRY_PID=$!
  PIDS+=("$REGISTRY_PID")
  wait_http "http://127.0.0.1:$REGISTRY_PORT/v2/" "$REGISTRY_PID"
}

# What purge must leave no trace of (as tests/package/package_test.py's PURGED).
PURGED=(/usr/bin/layercached /usr/bin/layercachectl /lib/systemd/system/layercached.service
  /etc/layercache /usr/share/doc/layercache /var/lib/layercache
  /etc/systemd/system/multi-user.target.wants/layercached.service
  /var/lib/systemd/deb-systemd-helper-enabled/layercached.service.dsh-also
  /var/lib/systemd/deb-systemd-helper-masked/layercached.service)

phase_package() {
  new_root package
  step "package: apt-get update in a fresh copy of the root"
  in_root apt-get update -qq
  packages > "$WORK/before"
  cp "$DEB" "$ROOT/tmp/$DEB_NAME"
  step "package: apt-get install ./$DEB_NAME (as docs/operations.md says)"
  in_root sh -c "cd /tmp && apt-get install -y -q ./$DEB_NAME" > "$WORK/install.log" 2>&1 || {
    tail -40 "$WORK/install.log" >&2
    fail "apt-get install ./$DEB_NAME failed"
  }
  rm "$ROOT/tmp/$DEB_NAME"
  packages > "$WORK/after"
  in_root dpkg-query -W -f '${Status}' layercache | grep -q 'ok installed' ||
    fail "layercache not installed"
  comm -13 "$WORK/before" "$WORK/after" > "$WORK/added"
  local n kib
  n=$(wc -l < "$WORK/added")
  kib=0
  while read -r pkg _; do
    kib=$((kib + $(in_root dpkg-query -W -f '${Installed-Size}' "$pkg")))
  done < "$WORK/added"
  echo "packages apt added to the clean root ($n, $((kib / 1024)) MiB installed;" \
    "layercache itself $(in_root dpkg-query -W -f '${Installed-Size}' layercache) KiB):"
  sed 's/^/  /' "$WORK/added"
  # The packaged config's upstream (Docker Hub) is HTTPS: the package depends on the CA store.
  [ -s "$ROOT/etc/ssl/certs/ca-certificates.crt" ] ||
    fail "no CA certificates in the root: the package does not pull in ca-certificates"

  step "package: every library found, the packaged config checked"
  local bin
  for bin in /usr/bin/layercached /usr/bin/layercachectl; do
    in_root ldd "$bin" > "$WORK/ldd" || fail "ldd $bin failed"
    ! grep 'not found' "$WORK/ldd" || fail "$bin: libraries not found in the clean root"
  done
  in_root layercached --version
  in_root layercached --check-config /etc/layercache/layercache.yaml
  in_root setpriv --reuid=layercache --regid=layercache --init-groups \
    layercached --check-config /etc/layercache/layercache.yaml > /dev/null
  [ "$(stat -c %u:%g:%a "$ROOT/var/lib/layercache")" = "$(in_root sh -c \
    'echo "$(id -u layercache):$(id -g layercache):750"')" ] ||
    fail "/var/lib/layercache: not the layercache user's (0750)"

  step "package: the installed layercached as the layercache user, a pull through it"
  start_registry
  local digest port admin config
  digest=$("$SEED" --registry "http://127.0.0.1:$REGISTRY_PORT" --repo clean/app --tag v1 \
    --layers 1MiB,3MiB)
  port=$(free_port)
  admin=$(free_port)
  # The packaged config with free loopback ports and the local registry as the upstream.
  config=$ROOT/etc/layercache/clean-install.yaml
  sed -e "s/127\.0\.0\.1:5000/127.0.0.1:$port/" -e "s/127\.0\.0\.1:9401/127.0.0.1:$admin/" \
    -e '/^upstreams:/,$d' "$ROOT/etc/layercache/layercache.yaml" > "$config"
  printf 'upstreams:\n  - name: local\n    url: http://127.0.0.1:%s\n    default: true\n' \
    "$REGISTRY_PORT" >> "$config"
  if ! grep -q "127.0.0.1:$port" "$config" || ! grep -q "127.0.0.1:$admin" "$config"; then
    fail "the packaged config has no 127.0.0.1:5000 or 127.0.0.1:9401 to replace"
  fi
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    setpriv --reuid=layercache --regid=layercache --init-groups \
    /usr/bin/layercached --config /etc/layercache/clean-install.yaml \
    > "$WORK/layercached.log" 2>&1 &
  local daemon=$!
  PIDS+=("$daemon")
  wait_http "http://127.0.0.1:$admin/readyz" "$daemon"
  grep -Eq "^Uid:[[:space:]]+$(in_root id -u layercache)[[:space:]]" "/proc/$daemon/status" ||
    fail "layercached does not run as layercache"
  local accept='application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json'
  local base=http://127.0.0.1:$port/v2/clean/app
  curl -fsS -H "Accept: $accept" -o "$WORK/manifest" "$base/manifests/v1" ||
    fail "manifest through layercache"
  [ "sha256:$(sha256sum < "$WORK/manifest" | cut -d' ' -f1)" = "$digest" ] ||
    fail "manifest digest differs from the pushed $digest"
  local layer
  layer=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"][-1]["digest"])' \
    < "$WORK/manifest")
  curl -fsS -o "$WORK/blob" "$base/blobs/$layer" || fail "blob $layer through layercache"
  [ "sha256:$(sha256sum < "$WORK/blob" | cut -d' ' -f1)" = "$layer" ] ||
    fail "blob digest differs from $layer"
  echo "manifest $digest and blob $layer ($(stat -c %s "$WORK/blob") bytes) match"
  stop_pid "$REGISTRY_PID"
  rm "$WORK/blob"
  curl -fsS -o "$WORK/blob" "$base/blobs/$layer" || fail "blob again, registry stopped"
  [ "sha256:$(sha256sum < "$WORK/blob" | cut -d' ' -f1)" = "$layer" ] ||
    fail "blob from the store differs from $layer"
  echo "the blob again with the registry stopped: from the store, digest matches"
  [ -z "$(find "$ROOT/var/lib/layercache" ! -user "$(in_root id -u layercache)")" ] ||
    fail "files in the store that are not the layercache user's"
  [ -n "$(find "$ROOT/var/lib/layercache" -type f)" ] || fail "nothing in the store"
  kill -TERM "$daemon"
  local status=0
  wait "$daemon" || status=$?
  [ "$status" = 0 ] || { cat "$WORK/layercached.log" >&2; fail "layercached exit $status"; }
  rm "$config"

  step "package: apt-get purge --autoremove layercache"
  in_root apt-get purge -y -q --autoremove layercache > "$WORK/purge.log" 2>&1 || {
    cat "$WORK/purge.log" >&2
    fail "apt-get purge failed"
  }
  packages > "$WORK/purged"
  diff "$WORK/before" "$WORK/purged" ||
    fail "after purge --autoremove the package list is not the clean root's (diff above)"
  local p left=()
  for p in "${PURGED[@]}"; do
    if [ -e "$ROOT$p" ] || [ -L "$ROOT$p" ]; then left+=("$p"); fi
  done
  while IFS= read -r p; do left+=("${p#"$ROOT"}"); done < <(
    find "$ROOT" -xdev \( -path "$ROOT/proc" -o -path "$ROOT/var/cache/apt/archives" \) -prune \
      -o -iname '*layercache*' -print)
  if grep -qs '^layercache:' "$ROOT/etc/passwd" "$ROOT/etc/group" "$ROOT/etc/shadow" \
    "$ROOT/etc/gshadow"; then
    left+=("the layercache user or group")
  fi
  [ ${#left[@]} = 0 ] || fail "left after purge: ${left[*]}"
  echo "purged: no file, user or group of layercache left; the package list is the clean root's"
}

# --- phase start-script ----------------------------------------------------------------------

phase_start_script() {
  new_root start
  cp "$DEB" "$ROOT/root/$DEB_NAME"
  cp deploy/batch/start-layercache.sh "$ROOT/root/start-layercache.sh"
  local out=$WORK/start.out status=0
  packages > "$WORK/start-before"
  step "start-script: deploy/batch/start-layercache.sh, LAYERCACHE_DEB=/root/$DEB_NAME"
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LAYERCACHE_DEB="/root/$DEB_NAME" bash /root/start-layercache.sh > "$out" 2>&1 || status=$?
  sed 's/^/  | /' "$out" | grep -v '^  | \(Selecting\|Preparing\|Unpacking\|Setting up\|(Reading\)' ||
    true
  step "start-script: exit status $status"
  packages | comm -13 "$WORK/start-before" - > "$WORK/start-added"
  echo "packages the script added ($(wc -l < "$WORK/start-added")):" \
    "$(cut -d: -f1 "$WORK/start-added" | tr '\n' ' ')" | fold -s -w 100
  [ "$status" = 3 ] || fail "exit status $status, want 3 (installed and configured, no systemd)"
  grep -q 'systemd is not running' "$out" || fail "no message that systemd is not running"
  for p in layercache docker.io curl ca-certificates; do
    in_root dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
      fail "the script did not install $p"
  done
  # The node's config is the script's heredoc, and layercached accepts it.
  sed -n "/<<'LAYERCACHE_YAML'\$/,/^LAYERCACHE_YAML\$/p" deploy/batch/start-layercache.sh |
    sed '1d;$d' > "$WORK/batch.yaml"
  cmp "$WORK/batch.yaml" "$ROOT/etc/layercache/layercache.yaml" ||
    fail "/etc/layercache/layercache.yaml is not the script's config"
  in_root layercached --check-config /etc/layercache/layercache.yaml > /dev/null
  python3 - "$ROOT/etc/docker/daemon.json" <<'PY' || fail "dockerd's registry-mirrors"
import json, sys
conf = json.load(open(sys.argv[1]))
assert conf["registry-mirrors"][0] == "http://127.0.0.1:5000", conf
PY
  in_root layercachectl doctor --docker --no-probe > "$WORK/doctor" 2>&1 ||
    { cat "$WORK/doctor" >&2; fail "layercachectl doctor --docker --no-probe"; }
  cp "$ROOT/etc/docker/daemon.json" "$WORK/daemon.json"
  step "start-script: run again (a second task on the VM)"
  status=0
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LAYERCACHE_DEB="/root/$DEB_NAME" bash /root/start-layercache.sh > "$out" 2>&1 || status=$?
  [ "$status" = 3 ] || { cat "$out" >&2; fail "second run: exit status $status, want 3"; }
  if grep -q 'Unpacking\|apt-get' "$out"; then cat "$out" >&2; fail "second run ran apt"; fi
  cmp -s "$WORK/daemon.json" "$ROOT/etc/docker/daemon.json" || fail "second run: daemon.json"
  cmp -s "$WORK/batch.yaml" "$ROOT/etc/layercache/layercache.yaml" || fail "second run: config"
  echo "start-script: installed and configured up to the systemd steps; a second run changes nothing"
}

# --- main ------------------------------------------------------------------------------------

step "clean Debian 12 root for $DEB_NAME"
exec 8> "$CACHE/lock"
flock 8  # one run at a time per build directory (the tarball, the download directory)
[ -s "$ROOT_TAR" ] || make_root_tarball
for phase in $PHASES; do
  case $phase in
    package) phase_package ;;
    start-script) phase_start_script ;;
    *) fail "unknown phase $phase" ;;
  esac
  kill_in_roots
  unmount_under "$ROOT"
  rm -rf "$ROOT"
done
step "clean-install: OK"
