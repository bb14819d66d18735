#!/usr/bin/env bash
# Builds layercache-stargz (snapshotter/, a stargz snapshotter daemon for containerd) from
# Debian's packaged Go library: GOPATH mode (GO111MODULE=off) with GOPATH=/usr/share/gocode,
# the network off (GOPROXY=off; GOPATH mode resolves nothing remotely anyway), and the
# Go build cache inside the build tree so a rebuild only relinks.
# Usage: build-snapshotter.sh OUTPUT_BINARY GOCACHE_DIR [SOURCE_DIR]
# SOURCE_DIR (default snapshotter/) is another Go main package built the same way
# (tests/support/cri-pull, a test helper).
# Exits 0 without building (and says why) when go or the library is missing.
set -euo pipefail
out=${1:?output binary}
gocache=${2:?GOCACHE directory}
here=$(cd "$(dirname "$0")/.." && pwd)
src=${3:-$here/snapshotter}
gopath=/usr/share/gocode
if ! command -v go >/dev/null 2>&1 ||
  [ ! -d "$gopath/src/github.com/containerd/stargz-snapshotter/fs" ]; then
  echo "build-snapshotter: go or golang-github-containerd-stargz-snapshotter-dev missing; not built" >&2
  exit 0
fi
mkdir -p "$gocache" "$(dirname "$out")"
cd "$src"
GO111MODULE=off GOPATH="$gopath" GOCACHE="$gocache" GOPROXY=off GOFLAGS='' CGO_ENABLED=0 \
  go build -trimpath -o "$out.tmp" .
mv -f "$out.tmp" "$out"
