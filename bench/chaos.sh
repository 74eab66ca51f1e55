#!/usr/bin/env bash
# Chaos soak: lbctl (a tcp and an http listen, 2-4 workers) over loopback
# backends under steady mixed client load, while a chaos loop kills workers and
# backends, reloads (valid, invalid, 2<->4 workers), upgrades the binary and
# fills the workers' fd tables. Bounded: it stops by itself after DURATION
# seconds of load (plus the settling and leak checks, about 10-30s).
# Everything listens on 127.0.0.1 only.
#
#   DURATION=120  seconds of load and chaos
#   SEED=         random seed (default: random; printed, to replay a run)
#   WORKERS=4     workers at start (2 or 4; reloads switch between them)
#   NOFILE=1024   fd limit of every lbctl process (the fd-fill works up to it)
#   REPORT=bench/CHAOS.md   where the markdown report goes ("-": stdout only)
#   ONLY=         comma-separated chaos actions to run (default all): kill_worker,
#                 kill_backend, reload_valid, reload_invalid, resize, upgrade, fill_fds
#   SKIP_BUILD=1  use target/release/lbctl as it is
#   KEEP=1        keep the run directory (lbctl.log, backend logs)
#
# Exit 0 only if every failed operation is explained by a worker or backend
# kill, no byte was corrupted, every chaos check held and nothing leaked.
set -euo pipefail
cd "$(dirname "$0")/.."

export PYTHONDONTWRITEBYTECODE=1 # leave no __pycache__ in bench/
DURATION=${DURATION:-120}
WORKERS=${WORKERS:-4}
NOFILE=${NOFILE:-1024}
REPORT=${REPORT:-bench/CHAOS.md}

if [[ -z ${SKIP_BUILD:-} ]]; then
	cargo build --release --quiet
fi

RUN=$(mktemp -d /tmp/lbctl-chaos.XXXXXX)
# The upgrade re-executes the binary the master was started from: a copy,
# so that a rebuild meanwhile cannot change it under the soak.
cp target/release/lbctl "$RUN/lbctl"

cleanup() {
	# Only what this run started, checked by executable (a pid may have been
	# reused): the master named by the pid file (its workers follow it) and
	# the backends listed in $RUN/pids.
	local pid
	if [[ -s $RUN/lbctl.pid ]]; then
		pid=$(tr -dc 0-9 <"$RUN/lbctl.pid")
		if [[ -n $pid && $(readlink "/proc/$pid/exe" 2>/dev/null) == "$RUN/lbctl" ]]; then
			kill -9 "$pid" 2>/dev/null || true
		fi
	fi
	if [[ -s $RUN/pids ]]; then
		while read -r pid; do
			if { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -q "chaos_backend.py"; then
				kill -9 "$pid" 2>/dev/null || true
			fi
		done <"$RUN/pids"
	fi
	if [[ -z ${KEEP:-} ]]; then rm -rf "$RUN"; else echo "chaos: run directory kept: $RUN"; fi
}
trap cleanup EXIT

args=(--lbctl "$RUN/lbctl" --dir "$RUN" --duration "$DURATION" --workers "$WORKERS"
	--nofile "$NOFILE" --report "$REPORT"
	--command "DURATION=$DURATION bash bench/chaos.sh"
	--commit "$(git rev-parse --short HEAD 2>/dev/null || echo '?')")
[[ -n ${SEED:-} ]] && args+=(--seed "$SEED")
[[ -n ${ONLY:-} ]] && args+=(--only "$ONLY")

set +e
python3 bench/chaos.py "${args[@]}"
rc=$?
set -e
if ((rc != 0)); then
	echo "chaos: FAILED (exit $rc); lbctl log: $RUN/lbctl.log" >&2
	tail -n 40 "$RUN/lbctl.log" >&2 2>/dev/null || true
fi
exit "$rc"
