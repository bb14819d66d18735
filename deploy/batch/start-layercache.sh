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
# LAYERCACHE_DEB=/path/to/layercache_<version>_<arch>.deb in the environment: a file already
# on the machine instead (an image with the package baked in; scripts/clean-install.sh).
LAYERCACHE_DEB=${LAYERCACHE_DEB:-gs://BUCKET/layercache/layercache_0.1.0_amd64.deb}

missing=()
if ! dpkg-query -W -f='${Status}' layercache 2>/dev/null | grep -q 'ok installed'; then
  case $LAYERCACHE_DEB in
    gs://*) gcloud storage cp "$LAYERCACHE_DEB" /tmp/layercache.deb ;;
    *) cp "$LAYERCACHE_DEB" /tmp/layercache.deb ;;
  esac
  missing+=(/tmp/layercache.deb)
fi
# The container runnable needs dockerd (Batch's own images have it; Debian's do not). curl
# waits for /readyz below; the CA certificates verify the https upstreams (Debian's cloud
# images have both, a minimal Debian neither, and the package does not depend on them).
command -v dockerd >/dev/null || missing+=(docker.io)
command -v curl >/dev/null || missing+=(curl)
[ -s /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
if [ ${#missing[@]} -gt 0 ]; then
  # At first boot apt-daily or unattended-upgrades may hold apt's locks: wait for them.
  apt_opts=(-qq -o DPkg::Lock::Timeout=600 -o APT::Install-Recommends=false)
  apt-get update "${apt_opts[@]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${apt_opts[@]}" "${missing[@]}"
  rm -f /tmp/layercache.deb
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

layercached --check-config "$config"
layercache_changed=0
if ! cmp -s "$config" /etc/layercache/layercache.yaml; then
  install -m 0644 "$config" /etc/layercache/layercache.yaml
  layercache_changed=1
fi
rm -f "$config"

# dockerd: docker.io pulls through the mirror. layercachectl node setup puts the config's
# listener first in "registry-mirrors" of /etc/docker/daemon.json, the rest of the file kept.
if ! grep -qs '"http://127.0.0.1:5000"' /etc/docker/daemon.json; then
  layercachectl node setup --docker
fi

# Starting the services needs systemd, PID 1 on Batch's VMs; in a container or a chroot
# everything above is done and the script stops here (exit 3).
if [ ! -d /run/systemd/system ]; then
  echo "layercache is installed and configured, but systemd is not running here (PID 1 is" \
    "$(cat /proc/1/comm 2>/dev/null || echo unknown)): layercached.service and docker.service" \
    "were not started" >&2
  exit 3
fi
# The package started its unit with the default config: restart it on this one (Type=notify:
# systemctl returns once it listens), the first time only.
if [ "$layercache_changed" = 1 ]; then
  systemctl restart layercached.service
fi
systemctl is-active --quiet layercached.service || systemctl start layercached.service
# dockerd reads registry-mirrors at start and on SIGHUP (its unit's reload): a reload keeps
# running containers; a stopped dockerd is started.
if ! docker info --format '{{json .RegistryConfig.Mirrors}}' 2>/dev/null |
  grep -q '127\.0\.0\.1:5000'; then
  systemctl reload-or-restart docker.service
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
