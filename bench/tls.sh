#!/usr/bin/env bash
# TLS benchmark, short: lbctl vs HAProxy vs nginx terminating TLS (mode http,
# one worker / process each, pinned to PROXY_CPU) in front of one nginx
# backend on 127.0.0.1:18191, with the same EC P-256 certificate (made here
# with the openssl CLI, in a temp dir, deleted on exit).
#
#   bash bench/tls.sh
#
# Two figures per proxy, by wrk over https (wrk on LOAD_CPU):
#   handshakes/s  a new TLS connection (full handshake, TLS 1.3) per request
#                 (wrk -H "Connection: close");
#   ka req/s      keep-alive requests over TLS.
# Then the ratios lbctl/HAProxy and lbctl/nginx. Options (environment):
#   DURATION=5s  CONNS=32  PROXY_CPU=0  LOAD_CPU=1  BUILD=1
# Installs haproxy, nginx, wrk, openssl with apt-get when missing (as root).
# Figures from a shared, loaded machine are only indicative: say so.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
CONNS=${CONNS:-32}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BUILD=${BUILD:-1}
PORT=18443
BACKEND=18191

missing=()
for t in haproxy nginx wrk openssl; do command -v "$t" >/dev/null || missing+=("$t"); done
if ((${#missing[@]})); then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ "$BUILD" = 1 ] && cargo build --release -q
LBCTL=$PWD/target/release/lbctl

TMP=$(mktemp -d /tmp/lbctl-tls-bench.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
	-subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
	-keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/combined.pem"

cat >"$TMP/backend.conf" <<CONF
daemon off; worker_processes 1; pid $TMP/backend.pid; error_log $TMP/backend.err;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$BACKEND; keepalive_requests 100000;
  location / { return 200 "ok\n"; } } }
CONF
taskset -c "$LOAD_CPU" nginx -c "$TMP/backend.conf" -e "$TMP/backend.err" &
pids+=($!)

write_lbctl() {
	cat >"$TMP/lbctl.toml" <<CONF
[master]
workers = 1
pid_file = "$TMP/lbctl.pid"
control_socket = "$TMP/lbctl.sock"
log_file = "$TMP/lbctl.log"
[[listen]]
name = "tls"
bind = "127.0.0.1:$PORT"
mode = "http"
pool = { max_idle = 64, idle_timeout = "30s" }
timeouts = { idle = "60s" }
tls = { certs = [ { cert = "$TMP/cert.pem", key = "$TMP/key.pem" } ] }
servers = [ { addr = "127.0.0.1:$BACKEND" } ]
CONF
}
write_haproxy() {
	cat >"$TMP/haproxy.cfg" <<CONF
global
  nbthread 1
  tune.ssl.default-dh-param 2048
defaults
  mode http
  timeout connect 3s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse safe
frontend tls
  bind 127.0.0.1:$PORT ssl crt $TMP/combined.pem alpn http/1.1
  default_backend b
backend b
  server s1 127.0.0.1:$BACKEND
CONF
}
write_nginx() {
	cat >"$TMP/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $TMP/nginx.pid; error_log $TMP/nginx.err;
events { worker_connections 4096; }
http { access_log off;
  upstream b { server 127.0.0.1:$BACKEND; keepalive 64; }
  server { listen 127.0.0.1:$PORT ssl; ssl_certificate $TMP/cert.pem;
    ssl_certificate_key $TMP/key.pem; keepalive_requests 100000;
    location / { proxy_pass http://b; proxy_http_version 1.1;
      proxy_set_header Connection ""; } } }
CONF
}

start() { # NAME: start the proxy pinned, wait until it answers over TLS
	case $1 in
	lbctl) write_lbctl; taskset -c "$PROXY_CPU" "$LBCTL" start -c "$TMP/lbctl.toml" >"$TMP/lbctl.out" 2>&1 & ;;
	haproxy) write_haproxy; taskset -c "$PROXY_CPU" haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.out" 2>&1 & ;;
	nginx) write_nginx; taskset -c "$PROXY_CPU" nginx -c "$TMP/nginx.conf" -e "$TMP/nginx.err" & ;;
	esac
	proxy=$!
	pids+=("$proxy")
	for _ in $(seq 100); do
		curl -sk --max-time 1 "https://127.0.0.1:$PORT/" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "$1 did not come up" >&2
	return 1
}
stop() {
	kill "$proxy" 2>/dev/null || true
	wait "$proxy" 2>/dev/null || true
	for _ in $(seq 50); do
		curl -sk --max-time 1 "https://127.0.0.1:$PORT/" >/dev/null 2>&1 || return 0
		sleep 0.1
	done
}
rate() { # wrk output -> requests/s
	awk '/^Requests\/sec:/ {print int($2)}'
}
errors() {
	awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' '
}

declare -A hs ka
for p in lbctl haproxy nginx; do
	start "$p"
	taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d1s "https://127.0.0.1:$PORT/" >/dev/null 2>&1 || true
	out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" -H "Connection: close" "https://127.0.0.1:$PORT/")
	hs[$p]=$(rate <<<"$out")
	e1=$(errors <<<"$out")
	out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" "https://127.0.0.1:$PORT/")
	ka[$p]=$(rate <<<"$out")
	e2=$(errors <<<"$out")
	printf '%-8s handshakes/s %8s   ka req/s %8s   %s%s\n' "$p" "${hs[$p]}" "${ka[$p]}" "$e1" "$e2"
	stop
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
echo
echo "lbctl/haproxy: handshakes $(ratio "${hs[lbctl]}" "${hs[haproxy]}"), keep-alive $(ratio "${ka[lbctl]}" "${ka[haproxy]}")"
echo "lbctl/nginx:   handshakes $(ratio "${hs[lbctl]}" "${hs[nginx]}"), keep-alive $(ratio "${ka[lbctl]}" "${ka[nginx]}")"
echo "(one short run of $DURATION each, $CONNS connections, on $(nproc) CPUs; a loaded machine gives indicative figures only)"
