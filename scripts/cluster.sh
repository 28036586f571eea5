#!/usr/bin/env bash
# A gateway cluster on one machine: PostgreSQL and Redis (started only if not already running),
# N `gateway run` instances on their own ports sharing one config, state store, session store
# and secret key, and nginx in front as the load balancer (round robin, next instance on a
# connection error). Prints the URL. `--stop` stops exactly what this script started.
#
#   scripts/cluster.sh [--dir DIR] [--instances N] [--port PORT] [--pg-port P] [--redis-port P]
#                      [--state URL] [--sessions URL]
#   scripts/cluster.sh --stop [--dir DIR]
#
# DIR (default .cluster) holds config/ (written on first start unless it exists: the demo's
# users and policies, passwords in config/credentials.txt), state/, audit/, log/ and run/ (pid
# files). --state/--sessions use servers you run; without them PostgreSQL on --pg-port (5432)
# and Redis on --redis-port (6379) are used, and started here (scratch, no persistence) when
# nothing answers there; the database is gateway_<hash of the secret key> (created if missing,
# never dropped). --port 0 picks a free port for nginx.
set -Eeuo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir="$root/.cluster"
instances=3
lb_port=8000
pg_port=5432
redis_port=6379
state=""
sessions=""
stop=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=$2; shift 2 ;;
    --instances) instances=$2; shift 2 ;;
    --port) lb_port=$2; shift 2 ;;
    --pg-port) pg_port=$2; shift 2 ;;
    --redis-port) redis_port=$2; shift 2 ;;
    --state) state=$2; shift 2 ;;
    --sessions) sessions=$2; shift 2 ;;
    --stop) stop=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "cluster.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
run="$dir/run"
log="$dir/log"
python="$root/.venv/bin/python"
[ -x "$python" ] || python=$(command -v python3)
helper() { "$python" "$root/scripts/cluster_helper.py" "$@"; }
say() { echo "cluster: $*" >&2; }

# -- stopping: only processes whose pid file this script wrote, and only if still theirs ----

pid_of() {  # PIDFILE: its pid, or nothing (some programs remove their pid file as they exit)
  cat "$1" 2>/dev/null || true
}

ours() {  # PID WORD: the process runs and its command line contains WORD (not a reused pid)
  [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null |
    grep -q -- "$2"
}

running() {  # PID: it exists and is not a zombie waiting for its parent
  local state
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
  state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

wait_pid() {  # PID: wait up to 15 s for it to end, then kill it
  for _ in $(seq 1 150); do
    running "$1" || return 0
    sleep 0.1
  done
  say "pid $1 did not stop in 15 s: killing it"
  kill -KILL "$1" 2>/dev/null || true
}

# stop PIDFILE... : signal (TERM) every process named in these files that is still ours, then
# wait for all of them; the files are removed.
stop() {
  local word=$1 file pid pids=()
  shift
  for file in "$@"; do
    pid=$(pid_of "$file")
    if ours "$pid" "$word"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for pid in "${pids[@]}"; do wait_pid "$pid"; done
  rm -f "$@"
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_bin() {
  local initdb
  initdb=$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | tail -n 1)
  [ -n "$initdb" ] || { say "PostgreSQL is not installed (initdb not found)"; exit 1; }
  dirname "$initdb"
}

stop_all() {
  stop nginx "$run/nginx.pid"
  stop gateway "$run"/gateway-*.pid  # all at once: each takes a moment to drain
  rm -f "$run"/gateway-*.port
  stop cluster_helper.py "$run/backends.pid"
  stop redis-server "$run/redis.pid"
  if [ -f "$run/postgres.datadir" ]; then
    local data
    data=$(cat "$run/postgres.datadir")
    as_postgres "$(pg_bin)/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$data" "$run/postgres.datadir"
  fi
  rm -f "$run/started"
}

if [ "$stop" = 1 ]; then
  stop_all
  say "stopped what was started in $dir"
  exit 0
fi

if [ -f "$run/started" ]; then
  say "a cluster started from $dir is still running: scripts/cluster.sh --stop --dir $dir"
  exit 1
fi
mkdir -p "$run" "$log" "$dir/state" "$dir/audit"
touch "$run/started"
trap 'say "start failed: stopping what was started (logs in $log)"; stop_all' ERR

# -- PostgreSQL ---------------------------------------------------------------------------------
if [ -z "$state" ]; then
  if ! pg_isready -q -h 127.0.0.1 -p "$pg_port"; then
    say "no PostgreSQL on 127.0.0.1:$pg_port: starting a scratch one"
    bin=$(pg_bin)
    # Outside DIR: the postgres user may not be able to enter DIR when this runs as root.
    data=$(mktemp -d /tmp/gateway-cluster-pg.XXXXXX)
    echo "$data" >"$run/postgres.datadir"
    [ "$(id -u)" = 0 ] && chown postgres: "$data"
    as_postgres "$bin/initdb" -D "$data" -U postgres --auth=trust >"$log/postgres-init.log" 2>&1
    as_postgres "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 30 \
      -o "-p $pg_port -c listen_addresses=127.0.0.1 -k $data" start >/dev/null
  fi
  # One database per secret key: the signing keys and 2FA secrets in it are sealed with it, so
  # a folder started afresh (new key) must not meet an older folder's database.
  helper secret-key "$dir/state/gateway.key"
  db="gateway_$(sha256sum "$dir/state/gateway.key" | cut -c1-12)"
  if ! psql -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    createdb -h 127.0.0.1 -p "$pg_port" -U postgres "$db"
  fi
  state="postgresql://postgres@127.0.0.1:$pg_port/$db"
fi

# -- Redis --------------------------------------------------------------------------------------
if [ -z "$sessions" ]; then
  if ! redis-cli -h 127.0.0.1 -p "$redis_port" ping >/dev/null 2>&1; then
    say "no Redis on 127.0.0.1:$redis_port: starting one without persistence"
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
      --daemonize yes --pidfile "$run/redis.pid" --dir "$run" --logfile "$log/redis.log"
    for _ in $(seq 1 50); do
      redis-cli -h 127.0.0.1 -p "$redis_port" ping >/dev/null 2>&1 && break
      sleep 0.1
    done
  fi
  sessions="redis://127.0.0.1:$redis_port/0"
fi

# -- config (kept if it exists), secret key, demo backends --------------------------------------
config="$dir/config/gateway.yaml"
if [ ! -f "$config" ]; then
  dash_port=$(helper free-port)
  api_port=$(helper free-port)
  helper write-config "$dir/config" --state "$state" --sessions "$sessions" \
    --dash-port "$dash_port" --api-port "$api_port"
  [ "$lb_port" = 0 ] && lb_port=$(helper free-port)
  setsid nohup "$python" "$root/scripts/cluster_helper.py" backends "$dash_port" "$api_port" \
    "http://127.0.0.1:$lb_port/_gateway/jwks.json" >"$log/backends.log" 2>&1 &
  echo $! >"$run/backends.pid"
fi
[ "$lb_port" = 0 ] && lb_port=$(helper free-port)
gateway_bin="$root/.venv/bin/gateway"
[ -x "$gateway_bin" ] || gateway_bin=$(command -v gateway)
secret=$(
  "$python" - "$config" <<'PY'
import sys
from pathlib import Path
from gateway.policy.source import load
result = load(Path(sys.argv[1]))
print(result.snapshot.paths.secret_key_file if result.snapshot else "")
PY
)
[ -n "$secret" ] && helper secret-key "$secret"  # before the instances, or each makes its own
"$gateway_bin" check --config "$config" >"$log/check.log" 2>&1 || [ $? = 3 ] || {
  say "gateway check failed:"; cat "$log/check.log" >&2; false; }

# -- the instances ------------------------------------------------------------------------------
servers=""
for i in $(seq 1 "$instances"); do
  port=$(helper free-port)
  setsid nohup "$gateway_bin" run --config "$config" --port "$port" \
    >>"$log/gateway-$i.log" 2>&1 &
  echo $! >"$run/gateway-$i.pid"
  echo "$port" >"$run/gateway-$i.port"
  servers="$servers        server 127.0.0.1:$port max_fails=1 fail_timeout=5s;
"
done
for i in $(seq 1 "$instances"); do
  port=$(cat "$run/gateway-$i.port")
  helper wait-ready "http://127.0.0.1:$port/_gateway/readyz" 60 || {
    say "instance $i (port $port) did not become ready:"; tail -n 20 "$log/gateway-$i.log" >&2
    false; }
done

# -- nginx --------------------------------------------------------------------------------------
cat >"$run/nginx.conf" <<EOF
# Written by scripts/cluster.sh.
worker_processes 1;
pid $run/nginx.pid;
error_log $log/nginx-error.log warn;
events { worker_connections 4096; }
http {
    # Which instance answered (and, after a connection error, which ones were tried).
    log_format cluster '\$msec \$status \$request_method \$uri upstream=\$upstream_addr '
                       'upstream_status=\$upstream_status';
    access_log $log/nginx-access.log cluster buffer=64k flush=1s;
    client_body_temp_path $run/nginx-client-body;
    proxy_temp_path $run/nginx-proxy;
    fastcgi_temp_path $run/nginx-fastcgi;
    uwsgi_temp_path $run/nginx-uwsgi;
    scgi_temp_path $run/nginx-scgi;
    map \$http_upgrade \$connection_upgrade { default upgrade; "" ""; }
    upstream gateway {
$servers        keepalive 64;
    }
    server {
        listen 127.0.0.1:$lb_port;
        client_max_body_size 0;
        location / {
            proxy_pass http://gateway;
            proxy_http_version 1.1;
            proxy_set_header Host \$http_host;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            # Another instance on connection errors only. nginx never retries a request that
            # is not idempotent (POST) once it was sent, so a sign-in is never sent twice.
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 2s;
            proxy_read_timeout 1h;
            # Stream both ways, as the gateway does (no temporary files, WebSockets work).
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
EOF
nginx -t -p "$run" -c "$run/nginx.conf" >"$log/nginx-test.log" 2>&1 || {
  cat "$log/nginx-test.log" >&2; false; }
nginx -p "$run" -c "$run/nginx.conf"
for _ in $(seq 1 50); do [ -s "$run/nginx.pid" ] && break; sleep 0.1; done
helper wait-ready "http://127.0.0.1:$lb_port/_gateway/healthz" 15
trap - ERR
echo "$lb_port" >"$run/nginx.port"

say "$instances instances behind nginx; state $state; sessions $sessions"
[ -f "$dir/config/credentials.txt" ] && say "demo sign-ins: $dir/config/credentials.txt"
say "stop with: scripts/cluster.sh --stop --dir $dir"
echo "http://127.0.0.1:$lb_port/"
