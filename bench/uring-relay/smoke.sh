#!/usr/bin/env bash
# Smoke check of bench/uring-relay (CI runs it): builds the relay, starts a Python HTTP
# server with a 2 MiB random file on 127.0.0.1, and fetches the file through each loop
# (epoll, uring), 5 times one after another and 40 times 8 at a time, comparing every
# byte. It proves the relay the io_uring experiment measures relays correctly.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release -q
RELAY=$PWD/target/release/uring-relay
BACKEND=${BACKEND_PORT:-19181} LISTEN=${LISTEN_PORT:-19180}
tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
head -c $((2 << 20)) /dev/urandom >"$tmp/file"
python3 -m http.server "$BACKEND" --bind 127.0.0.1 --directory "$tmp" >/dev/null 2>&1 &
pids+=($!)
wait_port() { # PORT
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "smoke: nothing listens on :$1" >&2
	return 1
}
wait_port "$BACKEND"
fetch() { curl -sf --max-time 20 "http://127.0.0.1:$LISTEN/file" | cmp -s - "$tmp/file"; }
for mode in epoll uring; do
	"$RELAY" "$mode" "127.0.0.1:$LISTEN" "127.0.0.1:$BACKEND" &
	pid=$!
	pids+=("$pid")
	wait_port "$LISTEN"
	for _ in 1 2 3 4 5; do fetch || { echo "smoke: $mode: a serial fetch differs" >&2; exit 1; }; done
	export -f fetch
	export LISTEN tmp
	if ! seq 40 | xargs -P 8 -I{} bash -c fetch; then
		echo "smoke: $mode: a parallel fetch differs" >&2
		exit 1
	fi
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	echo "smoke: $mode loop relayed 45 fetches of 2 MiB intact"
done
