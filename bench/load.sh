#!/usr/bin/env bash
# HTTP load benchmark of the Portcullis data plane against its physical limits on this machine.
#
#   bash bench/load.sh            # ~4 min; writes bench/LOAD.md
#
# What it measures (world S, release build, loopback only):
#   1. bare hyper (bench/bare_hyper.rs: same hyper/tokio setup, fixed 200 JSON) ← transport limit
#   2. portcullis POST /v1/check, cycling 2,000 pre-generated world-S checks (~50 % allow)
#   3. portcullis POST /v1/filter, 1,000 resources per request (decisions/s = req/s × 1000)
#   4. nginx alone serving a static 200 file
#   5. nginx auth_request → portcullis, then the same static file: (a) HEAD /healthz, "transport
#      only" (no decision); (b) /v1/forward-auth deciding the world-S checks (identity from a
#      gateway-set header, target /s/<action>/<resource>; ~50 % end in 401/403), asked with HEAD
#      (keeps nginx's upstream connections on denials) and with GET (as deploy/nginx.conf)
#   6. p99 at half of peak: open-loop fixed rate (bench/fixed_rate.rs, wrk2-style) at 50 % of the
#      /v1/check peak measured in step 2 (and the same rate on bare hyper, for reference)
#   7. optional: h2c with h2load (H2=0 to skip)
# Closed-loop runs use wrk (1 thread, $CONNS keep-alive connections, Lua script bench/load.lua),
# each after a ${WARM}s warm-up run, for ${DUR}s.
# Layout (PIN=1, default on ≥2 cores): the load generator runs on CPU $GEN_CPU and every server
# process (portcullis, bare hyper, nginx — and nginx+portcullis together) on CPU $SRV_CPU, so
# every server gets the same single core and the generator never competes with it.
#
# Knobs (environment): DUR=15 WARM=3 CONNS=32 FIXED_CONNS=32 PIN=1 GEN_CPU=0 SRV_CPU=1 H2=1
#   PORT_BASE=18180 OUT=bench/LOAD.md CHECKS=2000 ALLOW_PCT=50
#   NICE=0 (e.g. NICE=-10 as root to out-prioritise other work on a busy shared machine)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DUR=${DUR:-15}
WARM=${WARM:-3}
CONNS=${CONNS:-32}
FIXED_CONNS=${FIXED_CONNS:-32}
H2=${H2:-1}
CHECKS=${CHECKS:-2000}
ALLOW_PCT=${ALLOW_PCT:-50}
OUT=${OUT:-bench/LOAD.md}
PORT_BASE=${PORT_BASE:-18180}
P_PORT=$PORT_BASE            # portcullis
B_PORT=$((PORT_BASE + 1))    # bare hyper
N_STATIC=$((PORT_BASE + 2))  # nginx alone
N_AUTH=$((PORT_BASE + 3))    # nginx auth_request → portcullis HEAD /healthz (transport only)
                             # PORT_BASE+4/+5: nginx auth_request → /v1/forward-auth (HEAD/GET)
NICE_CMD=""
if [ "${NICE:-0}" != 0 ]; then
  # With autogroup scheduling, nice only ranks processes within a session: run in a session of
  # our own and raise that session's weight too.
  if [ -z "${_LOAD_SESSION:-}" ] && command -v setsid >/dev/null; then
    _LOAD_SESSION=1 exec setsid -w bash "$0" "$@"
  fi
  if [ -w /proc/self/autogroup ]; then echo "$NICE" >/proc/self/autogroup 2>/dev/null || true; fi
  NICE_CMD="nice -n $NICE"
fi
if [ "$(nproc)" -ge 2 ] && [ "${PIN:-1}" = 1 ]; then
  GEN_CPU=${GEN_CPU:-0}
  SRV_CPU=${SRV_CPU:-1}
  GEN="$NICE_CMD taskset -c $GEN_CPU"
  SRV="$NICE_CMD taskset -c $SRV_CPU"
  LAYOUT="generator pinned to CPU $GEN_CPU, every server process to CPU $SRV_CPU (taskset)"
else
  GEN="$NICE_CMD"
  SRV="$NICE_CMD"
  LAYOUT="no pinning (generator and servers share all $(nproc) CPUs)"
fi

log() { printf '\n== %s\n' "$*" >&2; }

# --- tools ---------------------------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
if [ "$H2" = 1 ]; then command -v h2load >/dev/null || need+=(nghttp2-client); fi
command -v curl >/dev/null || need+=(curl)
command -v taskset >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

for p in $P_PORT $B_PORT $N_STATIC $N_AUTH $((PORT_BASE + 4)) $((PORT_BASE + 5)); do
  if ss -Htln "sport = :$p" | grep -q .; then
    echo "port $p is in use; set PORT_BASE to a free range" >&2
    exit 1
  fi
done

# --- build ---------------------------------------------------------------------------------
log "build (release): portcullis + examples bare_hyper, load_bodies, fixed_rate"
cargo build --release --quiet --bin portcullis --example bare_hyper --example load_bodies --example fixed_rate
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN=$TARGET/release/portcullis
EX=$TARGET/release/examples

TMP=$(mktemp -d /tmp/portcullis-load.XXXXXX)
chmod 755 "$TMP"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

wait_http() { # URL: wait up to 10 s for any HTTP answer
  for _ in $(seq 100); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  return 1
}

# CPU time (ns) the given processes have run, all threads (schedstat; ticks as a fallback).
cpu_ns() {
  local t=0 p f a f2
  for p in "$@"; do
    for f in /proc/"$p"/task/*/schedstat; do
      read -r a _ <"$f" 2>/dev/null && t=$((t + a))
    done
  done
  if [ "$t" = 0 ]; then
    for p in "$@"; do
      read -r -a f2 <"/proc/$p/stat"
      t=$((t + (f2[13] + f2[14]) * 1000000000 / $(getconf CLK_TCK)))
    done
  fi
  echo "$t"
}
# CPU seconds (user+sys) of this shell's finished children, from the `times` builtin. Call it
# as `child_cpu VAR` (not in $(…): a subshell has its own, empty, child times).
child_cpu() {
  times >"$TMP/times"
  printf -v "$1" '%s' "$(tail -1 "$TMP/times" | awk '{ s = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); s += a[1] * 60 + a[2] } printf "%.3f", s }')"
}
now() { date +%s.%N; }
# srv_stats C0 C1 T0 T1 REQUESTS: server CPU % of one core and µs of server CPU per request
srv_stats() {
  python3 -c "c=($2-$1)/1e9; t=$4-$3; n=max($5,1); print(f'srv_cpu={100*c/t:.0f} srv_us_per_req={1e6*c/n:.2f}')"
}

RESULTS=$TMP/results.txt
: >"$RESULTS"

# wrk_run LABEL URL MODE [FILE [PATH]]: a warm-up run, then the measured run. SRV_PIDS: the
# server processes whose CPU use is reported (percent of one core, µs per request); the
# generator's own CPU use is reported too (gen_cpu).
wrk_run() {
  local label=$1 url=$2
  shift 2
  $GEN wrk -t1 -c"$CONNS" -d"${WARM}s" --timeout 2s -s bench/load.lua "$url" -- "$@" >/dev/null
  local c0 c1 t0 t1 g0 g1 line n p0 p1 split=""
  child_cpu g0
  c0=$(cpu_ns $SRV_PIDS)
  p0=$(cpu_ns ${PART_PID:-})
  t0=$(now)
  $GEN wrk -t1 -c"$CONNS" -d"${DUR}s" --timeout 2s -s bench/load.lua "$url" -- "$@" >"$TMP/wrk.out"
  t1=$(now)
  c1=$(cpu_ns $SRV_PIDS)
  p1=$(cpu_ns ${PART_PID:-})
  child_cpu g1
  line=$(grep '^RESULT' "$TMP/wrk.out" | sed 's/^RESULT //')
  n=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$line")
  if [ -n "${PART_PID:-}" ]; then
    split=" p_us_per_req=$(python3 -c "print(f'{($p1-$p0)/1e3/max($n,1):.2f}')")"
  fi
  echo "$label $line $(srv_stats "$c0" "$c1" "$t0" "$t1" "$n")$split gen_cpu=$(python3 -c "print(round(100*($g1-$g0)/($t1-$t0)))")" |
    tee -a "$RESULTS" >&2
}

# --- data ----------------------------------------------------------------------------------
log "world S and request material"
"$BIN" generate --world s --out "$TMP/s.json"
BODIES=$("$EX/load_bodies" "$TMP" "$CHECKS" "$ALLOW_PCT")
echo "$BODIES" >&2

# --- portcullis ----------------------------------------------------------------------------
log "portcullis serve (release) on 127.0.0.1:$P_PORT"
# Forward-auth route table for the nginx runs: the gateway has authenticated the user and passes
# its id in X-Auth-User; the target path /s/<action>/<resource> names the check.
cat >"$TMP/portcullis.yaml" <<YAML
forward_auth:
  identity: { header: X-Auth-User }
  routes:
    - { path: "/s/{action}/{resource}", tenant: s, action: "{action}", resource: "{resource}" }
YAML
# A fresh embedded store in the temp dir, seeded from world S (never ./portcullis-data).
$SRV "$BIN" serve --config "$TMP/portcullis.yaml" --listen "127.0.0.1:$P_PORT" --data "$TMP/s.json" \
  --store "$TMP/store" --admin-token "load-bench-token-$$" --log warn &
P_PID=$!
PIDS+=("$P_PID")
wait_http "http://127.0.0.1:$P_PORT/readyz"

log "verify: the server's decisions match the generated expectations"
python3 - "$TMP/checks.tsv" "$TMP/filter.json" "$P_PORT" <<'PY' >&2
import http.client, json, sys
tsv, filt, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port)
bad = n = allowed = 0
for line in open(tsv):
    s, a, r, ok = line.rstrip("\n").split("\t")
    c.request("POST", "/v1/check", json.dumps({"tenant": "s", "subject": s, "action": a, "resource": r}),
              {"Content-Type": "application/json"})
    resp = c.getresponse(); d = json.loads(resp.read())
    n += 1; allowed += d["allowed"]
    if resp.status != 200 or d["allowed"] != (ok == "true"):
        bad += 1
body = open(filt).read()
c.request("POST", "/v1/filter", body, {"Content-Type": "application/json"})
resp = c.getresponse(); d = json.loads(resp.read())
print(f"checks: {n} sent, {allowed} allowed, {bad} mismatches; filter: {len(json.loads(body)['resources'])} resources, {len(d['allowed'])} allowed (HTTP {resp.status})")
if bad or resp.status != 200:
    sys.exit("server disagrees with expectations")
PY

# --- bare hyper ----------------------------------------------------------------------------
log "bare hyper on 127.0.0.1:$B_PORT"
$SRV "$EX/bare_hyper" "127.0.0.1:$B_PORT" 2>/dev/null &
B_PID=$!
PIDS+=("$B_PID")
wait_http "http://127.0.0.1:$B_PORT/"

log "closed loop (wrk): bare hyper, portcullis /v1/check, portcullis /v1/filter"
SRV_PIDS=$B_PID wrk_run bare_hyper "http://127.0.0.1:$B_PORT" check "$TMP/checks.tsv"
SRV_PIDS=$P_PID wrk_run check "http://127.0.0.1:$P_PORT" check "$TMP/checks.tsv"
SRV_PIDS=$P_PID wrk_run filter "http://127.0.0.1:$P_PORT" filter "$TMP/filter.json"

# --- fixed rate at half of peak -------------------------------------------------------------
PEAK=$(awk '$1=="check"{for(i=2;i<=NF;i++) if($i ~ /^rps=/){sub("rps=","",$i); print int($i)}}' "$RESULTS")
HALF=$((PEAK / 2))
log "open loop (fixed_rate) at $HALF req/s = half of the /v1/check peak"
for target in check bare_hyper; do
  if [ $target = check ]; then port=$P_PORT; pid=$P_PID; else port=$B_PORT; pid=$B_PID; fi
  c0=$(cpu_ns $pid); t0=$(now)
  line=$($GEN "$EX/fixed_rate" "127.0.0.1:$port" /v1/check "$HALF" "$DUR" "$FIXED_CONNS" "$TMP/checks.tsv" "$WARM")
  t1=$(now); c1=$(cpu_ns $pid)
  n=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$line")
  echo "half_$target $line $(srv_stats "$c0" "$c1" "$t0" "$t1" "$n")" | tee -a "$RESULTS" >&2
done

# --- h2c (optional) -------------------------------------------------------------------------
if [ "$H2" = 1 ]; then
  log "h2c (h2load, one body): bare hyper and portcullis /v1/check"
  head -1 "$TMP/checks.tsv" | awk -F'\t' '{printf "{\"tenant\":\"s\",\"subject\":\"%s\",\"action\":\"%s\",\"resource\":\"%s\"}", $1, $2, $3}' >"$TMP/one.json"
  for target in bare_hyper check; do
    if [ $target = check ]; then port=$P_PORT; pid=$P_PID; else port=$B_PORT; pid=$B_PID; fi
    $GEN h2load -t1 -c8 -m16 -D "$DUR" --warm-up-time="$WARM" -d "$TMP/one.json" \
      -H 'content-type: application/json' "http://127.0.0.1:$port/v1/check" >"$TMP/h2.out" &
    h2pid=$!
    sleep "$WARM"
    c0=$(cpu_ns $pid); t0=$(now)
    wait "$h2pid"
    t1=$(now); c1=$(cpu_ns $pid)
    out=$(cat "$TMP/h2.out")
    rps=$(grep -oE 'finished in [^,]+, [0-9.]+ req/s' <<<"$out" | grep -oE '[0-9.]+ req/s' | cut -d' ' -f1)
    ok=$(grep -oE '[0-9]+ 2xx' <<<"$out" | cut -d' ' -f1)
    mean=$(grep -E '^time for request:' <<<"$out" | awk '{print $6}')
    echo "h2_$target rps=$rps ok=$ok mean=$mean $(srv_stats "$c0" "$c1" "$t0" "$t1" "${ok:-0}")" | tee -a "$RESULTS" >&2
  done
fi
kill "$B_PID" 2>/dev/null || true

# --- nginx --------------------------------------------------------------------------------
# nginx reuses a keep-alive upstream connection for an auth subrequest only when the answer has
# no body (the subrequest never reads one). Measured here: GET /healthz (15-byte body) made nginx
# open a new connection per request and halved the rate. So the transport-only probe asks
# HEAD /healthz; forward-auth allows are body-less (200), and the script counts the upstream
# connections nginx closed (a body on denials would show here).
FA=0
probe=$(curl -s -o /dev/null -w '%{http_code}' -H 'X-Auth-User: u0' -H 'X-Original-URI: /s/asset:read/org-0' \
  -H 'X-Original-Method: GET' "http://127.0.0.1:$P_PORT/v1/forward-auth" || true)
if [ "$probe" != 404 ] && [ "$probe" != 000 ]; then FA=1; fi
log "nginx: static vs auth_request → portcullis (forward-auth: $([ $FA = 1 ] && echo yes || echo "not in this build"))"
mkdir -p "$TMP/nginx/www" "$TMP/nginx/logs"
printf '{"status":"ok"}\n' >"$TMP/nginx/www/ok.json"
auth_server() { # PORT AUTH_PATH AUTH_METHOD
  cat <<NGX
  server {
    listen 127.0.0.1:$1;
    root $TMP/nginx/www;
    location / {
      auth_request /_portcullis;
      try_files /ok.json =404;
    }
    location = /_portcullis {
      internal;
      proxy_pass http://portcullis$2;
      proxy_method $3;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI \$request_uri;
      proxy_set_header X-Original-Method \$request_method;
      proxy_set_header X-Forwarded-Uri "";
      proxy_set_header X-Forwarded-Method "";
    }
  }
NGX
}
N_FA=$((PORT_BASE + 4))
N_FA_GET=$((PORT_BASE + 5))
cat >"$TMP/nginx/nginx.conf" <<NGX
daemon off;
user root;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 4096; multi_accept on; }
http {
  access_log off;
  sendfile on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  open_file_cache max=16 inactive=60s;
  default_type application/json;
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  upstream portcullis {
    server 127.0.0.1:$P_PORT;
    keepalive 64;
  }
  # nginx alone: a static 200 response.
  server {
    listen 127.0.0.1:$N_STATIC;
    root $TMP/nginx/www;
    location / { try_files /ok.json =404; }
  }
  # nginx auth_request → portcullis HEAD /healthz (transport only), then the same static file.
$(auth_server "$N_AUTH" /healthz HEAD)
  # nginx auth_request → portcullis /v1/forward-auth (a real decision), then the same file; asked
  # with HEAD, so that 401/403 answers (which carry a JSON error body) come without one and nginx
  # keeps its upstream connections; and with GET as in deploy/nginx.conf, for comparison.
$(auth_server "$N_FA" /v1/forward-auth HEAD)
$(auth_server "$N_FA_GET" /v1/forward-auth GET)
}
NGX
$SRV "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" &
N_PID=$!
PIDS+=("$N_PID")
wait_http "http://127.0.0.1:$N_STATIC/"
N_PIDS="$N_PID $(pgrep -P "$N_PID" | tr '\n' ' ')"

if [ $FA = 1 ]; then
  log "verify: nginx answers 200 exactly for the allowed checks"
  for port in $N_FA $N_FA_GET; do
  python3 - "$TMP/checks.tsv" "$port" <<'PY' >&2
import http.client, sys
tsv, port = sys.argv[1], int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
bad = n = 0
codes = {}
for line in list(open(tsv))[:400]:
    s, a, r, ok = line.rstrip("\n").split("\t")
    c.request("GET", f"/s/{a}/{r}", headers={"X-Auth-User": s})
    resp = c.getresponse(); resp.read()
    n += 1; codes[resp.status] = codes.get(resp.status, 0) + 1
    if (resp.status == 200) != (ok == "true"):
        bad += 1
print(f"forward-auth via nginx (port {port}): {n} requests, status counts {codes}, {bad} mismatches")
if bad:
    sys.exit("nginx/forward-auth disagrees with expectations")
PY
  done
fi

# TCP connections accepted on this machine so far (/proc/net/snmp PassiveOpens): over one run
# that is wrk's own connections (warm-up and measured run) plus each new upstream connection
# nginx opens to portcullis.
tcp_accepted() {
  awk '$1 == "Tcp:" { if (!h) { for (i = 1; i <= NF; i++) if ($i == "PassiveOpens") k = i; h = 1 } else print $k }' /proc/net/snmp
}
SRV_PIDS=$N_PIDS wrk_run nginx_static "http://127.0.0.1:$N_STATIC" get
tw0=$(tcp_accepted)
PART_PID=$P_PID SRV_PIDS="$N_PIDS $P_PID" wrk_run nginx_transport "http://127.0.0.1:$N_AUTH" get
tw1=$(tcp_accepted)
UPSTREAM_CLOSED_T=$((tw1 - tw0 - 2 * CONNS))
echo "transport run: nginx opened $UPSTREAM_CLOSED_T new upstream connections (≈0: keep-alive reused)" >&2
UPSTREAM_CLOSED=0
UPSTREAM_CLOSED_G=0
if [ $FA = 1 ]; then
  tw0=$(tcp_accepted)
  PART_PID=$P_PID SRV_PIDS="$N_PIDS $P_PID" wrk_run nginx_auth "http://127.0.0.1:$N_FA" fa "$TMP/checks.tsv"
  tw1=$(tcp_accepted)
  UPSTREAM_CLOSED=$((tw1 - tw0 - 2 * CONNS))
  echo "forward-auth run: nginx opened $UPSTREAM_CLOSED new upstream connections (≈0: keep-alive reused)" >&2
  tw0=$(tcp_accepted)
  PART_PID=$P_PID SRV_PIDS="$N_PIDS $P_PID" wrk_run nginx_auth_get "http://127.0.0.1:$N_FA_GET" fa "$TMP/checks.tsv"
  tw1=$(tcp_accepted)
  UPSTREAM_CLOSED_G=$((tw1 - tw0 - 2 * CONNS))
  echo "forward-auth (GET) run: nginx opened $UPSTREAM_CLOSED_G new upstream connections" >&2
fi

# --- report ------------------------------------------------------------------------------
log "writing $OUT"
CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
WRK_V=$(wrk -v 2>&1 | head -1 | awk '{print $1" "$2}' || true)
NGINX_V=$("$NGINX" -v 2>&1 | sed 's/.*version: //')
H2_V=$(h2load --version 2>/dev/null | head -1 || echo "-")
RUSTC_V=$(rustc --version)
HYPER_V=$(awk '/^name = "hyper"$/{getline; print $3}' Cargo.lock | tr -d '"' | head -1)
TOKIO_V=$(awk '/^name = "tokio"$/{getline; print $3}' Cargo.lock | tr -d '"' | head -1)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo "?")$(git diff --quiet HEAD -- src bench Cargo.toml 2>/dev/null || echo "+dirty")
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)

echo "$BODIES" >"$TMP/bodies.txt"
export NPROC=$(nproc) KERNEL=$(uname -r) DATE_UTC=$(date -u '+%Y-%m-%d %H:%M UTC')
export CPU_MODEL WRK_V NGINX_V H2_V RUSTC_V HYPER_V TOKIO_V COMMIT LOADAVG LAYOUT CONNS FIXED_CONNS \
  WARM DUR CHECKS ALLOW_PCT FA UPSTREAM_CLOSED UPSTREAM_CLOSED_T UPSTREAM_CLOSED_G NICE_LEVEL=${NICE:-0} PIN_FLAG=${PIN:-1}
python3 bench/load_report.py "$RESULTS" "$TMP/bodies.txt" "$OUT"
cat "$OUT"
