#!/usr/bin/env bash
# Access log cost: CPU per request of lbctl with `access_log` on vs off, side by side.
#
#   bash bench/access_log.sh
#
# Starts one nginx backend (127.0.0.1:18181, answers "ok") and two lbctl masters over it
# with the same config but for `access_log`: "off" on 127.0.0.1:18180, "on" on
# 127.0.0.1:18190 (the log in a temp dir). Both get the same wrk load at the same time
# (an A/B under the same machine load, so other processes on the machine slow both
# alike), and each one's CPU (time on CPU of its worker processes, writer thread included,
# from /proc/PID/task/*/schedstat) is divided by the requests wrk completed against it.
# Prints one row per round and the median ratio on/off (the goal: <= 1.1).
# Installs wrk and nginx-light with apt-get if missing (root). Everything stays on
# 127.0.0.1 and every process it starts is stopped on exit.
#
# Options (environment variables):
#   MODE=http         http: one line per request (wrk keep-alive); tcp: one line per
#                     connection (wrk with `Connection: close`, a new connection per request)
#   FORMAT=json       access_log format of the "on" side (json | text)
#   ROUNDS=3          rounds; the ratio printed at the end is the median
#   DURATION=10s      wrk run length per round
#   CONNS=32          wrk connections per side
#   DELAY_MS=1        each wrk connection waits this long between requests (a wrk Lua
#                     `delay`), so both sides serve about the same rate (at most
#                     CONNS * 1000 / DELAY_MS requests/s) below saturation; without it
#                     (DELAY_MS=0) both run flat out and the side that gets less CPU from
#                     the scheduler batches fewer events per wakeup, which inflates its
#                     CPU per request: on a loaded machine that, not the log, dominates
#   WORKERS=1         lbctl workers per side
#   LBCTL=target/release/lbctl

set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${MODE:-http} FORMAT=${FORMAT:-json} ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10s}
CONNS=${CONNS:-32} DELAY_MS=${DELAY_MS:-1} WORKERS=${WORKERS:-1} LBCTL=${LBCTL:-target/release/lbctl}
for tool in wrk nginx; do
	command -v $tool >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk nginx-light >/dev/null; }
done
[[ -x $LBCTL ]] || cargo build --release
TMP=$(mktemp -d /tmp/lbctl-access-bench.XXXXXX)
PIDS=()
cleanup() {
	for side in off on; do
		[[ -f $TMP/$side.toml ]] && "$LBCTL" stop -c "$TMP/$side.toml" >/dev/null 2>&1 || true
	done
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT

mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:18181; location / { return 200 "ok\n"; } }
}
NGINX
nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" &
PIDS+=($!)

write_conf() { # side port extra
	cat >"$TMP/$1.toml" <<TOML
[master]
workers = $WORKERS
pid_file = "$TMP/$1.pid"
control_socket = "$TMP/$1.sock"
log_file = "$TMP/$1.log"
[[listen]]
name = "bench"
bind = "127.0.0.1:$2"
mode = "$MODE"
servers = [{ addr = "127.0.0.1:18181" }]
$3
TOML
	[[ $MODE == http ]] && echo 'pool = { max_idle = 64, idle_timeout = "30s" }' >>"$TMP/$1.toml"
	"$LBCTL" start -d -c "$TMP/$1.toml" >/dev/null
}
write_conf off 18180 ""
write_conf on 18190 "access_log = { path = \"$TMP/access.log\", format = \"$FORMAT\" }"

# CPU time in ns of a side's workers, every thread (the writer too): the first field
# of /proc/PID/task/TID/schedstat (ns precision; /proc/PID/stat counts 10ms ticks).
cpu_ns() {
	local sum=0 pid t v
	for pid in $("$LBCTL" status --json -c "$TMP/$1.toml" | python3 -c 'import json,sys; print(" ".join(str(w["pid"]) for w in json.load(sys.stdin)["workers"]))'); do
		for t in /proc/"$pid"/task/*/schedstat; do
			read -r v _ <"$t" && sum=$((sum + v))
		done
	done
	echo $sum
}
HDR=()
[[ $MODE == tcp ]] && HDR=(-H "Connection: close")
if [[ $DELAY_MS != 0 ]]; then
	echo "function delay() return $DELAY_MS end" >"$TMP/delay.lua"
	HDR+=(-s "$TMP/delay.lua")
fi
printf "%-6s %12s %12s %14s %14s %7s\n" round req_off req_on us/req_off us/req_on ratio
RATIOS=()
for r in $(seq 1 "$ROUNDS"); do
	a0=$(cpu_ns off) b0=$(cpu_ns on)
	wrk -t1 -c"$CONNS" -d"$DURATION" "${HDR[@]}" http://127.0.0.1:18180/ >"$TMP/wrk-off" 2>&1 &
	w1=$!
	wrk -t1 -c"$CONNS" -d"$DURATION" "${HDR[@]}" http://127.0.0.1:18190/ >"$TMP/wrk-on" 2>&1 &
	w2=$!
	wait $w1 $w2
	a1=$(cpu_ns off) b1=$(cpu_ns on)
	ra=$(awk '/requests in/ {print $1}' "$TMP/wrk-off")
	rb=$(awk '/requests in/ {print $1}' "$TMP/wrk-on")
	ua=$(awk -v t=$((a1 - a0)) -v n="$ra" 'BEGIN {printf "%.3f", t / 1000 / n}')
	ub=$(awk -v t=$((b1 - b0)) -v n="$rb" 'BEGIN {printf "%.3f", t / 1000 / n}')
	ratio=$(awk -v a="$ua" -v b="$ub" 'BEGIN {printf "%.3f", b / a}')
	RATIOS+=("$ratio")
	printf "%-6s %12s %12s %14s %14s %7s\n" "$r" "$ra" "$rb" "$ua" "$ub" "$ratio"
done
lines=$(wc -l <"$TMP/access.log")
median=$(printf "%s\n" "${RATIOS[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "access log lines written: $lines (dropped: $("$LBCTL" status --json -c "$TMP/on.toml" | python3 -c 'import json,sys; print(sum(w.get("access_log_dropped",0) for w in json.load(sys.stdin)["workers"]))'))"
echo "median CPU per request, access log on / off ($MODE, $FORMAT): ${median}x"
