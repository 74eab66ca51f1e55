#!/usr/bin/env bash
# lbctl side-by-side benchmark: lbctl vs HAProxy vs nginx vs direct (no proxy), in TCP
# mode (nginx stream) or HTTP mode (per-request balancing, kept connections to servers).
#
#   bash bench/run.sh             # TCP mode: writes bench/RESULTS.md
#   MODE=http bash bench/run.sh   # HTTP mode: writes bench/RESULTS-http.md
#
# Installs what it needs (haproxy, nginx, libnginx-mod-stream, wrk, python3; apt-get,
# as root), builds lbctl (`cargo build --release`), starts two nginx backends on
# 127.0.0.1:18081/18082 and then, one after another with the same settings, each proxy
# on 127.0.0.1:18080. Prints a table of medians and writes the results file.
# Everything stays on 127.0.0.1 and every process it starts is stopped on exit.
#
# Options (environment variables):
#   MODE=tcp          tcp: lbctl mode = "tcp", HAProxy mode tcp, nginx stream.
#                     http: lbctl mode = "http" with pool = { max_idle = 64, idle_timeout
#                     = "30s" } and timeouts = { idle = "60s" }; HAProxy mode http with
#                     option http-keep-alive and http-reuse safe; nginx http proxy_pass
#                     to an upstream with keepalive 64, proxy_http_version 1.1 and
#                     proxy_set_header Connection "". In either mode lbctl's config is
#                     first given to `lbctl check`: an lbctl that rejects it (a build
#                     without mode = "http") is skipped, and the reason is printed.
#   TESTS=mem,ka,close,big   tests to run, comma-separated (MODE=http default: ka):
#                     mem: RSS idle and with CONNS connections held through the proxy;
#                     ka: keep-alive requests; close: a new connection per request;
#                     big: downloads of a 64 MiB file
#   ROUNDS=3          interleaved rounds; the table shows the median over rounds
#   DURATION=10s      length of each measured wrk run (wrk syntax: 10s, 1m)
#   WARMUP=1s         unmeasured keep-alive wrk run before each target's tests
#   CONNS=4000        idle connections held through the proxy for the memory test
#   DATAPLANE=sockmap  MODE=tcp: lbctl's listen gets dataplane = "sockmap" (the kernel
#                     relays the bytes; lbctl must run as root, else it falls back to
#                     splice, which the run's notes then say). Default: none (auto).
#   SOCKMAP_SNDBUF=16MiB  with DATAPLANE=sockmap: lbctl's sockmap_sndbuf (a size
#                     string; "0B": the kernel's autotuning). Default: lbctl's (4 MiB).
#   DEFER=1          every proxy waits for the client's first bytes before the accept
#                     and lets them carry the handshake's last ACK to the server:
#                     lbctl defer_accept = true; HAProxy bind defer-accept and option
#                     tcp-smart-connect; nginx stream has no equivalent (its listen
#                     takes no `deferred`), so it runs as it is (MODE=tcp)
#   SMART=1          every proxy's connect holds the handshake's last ACK for the
#                     client's first bytes, without a deferred accept: lbctl
#                     smart_connect = true (on every connect); HAProxy option
#                     tcp-smart-connect (which holds it only when it has bytes to
#                     send at the connect); nginx has no equivalent
#   ONLY=lbctl,haproxy,nginx,direct   targets to run, comma-separated; MODE=tcp can add
#                     relay_epoll,relay_uring: bench/uring-relay (a bare relay with an
#                     epoll loop or an io_uring loop, built here with cargo; issue 15's
#                     io_uring experiment), shown in a table of their own
#   WORKERS2=1        also run lbctl with workers = 2, not pinned, on the close test
#                     (0: skip; MODE=http default: 0)
#   BUILD=1           run `cargo build --release` first (0: use the binary as it is)
#   LBCTL=target/release/lbctl        the lbctl binary (relative to the repo root)
#   PROXY_CPU=0 LOAD_CPU=1            CPU for the proxy / for wrk, backends and holder
#   RESULTS=bench/RESULTS.md          where to write the results ("-": don't write;
#                                     MODE=http default: bench/RESULTS-http.md)
#   KEEP_TMP=0        1 keeps the temp dir (configs, logs, raw results) after the run
#   NOTE="..."        a line to add to the notes in RESULTS.md (e.g. what else ran)
#   CC=cubic          TCP congestion control for the run (every target alike; root):
#                     sets net.ipv4.tcp_congestion_control and restores it on exit.
#                     Default: the machine's own, recorded in RESULTS.md. On loopback,
#                     bbr paces every flow with a timer (there is no fq qdisc), which
#                     caps the download figures of all targets alike.
#
# With the defaults one round takes about 3 minutes (ROUNDS=3: about 9 minutes); with
# MODE=http, about 1 minute.
# A quick check: ROUNDS=1 DURATION=3s bash bench/run.sh

set -euo pipefail

USER_OPTS="" # the options given, for the record in RESULTS.md
for v in MODE TESTS ROUNDS DURATION WARMUP CONNS ONLY WORKERS2 BUILD LBCTL PROXY_CPU LOAD_CPU CC DATAPLANE SOCKMAP_SNDBUF DEFER SMART; do
	[[ -n ${!v+x} ]] && USER_OPTS+="$v=${!v} "
done

MODE=${MODE:-tcp}
case $MODE in
tcp) TESTS=${TESTS:-mem,ka,close,big} WORKERS2=${WORKERS2:-1} ;;
http) TESTS=${TESTS:-ka} WORKERS2=${WORKERS2:-0} ;;
*) printf 'error: MODE=%s: use tcp or http\n' "$MODE" >&2; exit 1 ;;
esac
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
CONNS=${CONNS:-4000}
ONLY=${ONLY:-lbctl,haproxy,nginx,direct}
BUILD=${BUILD:-1}
LBCTL=${LBCTL:-target/release/lbctl}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
KEEP_TMP=${KEEP_TMP:-0}
CC=${CC:-}
CC_SAVED="" # the machine's congestion control, restored on exit when CC changed it

PROXY_PORT=18080
BACKEND1=18081
BACKEND2=18082

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
if [[ $MODE == http ]]; then RESULTS=${RESULTS:-$BENCH_DIR/RESULTS-http.md}; fi
RESULTS=${RESULTS:-$BENCH_DIR/RESULTS.md}
cd "$REPO"
[[ $LBCTL == /* ]] || LBCTL=$REPO/$LBCTL

helper() { python3 "$BENCH_DIR/helper.py" "$@"; }
log() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
has_test() { [[ ,$TESTS, == *,$1,* ]]; }

# ------------------------------------------------------------------ processes

STARTED=() # pids of every process we started in the background
TMP=""

alive() { # PID: running (a zombie doesn't count)
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	s=${s##*) }
	[[ ${s:0:1} != Z ]]
}

stop_tree() { # PID [SECONDS]: SIGTERM the process, then SIGKILL whatever of its tree is left
	local pid=$1 secs=${2:-10} pids i
	alive "$pid" || { wait "$pid" 2>/dev/null || true; forget "$pid"; return 0; }
	pids=$(helper tree "$pid")
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < secs * 10; i++)); do
		local left=0 p
		for p in $pids; do alive "$p" && left=1; done
		((left)) || break
		sleep 0.1
	done
	for p in $pids; do alive "$p" && kill -KILL "$p" 2>/dev/null; done
	wait "$pid" 2>/dev/null || true
	forget "$pid"
}

forget() { # PID: reaped, so it may be reused: never signal it again
	local p keep=()
	for p in "${STARTED[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
	STARTED=("${keep[@]}")
}

cleanup() {
	local rc=$? pid
	trap - EXIT INT TERM
	for pid in "${STARTED[@]}"; do stop_tree "$pid" 5; done
	if [[ -n $CC_SAVED ]]; then
		sysctl -qw net.ipv4.tcp_congestion_control="$CC_SAVED" || true
	fi
	if [[ -n $TMP ]]; then
		if [[ $KEEP_TMP == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_bg() { # NAME CPU|"" CMD...: start CMD in the background, output to $TMP/NAME.out
	local name=$1 cpu=$2
	shift 2
	if [[ -n $cpu ]]; then
		taskset -c "$cpu" "$@" >"$TMP/$name.out" 2>&1 &
	else
		"$@" >"$TMP/$name.out" 2>&1 &
	fi
	LAST_PID=$!
	STARTED+=("$LAST_PID")
}

run_wrk() { # OUTFILE WRK-ARGS...: wrk on the load CPU, bounded; waits so signals stay prompt
	local out=$1 pid
	shift
	timeout $(($(seconds "$DURATION") + $(seconds "$WARMUP") + 60)) \
		taskset -c "$LOAD_CPU" wrk "$@" >"$out" 2>&1 &
	pid=$!
	STARTED+=("$pid")
	wait "$pid" || true
	forget "$pid"
}

port_busy() { [[ -n $(ss -ltnH "sport = :$1") ]]; }

wait_port_free() { # PORT: up to 10 s
	local i
	for ((i = 0; i < 100; i++)); do port_busy "$1" || return 0; sleep 0.1; done
	return 1
}

seconds() { # wrk duration (10s, 1m, 10) -> whole seconds
	case $1 in
	*m) echo $((${1%m} * 60)) ;;
	*s) echo "${1%s}" ;;
	*) echo "$1" ;;
	esac
}

# ------------------------------------------------------------------ setup

install_deps() {
	local missing=()
	command -v haproxy >/dev/null || missing+=(haproxy)
	command -v nginx >/dev/null || missing+=(nginx)
	[[ $MODE == http || -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || missing+=(libnginx-mod-stream)
	command -v wrk >/dev/null || missing+=(wrk)
	command -v python3 >/dev/null || missing+=(python3)
	command -v taskset >/dev/null || missing+=(util-linux)
	command -v ss >/dev/null || missing+=(iproute2)
	((${#missing[@]} == 0)) && return 0
	[[ $(id -u) == 0 ]] || die "missing ${missing[*]}; run as root or install them"
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# policy-rc.d may refuse to start the packaged services; we never use them.
	apt-get install -y -qq "${missing[@]}" >/dev/null
}

raise_fd_limit() {
	local hard want=20000
	hard=$(ulimit -Hn)
	[[ $hard != unlimited ]] && ((hard < want)) && want=$hard
	ulimit -n "$want" || true
	NOFILE=$(ulimit -n)
	local need=$((2 * CONNS + 200))
	if ((NOFILE < need)); then
		CONNS=$(((NOFILE - 200) / 2))
		note "fd limit is $NOFILE: memory test lowered to CONNS=$CONNS"
	fi
}

set_congestion() { # CC=name: the same congestion control for every target
	[[ -z $CC ]] && return 0
	local now
	now=$(sysctl -n net.ipv4.tcp_congestion_control)
	[[ $now == "$CC" ]] && return 0
	[[ " $(sysctl -n net.ipv4.tcp_available_congestion_control) " == *" $CC "* ]] ||
		die "CC=$CC is not available (have: $(sysctl -n net.ipv4.tcp_available_congestion_control))"
	[[ $(id -u) == 0 ]] || die "CC=$CC needs root (it sets net.ipv4.tcp_congestion_control)"
	CC_SAVED=$now
	sysctl -qw net.ipv4.tcp_congestion_control="$CC" || die "cannot set CC=$CC"
	note "TCP congestion control set to $CC for the run (machine default $now, restored at exit)"
}

note() { # recorded in RESULTS.md too
	log "$*"
	echo "$*" >>"$TMP/notes"
}

declare -A SKIP=() # target -> why it is not run
skip() { # TARGET REASON
	SKIP[$1]=$2
	note "$(label "$1"): not run: $2"
}
skipped() { [[ -n ${SKIP[$1]:-} ]]; }

label() {
	case $1 in
	lbctl) echo "lbctl (workers = 1)" ;;
	lbctl_w2) echo "lbctl (workers = 2)" ;;
	relay_epoll) echo "relay epoll" ;;
	relay_uring) echo "relay io_uring" ;;
	haproxy) echo "HAProxy" ;;
	nginx) [[ $MODE == http ]] && echo "nginx http" || echo "nginx stream" ;;
	direct) echo "direct" ;;
	esac
}

build_lbctl() {
	if [[ $BUILD == 1 ]]; then
		log "cargo build --release"
		if ! env -u CC cargo build --release >"$TMP/cargo.out" 2>&1; then
			tail -n 20 "$TMP/cargo.out"
			skip lbctl "cargo build --release failed"
			return
		fi
	fi
	[[ -x $LBCTL ]] || skip lbctl "$LBCTL is missing (BUILD=$BUILD)"
}

RELAY=$BENCH_DIR/uring-relay/target/release/uring-relay

build_relay() { # bench/uring-relay, for the relay_epoll and relay_uring targets
	log "cargo build --release (bench/uring-relay)"
	if ! env -u CC cargo build --release --manifest-path "$BENCH_DIR/uring-relay/Cargo.toml" >"$TMP/relay-cargo.out" 2>&1; then
		tail -n 20 "$TMP/relay-cargo.out"
		skip relay_epoll "building bench/uring-relay failed"
		skip relay_uring "building bench/uring-relay failed"
	fi
}

check_lbctl_conf() { # NAME: skip NAME unless `lbctl check` accepts the config it would run
	local out first
	skipped "$1" && return 0
	out=$("$LBCTL" check -c "$TMP/$1/lbctl.toml" 2>&1) && return 0
	first=${out%%$'\n'*}
	local why="\`lbctl check\` rejects its MODE=$MODE config: ${first#lbctl: }"
	[[ $MODE == http ]] && why+=" (this build has no mode = \"http\" yet?)"
	skip "$1" "$why"
}

# ------------------------------------------------------------------ configs

# shellcheck source=bench/conf.sh
source "$BENCH_DIR/conf.sh"

# ------------------------------------------------------------------ targets

PROXY_PID="" # the running proxy's root process (empty for direct)
TARGET_PORT=""
START_ERROR=""

start_target() { # TARGET: start it and wait until GET / through it answers "ok"
	local t=$1
	PROXY_PID=""
	TARGET_PORT=$PROXY_PORT
	case $t in
	direct)
		TARGET_PORT=$BACKEND1
		return 0
		;;
	esac
	wait_port_free "$PROXY_PORT" || die "port $PROXY_PORT is still in use by an earlier run"
	case $t in
	lbctl) start_bg lbctl "$PROXY_CPU" "$LBCTL" start -c "$TMP/lbctl/lbctl.toml" ;;
	lbctl_w2) start_bg lbctl_w2 "" "$LBCTL" start -c "$TMP/lbctl_w2/lbctl.toml" ;; # not pinned
	haproxy) start_bg haproxy "$PROXY_CPU" haproxy -db -f "$TMP/haproxy/haproxy.cfg" ;;
	relay_epoll | relay_uring)
		start_bg "$t" "$PROXY_CPU" "$RELAY" "${t#relay_}" "127.0.0.1:$PROXY_PORT" "127.0.0.1:$BACKEND1" "127.0.0.1:$BACKEND2"
		;;
	nginx)
		local dir=$TMP/nginx-stream
		[[ $MODE == http ]] && dir=$TMP/nginx-http
		start_bg nginx "$PROXY_CPU" nginx -e "$dir/error.log" -c "$dir/nginx.conf"
		;;
	esac
	PROXY_PID=$LAST_PID
	if ! helper probe "$PROXY_PORT" 10 "$PROXY_PID" || ! alive "$PROXY_PID"; then
		local rc=0
		if alive "$PROXY_PID"; then
			START_ERROR="it did not answer on :$PROXY_PORT within 10 s"
		else
			wait "$PROXY_PID" || rc=$?
			START_ERROR="it exited (status $rc) without serving :$PROXY_PORT"
		fi
		echo "--- $(label "$t"): $START_ERROR; its last output:"
		tail -n 15 "$TMP/$t.out" || true
		stop_tree "$PROXY_PID" 5
		PROXY_PID=""
		return 1
	fi
}

stop_target() {
	[[ -n $PROXY_PID ]] || return 0
	stop_tree "$PROXY_PID" 10
	PROXY_PID=""
	wait_port_free "$PROXY_PORT" || die "port $PROXY_PORT still busy after stopping the proxy"
}

machine_busy() { # VAR: set VAR to the busy CPU ticks of all CPUs since boot, from /proc/stat
	# total minus idle and iowait: user+nice+system+irq+softirq+steal (guest time is
	# already inside user and nice). Read by bash itself: no process is started.
	local _cpu user nice system idle iowait irq softirq steal _rest
	read -r _cpu user nice system idle iowait irq softirq steal _rest </proc/stat
	printf -v "$1" '%d' $((user + nice + system + irq + softirq + steal))
}

wrk_run() { # TARGET ROUND TEST CONNECTIONS PATH [wrk args...]: one measured run
	local t=$1 round=$2 test=$3 c=$4 path=$5
	shift 5
	local out=$TMP/wrk.out cpu0="" cpu1="" sys0 sys1 others0 others1
	[[ -n $PROXY_PID ]] && cpu0=$(helper cpu "$PROXY_PID")
	others0=$(helper others $$) # every process outside this script's tree, for the noise
	# The machine's figure is sampled inside the others, so no helper runs inside it.
	machine_busy sys0
	run_wrk "$out" -t1 -c"$c" -d"$DURATION" --timeout 10s -s "$BENCH_DIR/wrk-report.lua" "$@" \
		"http://127.0.0.1:$TARGET_PORT$path"
	machine_busy sys1
	others1=$(helper others $$)
	[[ -n $PROXY_PID ]] && cpu1=$(helper cpu "$PROXY_PID")
	printf '  %-20s %-6s ' "$(label "$t")" "$test"
	helper record "$TMP/results.jsonl" proxy="$t" round="$round" test="$test" wrk=@"$out" \
		${cpu0:+cpu_before=$cpu0} ${cpu1:+cpu_after=$cpu1} sys_before="$sys0" sys_after="$sys1" \
		others_before="$others0" others_after="$others1"
}

mem_test() { # TARGET ROUND: RSS idle and with CONNS idle connections held through the proxy
	local t=$1 round=$2 idle idle_root held held_root i hpid ready=$TMP/hold.ready
	sleep 1
	read -r idle idle_root < <(helper rss "$PROXY_PID")
	rm -f "$ready"
	start_bg holder "$LOAD_CPU" python3 "$BENCH_DIR/helper.py" hold "$PROXY_PORT" "$CONNS" "$ready" 120
	hpid=$LAST_PID
	for ((i = 0; i < 600; i++)); do
		[[ -e $ready ]] && break
		alive "$hpid" || break
		sleep 0.1
	done
	printf '  %-20s %-6s ' "$(label "$t")" mem
	if [[ -e $ready ]]; then
		sleep 1
		read -r held held_root < <(helper rss "$PROXY_PID")
		helper record "$TMP/results.jsonl" proxy="$t" round="$round" test=mem conns="$CONNS" \
			idle_kb="$idle" idle_root_kb="$idle_root" held_kb="$held" held_root_kb="$held_root"
	else
		echo "FAILED to hold $CONNS connections: $(tail -n 3 "$TMP/holder.out" | tr '\n' ' ')"
	fi
	stop_tree "$hpid" 10
	sleep 1 # let the proxy close the held connections
}

run_target() { # TARGET ROUND
	local t=$1 round=$2 test
	if ! start_target "$t"; then
		case $t in
		lbctl)
			skip lbctl "$START_ERROR"
			skipped lbctl_w2 || skip lbctl_w2 "lbctl (workers = 1) did not start"
			;;
		lbctl_w2 | relay_*) skip "$t" "$START_ERROR" ;;
		*) die "$(label "$t") did not start" ;;
		esac
		return 0
	fi
	if has_test mem && [[ $t != direct && $t != lbctl_w2 ]]; then mem_test "$t" "$round"; fi
	# Warm-up, not recorded.
	run_wrk /dev/null -t1 -c50 -d"$WARMUP" "http://127.0.0.1:$TARGET_PORT/"
	local snapshot p
	for test in ka close big; do
		has_test "$test" || continue
		[[ $t == lbctl_w2 && $test != close ]] && continue
		[[ -n $PROXY_PID ]] && snapshot=$(helper tree "$PROXY_PID")
		case $test in
		ka) wrk_run "$t" "$round" ka 50 / ;;
		close) wrk_run "$t" "$round" close 50 / -H "Connection: close" ;;
		big) wrk_run "$t" "$round" big 4 /big.bin ;;
		esac
		if [[ -n $PROXY_PID ]] && ! alive "$PROXY_PID"; then
			note "$(label "$t") exited during the '$test' run of round $round"
			tail -n 15 "$TMP/$t.out" || true
			for p in $snapshot; do alive "$p" && kill -KILL "$p"; done # orphaned workers
			PROXY_PID=""
			return 0
		fi
	done
	[[ $t == lbctl_w2 ]] && worker_split "$round"
	[[ $t == lbctl && -n ${DATAPLANE:-} ]] && dataplane_note "$round"
	stop_target
}

dataplane_note() { # ROUND: what lbctl's status says its listen's data plane was
	local dp
	dp=$("$LBCTL" status --json -c "$TMP/lbctl/lbctl.toml" 2>/dev/null |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["listens"][0].get("dataplane","?"))') || dp="unknown"
	note "round $1: lbctl (DATAPLANE=$DATAPLANE) ran with dataplane: $dp (from lbctl status)"
}

worker_split() { # ROUND: how SO_REUSEPORT spread the connections over the two workers
	local split
	split=$("$LBCTL" status --json -c "$TMP/lbctl_w2/lbctl.toml" 2>/dev/null | helper split) || split="unknown"
	note "round $round: lbctl workers = 2 took the connections $split (per worker, from lbctl status)"
}

# ------------------------------------------------------------------ main

main() {
	TMP=$(mktemp -d /tmp/lbctl-bench.XXXXXX)
	chmod 755 "$TMP" # nginx workers run unprivileged and serve $TMP/www
	: >"$TMP/notes"
	[[ -z ${NOTE:-} ]] || note "$NOTE"
	install_deps
	raise_fd_limit
	if (($(nproc) < 2)); then
		PROXY_CPU=0 LOAD_CPU=0
		note "only one CPU: proxy, wrk and backends all share CPU 0"
	fi

	local -a targets=()
	local t
	for t in lbctl haproxy nginx direct relay_epoll relay_uring; do
		[[ ,$ONLY, == *,$t,* ]] && targets+=("$t")
	done
	((${#targets[@]})) || die "ONLY=$ONLY selects nothing (use lbctl,haproxy,nginx,direct)"
	if [[ ,$ONLY, == *,relay_* ]]; then
		[[ $MODE == tcp ]] || die "relay_epoll and relay_uring relay TCP only (MODE=tcp)"
		build_relay
	fi
	local test
	for test in ${TESTS//,/ }; do
		[[ $test == @(mem|ka|close|big) ]] || die "TESTS=$TESTS: unknown test $test (use mem,ka,close,big)"
	done
	if [[ $WORKERS2 == 1 ]] && ! has_test close; then
		WORKERS2=0
		note "lbctl (workers = 2): not run: it runs only the close test (TESTS=$TESTS)"
	fi
	if [[ ,$ONLY, == *,lbctl,* ]]; then
		[[ $WORKERS2 == 1 ]] && targets+=(lbctl_w2)
		build_lbctl
		skipped lbctl && [[ $WORKERS2 == 1 ]] && skip lbctl_w2 "lbctl is not available"
	else
		note "lbctl: not run (ONLY=$ONLY)"
	fi

	local p
	for p in $PROXY_PORT $BACKEND1 $BACKEND2; do
		port_busy "$p" && die "port $p is already in use on this machine"
	done

	[[ ${DEFER:-0} == 1 ]] && note "DEFER=1: nginx stream runs without it (its listen takes no deferred)"
	[[ ${SMART:-0} == 1 ]] && note "SMART=1: nginx runs without it (it has no equivalent)"
	set_congestion
	log "temp dir $TMP, fd limit $NOFILE, proxy on CPU $PROXY_CPU, load on CPU $LOAD_CPU"
	mkdir -p "$TMP/www"
	head -c $((64 << 20)) /dev/urandom >"$TMP/www/big.bin"
	write_backend_conf $BACKEND1
	write_backend_conf $BACKEND2
	write_lbctl_conf lbctl 1
	write_lbctl_conf lbctl_w2 2
	if [[ ,$ONLY, == *,lbctl,* ]]; then
		check_lbctl_conf lbctl
		if [[ $WORKERS2 == 1 ]]; then
			if skipped lbctl; then
				skipped lbctl_w2 || skip lbctl_w2 "lbctl is not available"
			else
				check_lbctl_conf lbctl_w2
			fi
		fi
	fi
	write_haproxy_conf
	write_nginx_conf
	for p in $BACKEND1 $BACKEND2; do
		start_bg "backend-$p" "$LOAD_CPU" nginx -e "$TMP/backend-$p/error.log" -c "$TMP/backend-$p/nginx.conf"
		helper probe "$p" 10 || { tail "$TMP/backend-$p.out"; die "backend on :$p did not start"; }
	done
	log "backends up on :$BACKEND1 and :$BACKEND2"

	local round i n=${#targets[@]}
	for ((round = 1; round <= ROUNDS; round++)); do
		log "round $round/$ROUNDS (duration $DURATION per run)"
		for ((i = 0; i < n; i++)); do
			t=${targets[$(((i + round - 1) % n))]} # rotate the order every round
			skipped "$t" && continue
			run_target "$t" "$round"
		done
	done

	write_meta
	helper report "$TMP/results.jsonl" "$RESULTS" "$TMP/meta.json" "$TMP/notes"
}

write_meta() {
	local lbctl_version
	if [[ $LBCTL == "$REPO/target/release/lbctl" ]]; then
		lbctl_version="lbctl $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"
	else
		lbctl_version="lbctl $LBCTL"
	fi
	if [[ ,$ONLY, != *,lbctl,* ]] || skipped lbctl; then lbctl_version+=" (not run)"; fi
	python3 - "$TMP/meta.json" \
		date="$(date -u '+%Y-%m-%d %H:%M UTC')" \
		command="${USER_OPTS}bash bench/run.sh" \
		nproc="$(nproc)" \
		kernel="$(uname -r)" \
		congestion="$(sysctl -n net.ipv4.tcp_congestion_control)" \
		cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
		versions="$lbctl_version; $(haproxy -v | head -n1 | cut -d' ' -f1-3); $(nginx -v 2>&1 | cut -d' ' -f3); $(wrk --version 2>&1 | head -n1 | cut -d' ' -f1-2)" \
		rounds="$ROUNDS" duration="$DURATION" conns="$CONNS" proxy_cpu="$PROXY_CPU" load_cpu="$LOAD_CPU" \
		mode="$MODE" tests="$TESTS" <<'EOF'
import json, sys
json.dump(dict(a.split("=", 1) for a in sys.argv[2:]), open(sys.argv[1], "w"), indent=1)
EOF
}

main "$@"
