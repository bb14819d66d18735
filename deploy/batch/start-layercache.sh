#!/bin/bash
# First runnable of deploy/batch/job.json (its script.text is this file, verbatim: the deploy
# tests compare them). Installs layercached on the Batch VM, starts it as a transient systemd
# unit on 127.0.0.1:5000, and makes dockerd use it as its docker.io mirror. Artifact Registry
# images are pulled through it by path prefix: imageUri 127.0.0.1:5000/<AR host>/<path>.
set -euo pipefail

# Tasks sharing a VM run this concurrently: one at a time, and only the first does the work
# (restarting dockerd under a running task's container would kill it).
exec 9>/var/lock/layercache-setup.lock
flock 9

# Release tarball with bin/layercached and bin/layercachectl (`make dist` makes it, as
# build/dist/layercache-<version>-linux-<arch>.tar.gz); upload it to your bucket.
LAYERCACHE_TARBALL=gs://BUCKET/layercache/layercache-0.1.0-linux-amd64.tar.gz

if ! command -v layercached >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends ca-certificates libssl3 librocksdb7.8 \
    libyaml-cpp0.7 libboost-json1.81.0 libboost-url1.81.0 \
    libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0
  gcloud storage cp "$LAYERCACHE_TARBALL" /tmp/layercache.tar.gz
  tar -xzf /tmp/layercache.tar.gz -C /usr/local
fi

mkdir -p /etc/layercache
cat > /etc/layercache/layercache.yaml <<'LAYERCACHE_YAML'
# Same settings as deploy/artifact-registry/layercache.yaml.
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
  chunk_size: 1MiB
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

# dockerd: docker.io pulls through the mirror (keep the rest of an existing daemon.json).
if ! grep -qs '"http://127.0.0.1:5000"' /etc/docker/daemon.json; then
  python3 - <<'PY'
import json, os
path = "/etc/docker/daemon.json"
conf = {}
if os.path.exists(path):
    with open(path) as f:
        conf = json.load(f)
mirrors = conf.setdefault("registry-mirrors", [])
if "http://127.0.0.1:5000" not in mirrors:
    mirrors.insert(0, "http://127.0.0.1:5000")
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path, "w") as f:
    json.dump(conf, f, indent=2)
PY
  systemctl restart docker
fi

for _ in $(seq 1 60); do
  if curl -fsS -o /dev/null http://127.0.0.1:9401/readyz; then
    echo "layercache ready"
    exit 0
  fi
  sleep 1
done
echo "layercache not ready after 60s" >&2
journalctl -u layercached --no-pager -n 50 >&2 || true
exit 1
