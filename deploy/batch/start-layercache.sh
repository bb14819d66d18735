#!/bin/bash
# First runnable of deploy/batch/job.json (its script.text is this file, verbatim: the deploy
# tests compare them). Installs layercache's Debian package on the Batch VM (Debian 12: the
# job pins bootDisk.image), runs its systemd unit with this node's config on 127.0.0.1:5000,
# and makes dockerd use it as its docker.io mirror. Artifact Registry images are pulled through
# it by path prefix: imageUri 127.0.0.1:5000/<AR host>/<path>.
set -euo pipefail

# Tasks sharing a VM run this concurrently: one at a time, and only the first does the work
# (restarting dockerd or layercached under a running task's container would break it).
exec 9>/var/lock/layercache-setup.lock
flock 9

# The Debian package (`make deb` makes it, as build/dist/layercache_<version>_<arch>.deb);
# upload it to your bucket. apt installs the libraries it depends on from Debian 12.
LAYERCACHE_DEB=gs://BUCKET/layercache/layercache_0.1.0_amd64.deb

missing=()
if ! dpkg-query -W -f='${Status}' layercache 2>/dev/null | grep -q 'ok installed'; then
  gcloud storage cp "$LAYERCACHE_DEB" /tmp/layercache.deb
  missing+=(/tmp/layercache.deb)
fi
# The container runnable needs dockerd (Batch's own images have it; Debian's do not).
command -v dockerd >/dev/null || missing+=(docker.io)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

config=$(mktemp)
cat > "$config" <<'LAYERCACHE_YAML'
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

# The package started its unit with the default config: restart it on this one (Type=notify:
# systemctl returns once it listens), the first time only.
layercached --check-config "$config"
if ! cmp -s "$config" /etc/layercache/layercache.yaml; then
  install -m 0644 "$config" /etc/layercache/layercache.yaml
  systemctl restart layercached.service
fi
systemctl is-active --quiet layercached.service || systemctl start layercached.service
rm -f "$config"

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
