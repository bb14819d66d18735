#!/bin/bash
# First runnable of deploy/batch/job-lazy.json (its script.text is this file, verbatim: the
# deploy tests compare them). Makes the Batch VM a lazy node: layercached on 127.0.0.1:5000
# (as start-layercache.sh, with the settings for lazy pulls), layercache-stargz (the stargz
# snapshotter, deploy/systemd/layercache-stargz.service) and a containerd of its own that uses
# it, beside the VM's dockerd and its containerd, which are left alone. The second runnable
# (run-lazy.sh) pulls the task's image lazily with ctr-remote and runs it with ctr.
set -euo pipefail

# Tasks sharing a VM run this concurrently: one at a time, and only the first does the work.
exec 9>/var/lock/layercache-setup.lock
flock 9

# Release tarball with bin/layercached, bin/layercachectl and bin/layercache-stargz (`make dist`
# makes it, as build/dist/layercache-<version>-linux-<arch>.tar.gz, on a build host with
# golang-go and golang-github-containerd-stargz-snapshotter-dev); upload it to your bucket.
LAYERCACHE_TARBALL=gs://BUCKET/layercache/layercache-0.1.0-linux-amd64.tar.gz
CONTAINERD_SOCKET=/run/layercache-containerd/containerd.sock
STARGZ_SOCKET=/run/layercache-stargz/stargz.sock

if ! command -v layercached >/dev/null || ! command -v layercache-stargz >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends ca-certificates libssl3 librocksdb7.8 \
    libyaml-cpp0.7 libboost-json1.81.0 libboost-url1.81.0 \
    libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0
  gcloud storage cp "$LAYERCACHE_TARBALL" /tmp/layercache.tar.gz
  tar -xzf /tmp/layercache.tar.gz -C /usr/local
fi
if ! command -v layercache-stargz >/dev/null; then
  echo "$LAYERCACHE_TARBALL has no bin/layercache-stargz: build it where golang-go and" \
    "golang-github-containerd-stargz-snapshotter-dev are installed" >&2
  exit 1
fi
# containerd and runc come with the VM's docker (containerd.io or Debian's containerd);
# ctr-remote with Debian's stargz-snapshotter, fusermount with fuse3.
missing=()
command -v containerd >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
command -v ctr-remote >/dev/null || missing+=(stargz-snapshotter)
command -v fusermount3 >/dev/null || missing+=(fuse3)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
[ -c /dev/fuse ] || modprobe fuse

mkdir -p /etc/layercache
cat > /etc/layercache/layercache.yaml <<'LAYERCACHE_YAML'
# deploy/artifact-registry/layercache.yaml for a lazy node: `mode: lazy` sets 256 KiB chunks
# (the snapshotter reads 50 000-byte-aligned ranges), no eager fetch of whole layers, no
# background completion (the snapshotter's own background fetch reads every layer) and a
# recording that ends before that background fetch (docs/configuration.md, "mode").
mode: lazy
server:
  listen:
    - address: 127.0.0.1:5000
  timeouts:
    request_header: 30s
    idle: 120s
    write: 60s
    shutdown: 30s
  max_connections: 4096
  max_manifest_size: 4MiB
admin:
  address: 127.0.0.1:9401
log:
  level: info
cache:
  path: /var/lib/layercache
  capacity: 50GiB
  fetch_size: 8MiB
  parallel_fetches: 4
upstreams:
  # The VM's service account (roles/artifactregistry.reader) through the metadata server.
  - name: europe-docker.pkg.dev
    url: https://europe-docker.pkg.dev
    auth:
      type: gce_metadata
    timeouts: {connect: 10s, response: 30s, read: 60s}
  - name: us-docker.pkg.dev
    url: https://us-docker.pkg.dev
    auth:
      type: gce_metadata
  - name: docker.io
    url: https://registry-1.docker.io
    default: true
    aliases: [index.docker.io, registry-1.docker.io]
LAYERCACHE_YAML

layercached --check-config /etc/layercache/layercache.yaml
if ! systemctl is-active --quiet layercached.service; then
  systemctl reset-failed layercached.service 2>/dev/null || true
  systemd-run --unit=layercached --property=StateDirectory=layercache \
    --property=Restart=on-failure --property=LimitNOFILE=65536 \
    "$(command -v layercached)" --config /etc/layercache/layercache.yaml
fi

# The task's image (IMAGE, from the task's environment): what its start reads is fetched from
# now on, as the profile published next to it says, while the snapshotter and containerd
# start (`layercachectl preload --start`; without a published profile nothing is fetched and
# the task starts as it would have).
if [ -n "${IMAGE:-}" ]; then
  for _ in $(seq 1 30); do
    curl -fsS -o /dev/null http://127.0.0.1:9401/readyz && break
    sleep 1
  done
  layercachectl preload --start "${IMAGE#127.0.0.1:5000/}" ||
    echo "the start of $IMAGE was not preloaded; it starts all the same" >&2
fi

# The snapshotter, from the unit the tarball ships. run-lazy.sh names images through
# layercache (127.0.0.1:5000/<AR host>/<path>): the reference is layercache's, so the
# snapshotter needs no -mirror (deploy/systemd/layercache-stargz.env has the flags).
cat > /etc/layercache/stargz.env <<'STARGZ_ENV'
LAYERCACHE_STARGZ_FLAGS=""
STARGZ_ENV
if ! systemctl is-active --quiet layercache-stargz.service; then
  install -m 0644 /usr/local/share/layercache/systemd/layercache-stargz.service \
    /etc/systemd/system/layercache-stargz.service
  systemctl daemon-reload
  systemctl reset-failed layercache-stargz.service 2>/dev/null || true
  systemctl start layercache-stargz.service
fi

# A containerd of its own (the VM's belongs to dockerd): its own root, state and socket, the
# stargz snapshotter as a proxy plugin, no CRI.
cat > /etc/layercache/containerd.toml <<'CONTAINERD_TOML'
version = 2
root = "/var/lib/layercache-containerd"
state = "/run/layercache-containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "/run/layercache-containerd/containerd.sock"

[proxy_plugins.stargz]
  type = "snapshot"
  address = "/run/layercache-stargz/stargz.sock"
CONTAINERD_TOML
if ! systemctl is-active --quiet layercache-containerd.service; then
  systemctl reset-failed layercache-containerd.service 2>/dev/null || true
  # As containerd.service: containers (their shims) outlive a containerd restart.
  systemd-run --unit=layercache-containerd --property=Type=notify --property=Delegate=yes \
    --property=KillMode=process --property=OOMScoreAdjust=-999 \
    --property=LimitNOFILE=infinity --property=Restart=always \
    --property=After=layercache-stargz.service \
    "$(command -v containerd)" --config /etc/layercache/containerd.toml
fi

for _ in $(seq 1 60); do
  if curl -fsS -o /dev/null http://127.0.0.1:9401/readyz && [ -S "$STARGZ_SOCKET" ] &&
    ctr --address "$CONTAINERD_SOCKET" version >/dev/null 2>&1; then
    echo "layercache, layercache-stargz and containerd ready"
    exit 0
  fi
  sleep 1
done
echo "not ready after 60s" >&2
journalctl -u layercached -u layercache-stargz -u layercache-containerd --no-pager -n 80 >&2 || true
exit 1
