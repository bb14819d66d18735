#!/usr/bin/env bash
# Installs the container runtimes the runtime and lazy-pull tests drive (`ctest -L runtime`,
# `ctest -L lazy`): dockerd and the docker CLI (Debian's docker.io), containerd with ctr and
# runc; for lazy pulling, ctr-remote (stargz-snapshotter), fuse3, busybox-static (the binary the
# lazy test's image runs) and, to build the project's own stargz snapshotter daemon
# (snapshotter/, scripts/build-snapshotter.sh), golang-go and Debian's stargz-snapshotter Go
# library. Only what is missing is installed (a docker-ce install is left alone), nothing when
# RUNTIME_TESTS=0. The packages' services are not started: the tests start their own daemons
# with their own data dirs and sockets, and a policy-rc.d keeps apt from starting the system's.
set -euo pipefail
[ "${RUNTIME_TESTS:-1}" = 0 ] && exit 0
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
need=()
have dockerd || need+=(docker.io)
have containerd || need+=(containerd)
have runc || need+=(runc)
have ctr-remote || need+=(stargz-snapshotter)
have fusermount3 || need+=(fuse3)
[ -x /bin/busybox ] || need+=(busybox-static)
have go || need+=(golang-go)
[ -d /usr/share/gocode/src/github.com/containerd/stargz-snapshotter/fs ] ||
  need+=(golang-github-containerd-stargz-snapshotter-dev)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod 755 /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
echo "installing Debian packages for the runtime tests:" "${need[@]}"
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
