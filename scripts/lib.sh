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

free_port() { "$BUILD/layercache-seed" --free-port; }

stop_pid() {  # pid: SIGTERM, at most 10 s to exit, then SIGKILL
  local pid=$1
  [ -n "$pid" ] || return 0
  kill "$pid" 2> /dev/null || return 0
  for _ in $(seq 100); do
    kill -0 "$pid" 2> /dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2> /dev/null || true
  wait "$pid" 2> /dev/null || true
}

# A docker-registry on a free loopback port: storage $WORK/$1, config $WORK/$1.yml, output
# $WORK/$1.log; $2 = more settings for its `log:` mapping; $3 = a storage host's URL: blob
# GETs are answered 307 to it + the blob's storage path (its `redirect` middleware), as
# registries send blobs to GCS, S3 or a CDN. Sets REGISTRY_PORT.
start_registry() {
  REGISTRY_PORT=$(free_port)
  mkdir -p "$WORK/$1"
  cat > "$WORK/$1.yml" <<YML
version: 0.1
log: {level: warn${2:+, $2}}
storage: {filesystem: {rootdirectory: $WORK/$1}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$REGISTRY_PORT}
YML
  if [ -n "${3:-}" ]; then
    echo "middleware: {storage: [{name: redirect, options: {baseurl: $3}}]}" >> "$WORK/$1.yml"
  fi
  docker-registry serve "$WORK/$1.yml" > "$WORK/$1.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$REGISTRY_PORT/v2/"
}

# layercache-throttle in front of REGISTRY_PORT: $1 = round trip ms, $2 = bytes/s per connection
# (0: unlimited). Sets UPSTREAM to its URL. With $3 (a port) and $4 (a name for its files), in
# front of that port instead, and only THROTTLE_URL is set.
start_throttle() {
  local name=${4:-throttle}
  timeout 3600 "$BUILD/layercache-throttle" --target "127.0.0.1:${3:-$REGISTRY_PORT}" \
    --rtt-ms "$1" --bandwidth "$2" --max-seconds 3500 \
    > "$WORK/$name.out" 2> "$WORK/$name.log" &
  PIDS+=($!)
  for _ in $(seq 100); do
    [ -s "$WORK/$name.out" ] && break
    sleep 0.1
  done
  THROTTLE_URL="http://127.0.0.1:$(head -1 "$WORK/$name.out")"
  [ -n "${4:-}" ] || UPSTREAM=$THROTTLE_URL
  wait_http "$THROTTLE_URL/"  # any answer, even a 404
}

# nginx serving the directory $2 as a storage host — where a registry's blob redirects point
# (GCS, S3, a CDN) — on a free loopback port; $1 = a name for its files ($WORK/$1); $3 =
# max_ranges (empty: any number of ranges, one multipart answer; 1: a request for several
# ranges gets the whole file, as GCS and S3 answer it). Its access log (combined format, as
# docker-registry's) is $WORK/$1/access.log. Sets STORAGE_PORT.
start_storage_host() {
  mkdir -p "$2" "$WORK/$1"
  : > "$WORK/$1/access.log"
  STORAGE_PORT=$(free_port)
  run_nginx "$WORK/$1" 1 "
  access_log $WORK/$1/access.log combined;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:$STORAGE_PORT;
    root $2;
    ${3:+max_ranges $3;}
  }" "http://127.0.0.1:$STORAGE_PORT/"
}

# nginx from directory $1 (config, pid, logs and temporary files there; workers run as the
# calling user, so that directory stays private to it) with $2 worker processes; $3 = the
# lines inside its http {} beside the shared ones; waits until the URL $4 answers. Sets
# NGINX_PID.
run_nginx() {
  local dir=$1
  mkdir -p "$dir/tmp"
  cat > "$dir/nginx.conf" << CONF
user $(id -un) $(id -gn);
worker_processes $2;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  default_type application/octet-stream;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
$3
}
CONF
  nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' \
    > "$dir/nginx.out" 2>&1 &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  wait_http "$4"
}

start_demo_registry() {  # sets REGISTRY_PORT; seeds demo/app:v1
  start_registry registry
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
