# Shared by scripts/run.sh and scripts/demo.sh: a local docker-registry with a generated image.
BUILD=${BUILD:-build}
WORK=$(mktemp -d /tmp/layercache-demo.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_http() {  # url: bounded wait (15 s) until it answers
  for _ in $(seq 150); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  return 1
}

start_demo_registry() {  # sets REGISTRY_PORT; seeds demo/app:v1
  REGISTRY_PORT=$("$BUILD/layercache-seed" --free-port)
  mkdir -p "$WORK/registry"
  cat > "$WORK/registry.yml" <<YML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: 127.0.0.1:$REGISTRY_PORT}
YML
  docker-registry serve "$WORK/registry.yml" > "$WORK/registry.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$REGISTRY_PORT/v2/"
  DEMO_DIGEST=$("$BUILD/layercache-seed" --registry "http://127.0.0.1:$REGISTRY_PORT" \
    --repo demo/app --tag v1 --layers "${DEMO_LAYERS:-4MiB,8MiB,16MiB}")
  echo "demo upstream: docker-registry on 127.0.0.1:$REGISTRY_PORT with demo/app:v1 ($DEMO_DIGEST)"
}

write_demo_config() {  # $1 = listen port, $2 = admin (metrics) port
  cat > "$WORK/layercache.yaml" <<YML
server:
  listen:
    - address: 127.0.0.1:$1
admin:
  address: 127.0.0.1:${2:-0}
log:
  level: ${LOG_LEVEL:-info}
cache:
  path: $WORK/cache
  capacity: 1GiB
upstreams:
  - name: demo
    url: http://127.0.0.1:$REGISTRY_PORT
    default: true
YML
}
