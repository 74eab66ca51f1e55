#!/usr/bin/env python3
"""Small helpers for bench/run.sh: /proc accounting, probes, the idle-connection
holder, and the results table.

Subcommands (all output goes to stdout, one value or line):
  tree PID                      PID and all its descendants, one per line
  cpu PID                       utime+stime of PID and its descendants, in seconds
  rss PID                       "TOTAL_KB ROOT_KB": VmRSS summed over the tree, and the root's
  others PID                    "PID:START:TICKS ..." of every user-space process outside PID's
                                tree (record's others_before/others_after: the CPU used by
                                other work on the machine during a run)
  probe PORT TIMEOUT [PID]      exit 0 once GET / on 127.0.0.1:PORT answers "ok"; give up
                                early if PID exits
  hold PORT N READY MAX         open N keep-alive connections through PORT, send one
                                request on each, write READY, hold them (at most MAX s)
  record FILE key=value ...     append one result (JSON line) and print it readably
  report FILE MD META NOTES     print the median table; write markdown to MD unless "-"
  split                         read `lbctl status --json` on stdin, print each worker's
                                share of the connections ("49% / 51%")
"""

import json
import os
import resource
import selectors
import signal
import socket
import statistics
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20
NCPU = os.cpu_count() or 1


# ---------------------------------------------------------------- /proc


def _stat_fields(pid):
    """Fields of /proc/PID/stat after the comm field (index 0 is state), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return data[data.rfind(")") + 2 :].split()


def tree(root):
    """root and all of its live descendants, root first."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _stat_fields(name)
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(name))
    if _stat_fields(root) is None:
        return []
    out, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        out.append(pid)
        todo.extend(sorted(children.get(pid, [])))
    return out


def cpu_seconds(root):
    total = 0
    for pid in tree(root):
        fields = _stat_fields(pid)
        if fields is not None:
            # stat fields 14 and 15 (utime, stime); index 0 here is field 3.
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def others(root):
    """Every user-space process outside root's tree as "pid:starttime:utime+stime" (ticks);
    kernel threads (children of kthreadd, pid 2) are left out: their work is the kernel's."""
    mine = set(tree(root))
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in mine or name == "2":
            continue
        fields = _stat_fields(name)
        if fields is None or fields[1] == "2":
            continue
        # stat fields 14, 15 (utime, stime) and 22 (starttime); index 0 here is field 3.
        out.append(f"{name}:{fields[19]}:{int(fields[11]) + int(fields[12])}")
    return " ".join(out)


def _others_seconds(before, after):
    """CPU seconds used by the processes of the `after` snapshot since `before` (a process
    that started in between counts from zero; one that exited in between is missed)."""
    seen = {}
    for item in str(before).split():
        pid, start, ticks = item.split(":")
        seen[(pid, start)] = int(ticks)
    total = 0
    for item in str(after).split():
        pid, start, ticks = item.split(":")
        total += int(ticks) - seen.get((pid, start), 0)
    return total / CLK_TCK


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------- network


def _read_response(sock):
    """Reads one small HTTP response; returns True if its body is "ok"."""
    data = b""
    while not data.endswith(b"\r\n\r\nok"):
        chunk = sock.recv(4096)
        if not chunk:
            return False
        data += chunk
        if len(data) > 65536:
            return False
    return True


def _alive(pid):
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def probe(port, timeout, pid=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid is not None and not _alive(pid):
            return 1
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(REQUEST)
                if _read_response(s):
                    return 0
        except OSError:
            pass
        time.sleep(0.1)
    return 1


def hold(port, n, ready_path, max_seconds):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 100
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    socks = []
    deadline = time.monotonic() + max_seconds
    # Open in batches of 200 to keep the proxies' accept queues short.
    while len(socks) < n and not stop and time.monotonic() < deadline:
        batch = []
        for _ in range(min(200, n - len(socks))):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(10)
            try:
                s.connect(("127.0.0.1", port))
                s.sendall(REQUEST)
            except OSError as e:
                print(f"hold: connect/send failed after {len(socks)}: {e}", file=sys.stderr)
                s.close()
                return 1
            batch.append(s)
        for s in batch:
            try:
                ok = _read_response(s)
            except OSError:
                ok = False
            if not ok:
                print(f"hold: bad response after {len(socks)} connections", file=sys.stderr)
                return 1
            socks.append(s)
    if len(socks) < n:
        return 1
    with open(ready_path + ".tmp", "w") as f:
        f.write(f"{len(socks)}\n")
    os.rename(ready_path + ".tmp", ready_path)
    # Hold until told to stop; report a connection the proxy closes under us.
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    while not stop and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            print("hold: a held connection was closed or got data", file=sys.stderr)
            sel.unregister(key.fileobj)
    for s in socks:
        s.close()
    return 0


# ---------------------------------------------------------------- results


def _num(v):
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def record(path, pairs):
    r = {}
    for p in pairs:
        k, _, v = p.partition("=")
        if v.startswith("@"):
            r.update(_wrk_json(v[1:]))
        else:
            r[k] = _num(v)
    t = r["test"]
    if t == "mem":
        r["per_conn_kb"] = (r["held_kb"] - r["idle_kb"]) / r["conns"]
        line = (
            f"RSS idle {r['idle_kb'] / 1024:.1f} MiB, with {int(r['conns'])} conns "
            f"{r['held_kb'] / 1024:.1f} MiB, {r['per_conn_kb']:.2f} KiB/conn "
            f"(root process {r['idle_root_kb'] / 1024:.1f} -> {r['held_root_kb'] / 1024:.1f} MiB)"
        )
    elif "requests" not in r or r["requests"] == 0:
        r["failed"] = 1
        line = "FAILED (no completed requests)"
    else:
        secs = r["duration_us"] / 1e6
        r["rate"] = r["requests"] / secs
        cpu = r.get("cpu_after", 0) - r.get("cpu_before", 0) if "cpu_after" in r else None
        machine = (r["sys_after"] - r["sys_before"]) / CLK_TCK if "sys_after" in r else None
        if "others_after" in r:
            # CPUs' worth of other work during the run: the noise in the machine's figure.
            r["others_cpus"] = _others_seconds(r.pop("others_before"), r.pop("others_after")) / secs
        if t == "big":
            r["mb_s"] = r["bytes"] / secs / 1e6
            units = r["bytes"] / (64 * MIB)
            line = f"{r['mb_s']:.0f} MB/s ({int(r['requests'])} files)"
        else:
            units = r["requests"]
            line = f"{r['rate']:.0f} {_unit(t)}/s, p50 {r['p50_us'] / 1e3:.2f} ms, p99 {r['p99_us'] / 1e3:.2f} ms"
        if cpu is not None:
            r["cpu_per_unit"] = cpu / units
            line += f", CPU {_per_unit(t, r['cpu_per_unit'])}"
        if machine is not None:
            r["sys_per_unit"] = machine / units
            r["busy_cpus"] = machine / secs
            line += f", machine {_per_unit(t, r['sys_per_unit'])} ({r['busy_cpus']:.2f} of {NCPU} CPUs busy"
            line += f", {r['others_cpus']:.2f} by other processes)" if "others_cpus" in r else ")"
        if r.get("errors", 0):
            line += f", {int(r['errors'])} errors"
    r["summary"] = line
    with open(path, "a") as f:
        f.write(json.dumps(r) + "\n")
    print(line)
    return 0


def _unit(test):
    return {"ka": "req", "close": "conn", "big": "64 MiB"}[test]


def _per_unit(test, seconds):
    """CPU seconds per unit of a test, as the run lines show it."""
    if test == "big":
        return f"{seconds * 1e3:.1f} ms per 64 MiB"
    return f"{seconds * 1e6:.1f} us/{_unit(test)}"


def _add_marginal(results):
    """sys_marginal: a run's whole-machine CPU per unit minus that of the direct run of the
    same round and test (the load generator and the backends doing the same work)."""
    direct = {
        (r["round"], r["test"]): r["sys_per_unit"]
        for r in results
        if r.get("proxy") == "direct" and "sys_per_unit" in r
    }
    for r in results:
        base = direct.get((r.get("round"), r.get("test")))
        if r.get("proxy") != "direct" and base is not None and "sys_per_unit" in r:
            r["sys_marginal"] = r["sys_per_unit"] - base


def _wrk_json(path):
    with open(path) as f:
        for line in f:
            if line.startswith("{"):
                return json.loads(line)
    return {}


PROXIES = [("lbctl", "lbctl"), ("haproxy", "HAProxy"), ("nginx", "nginx stream"), ("direct", "direct")]

# (label, test, field, scale, format, better)
ROWS = [
    ("keep-alive: requests/s", "ka", "rate", 1, "{:.0f}", "higher"),
    ("keep-alive: p50 latency (ms)", "ka", "p50_us", 1e-3, "{:.2f}", "lower"),
    ("keep-alive: p99 latency (ms)", "ka", "p99_us", 1e-3, "{:.2f}", "lower"),
    ("keep-alive: proxy CPU per request (us)", "ka", "cpu_per_unit", 1e6, "{:.1f}", "lower"),
    ("keep-alive: marginal system CPU per request (us)", "ka", "sys_marginal", 1e6, "{:.1f}", "lower"),
    ("new connection: conns/s", "close", "rate", 1, "{:.0f}", "higher"),
    ("new connection: proxy CPU per conn (us)", "close", "cpu_per_unit", 1e6, "{:.1f}", "lower"),
    ("new connection: marginal system CPU per conn (us)", "close", "sys_marginal", 1e6, "{:.1f}", "lower"),
    ("64 MiB download: MB/s", "big", "mb_s", 1, "{:.0f}", "higher"),
    ("64 MiB download: proxy CPU per file (ms)", "big", "cpu_per_unit", 1e3, "{:.1f}", "lower"),
    ("64 MiB download: marginal system CPU per file (ms)", "big", "sys_marginal", 1e3, "{:.1f}", "lower"),
    ("memory: RSS idle (MiB)", "mem", "idle_kb", 1 / 1024, "{:.1f}", "lower"),
    ("memory: RSS with N idle conns (MiB)", "mem", "held_kb", 1 / 1024, "{:.1f}", "lower"),
    ("memory: RSS per idle conn (KiB)", "mem", "per_conn_kb", 1, "{:.2f}", "lower"),
]


def _median(results, proxy, test, field):
    vals = [r[field] for r in results if r.get("proxy") == proxy and r.get("test") == test and field in r]
    return (statistics.median(vals), len(vals)) if vals else (None, 0)


def _table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def fmt(cells):
        out = []
        for i, (c, w) in enumerate(zip(cells, widths)):
            out.append(str(c).ljust(w) if i == 0 else str(c).rjust(w))
        return "| " + " | ".join(out) + " |"

    sep = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([fmt(header), sep] + [fmt(r) for r in rows])


def _ratio_rows(results, cols, ratios, keep=lambda test, label: True, rename=lambda label: label):
    """The ROWS that `keep` keeps and the run measured: the median of each column's
    target, then each (target, base) ratio, then which way is better."""
    rows = []
    for label, test, field, scale, fmtstr, better in ROWS:
        if not keep(test, label):
            continue
        vals = {key: _median(results, key, test, field)[0] for key, _ in cols}
        if all(v is None for v in vals.values()):
            continue  # a test this run left out
        row = [rename(label)] + [fmtstr.format(vals[k] * scale) if vals[k] is not None else "-" for k, _ in cols]
        for k, base in ratios:
            v, b = vals[k], vals[base]
            row.append(f"{v / b:.2f}" if v is not None and b else "-")
        rows.append(row + [better])
    return rows


RELAYS = [("lbctl", "lbctl"), ("haproxy", "HAProxy"), ("relay_epoll", "relay epoll"), ("relay_uring", "relay io_uring")]


def _relay_table(results):
    """The io_uring experiment's table, when the run had the relays; None otherwise."""
    if not any(r.get("proxy", "").startswith("relay_") for r in results):
        return None
    rows = _ratio_rows(
        results, RELAYS, [("lbctl", "relay_epoll"), ("relay_uring", "relay_epoll")],
        keep=lambda test, label: test in ("ka", "close") and "latency" not in label,
    )
    header = ["median of rounds"] + [n for _, n in RELAYS] + ["lbctl/epoll relay", "io_uring/epoll relay", "better"]
    return _table(header, rows)


def split(status):
    totals = [w["total"] for w in status["workers"]]
    return " / ".join(f"{100 * t / (sum(totals) or 1):.0f}%" for t in totals)


def report(path, md_path, meta_path, notes_path):
    results = []
    if os.path.exists(path):
        with open(path) as f:
            results = [json.loads(line) for line in f if line.strip()]
    _add_marginal(results)
    with open(meta_path) as f:
        meta = json.load(f)
    notes = []
    if os.path.exists(notes_path):
        with open(notes_path) as f:
            notes = [line.rstrip("\n") for line in f if line.strip()]
    conns = meta.get("conns", "N")
    http = meta.get("mode") == "http"
    proxies = [(k, "nginx http" if http and k == "nginx" else n) for k, n in PROXIES]
    if not any(r.get("proxy") == "direct" for r in results):
        notes.append("marginal system CPU: not computed, it needs the direct run of each round")
    others_cpus = [r["others_cpus"] for r in results if "others_cpus" in r]
    if others_cpus and max(others_cpus) >= 0.05:
        notes.append(
            f"other processes used {statistics.median(others_cpus):.2f} CPU (median; up to "
            f"{max(others_cpus):.2f}) of the machine's {NCPU} during the measured runs: the "
            "marginal system CPU figures include their work, so they are only as good as that "
            "noise allows"
        )
    saturated = [r for r in results if r.get("busy_cpus", 0) >= 0.95 * NCPU]
    if saturated:
        notes.append(
            f"{len(saturated)} of {sum('busy_cpus' in r for r in results)} measured runs kept all "
            f"{NCPU} CPUs busy: there the machine's "
            "figure is its CPUs divided by the throughput, whatever the proxy costs"
        )

    header = ["median of rounds"] + [name for _, name in proxies] + ["lbctl/HAProxy", "nginx/HAProxy", "better"]
    rows = _ratio_rows(
        results, proxies, [("lbctl", "haproxy"), ("nginx", "haproxy")],
        rename=lambda label: label.replace("N idle", f"{conns} idle"),
    )
    main = _table(header, rows)

    w1, _ = _median(results, "lbctl", "close", "rate")
    w2, _ = _median(results, "lbctl_w2", "close", "rate")
    wrows = [
        ["lbctl workers = 1 (pinned to CPU %s)" % meta.get("proxy_cpu", "0"), f"{w1:.0f}" if w1 else "-", "1.00" if w1 else "-"],
        ["lbctl workers = 2 (not pinned)", f"{w2:.0f}" if w2 else "-", f"{w2 / w1:.2f}" if w1 and w2 else "-"],
    ]
    workers = _table(["new connection per request", "conns/s", "vs workers = 1"], wrows) if w2 else None
    held = any(r.get("test") == "mem" for r in results)
    relays = _relay_table(results)

    masters = []
    for key, name in proxies:
        v, _ = _median(results, key, "mem", "idle_root_kb")
        h, _ = _median(results, key, "mem", "held_root_kb")
        if v is not None:
            masters.append(f"{name} {v / 1024:.1f} MiB idle / {h / 1024:.1f} MiB held")
    errors = {}
    for r in results:
        if r.get("errors") or r.get("failed"):
            errors[r["proxy"]] = errors.get(r["proxy"], 0) + int(r.get("errors", 0))

    print()
    print(main)
    if workers:
        print()
        print(workers)
    if relays:
        print()
        print(relays)
    if masters:
        print("\nRoot process RSS (included in the sums above): " + "; ".join(masters))
    if errors:
        print("wrk reported socket errors/failed runs: " + ", ".join(f"{k}: {v}" for k, v in errors.items()))
    for n in notes:
        print("note: " + n)

    if md_path == "-":
        return 0
    if http:
        setup = (
            f"lbctl workers = 1 `mode = \"http\"` with `pool = {{ max_idle = 64, idle_timeout = \"30s\" }}` "
            "and `timeouts = { idle = \"60s\" }`; "
            "HAProxy `nbthread 1` `mode http` with `option http-keep-alive` and `http-reuse safe`; "
            "nginx `worker_processes 1` http `proxy_pass` to an `upstream` with `keepalive 64`, "
            "`proxy_http_version 1.1` and `proxy_set_header Connection \"\"`. Every proxy balances "
            "each request on its own and reuses its idle connections to the backends."
        )
    else:
        setup = "lbctl workers = 1, HAProxy `nbthread 1` mode tcp, nginx stream `worker_processes 1`."
        if "DEFER=1" in meta.get("command", ""):
            setup += (
                " DEFER=1: lbctl `defer_accept = true`, HAProxy `bind ... defer-accept` with "
                "`option tcp-smart-connect`; nginx stream as it is (its `listen` takes no `deferred`)."
            )
    lines = [
        "# lbctl benchmark results" + (" (HTTP mode)" if http else ""),
        "",
        f"Produced by `{'MODE=http ' if http else ''}bash bench/run.sh`; rerunning it overwrites this file.",
        "",
        f"- date: {meta['date']}",
        f"- command: `{meta['command']}`",
        f"- machine: nproc {meta['nproc']}, kernel {meta['kernel']}, CPU {meta['cpu']}, "
        f"TCP congestion control {meta.get('congestion', '?')}",
        f"- versions: {meta['versions']}",
        f"- rounds: {meta['rounds']}, duration per run: {meta['duration']}, tests: {meta.get('tests', '?')}"
        + (f", idle connections: {conns}" if held else ""),
        "",
        main,
        "",
    ]
    if workers:
        lines += [workers, ""]
    if relays:
        lines += [
            "The bare relays of bench/uring-relay (issue 15, item 3): the same relaying, one with "
            "an epoll loop (a syscall per step), one with an io_uring loop (multishot accept, "
            "multishot recv into a registered buffer ring; connect, send, shutdown and close as "
            "ring requests; one io_uring_enter per turn). Ratios are against the epoll relay.",
            "",
            relays,
            "",
        ]
    lines += [
        "## How it was measured",
        "",
        "- Two nginx backends on 127.0.0.1:18081 and :18082 (`return 200 \"ok\"`, keep-alive, "
        "and a 64 MiB static file); the proxy on 127.0.0.1:18080 round-robins over both. "
        "`direct` sends wrk straight to the backend on :18081 (no proxy, so no proxy CPU or memory).",
        f"- The proxy is pinned to CPU {meta.get('proxy_cpu')}; wrk, the backends and the "
        f"connection holder to CPU {meta.get('load_cpu')} (taskset). {setup}",
        "- Each round starts every proxy in turn (the order rotates per round), runs its tests, "
        "and stops it; the table shows the median over rounds.",
        "- keep-alive: `wrk -t1 -c50`; new connection: the same with `-H 'Connection: close'`; "
        "downloads: `wrk -t1 -c4` on the 64 MiB file.",
        "- Proxy CPU is utime+stime from /proc/PID/stat summed over the proxy's process tree "
        "(master and workers), before and after each wrk run, divided by the requests, "
        "connections or files completed (clock-tick resolution: 10 ms).",
        "- Marginal system CPU is the whole machine's busy time (all CPUs, /proc/stat: "
        "user+nice+system+irq+softirq+steal, that is total minus idle and iowait) over each "
        "wrk run, divided by the requests, connections or files completed, minus the same "
        "figure of the `direct` run of the same round and test. It counts what proxy CPU "
        "misses: kernel work done on the other CPU or outside the proxy's processes "
        "(softirq, kworkers) and any extra work of wrk and the backends. It also counts "
        "everything else running on the machine, so it is meaningful only on a quiet machine "
        "and is noisier than proxy CPU (it can even come out below it). Each run line below "
        "says how many CPUs were busy and about how many CPUs' worth of that the other "
        "user-space processes used (their utime+stime; a process that started and exited "
        "within the run is missed).",
    ]
    if held:
        lines.append(
            f"- Memory is VmRSS summed over every process of the proxy (lbctl: master + workers; "
            f"nginx: master + worker; HAProxy: its one process) on a freshly started proxy, "
            f"idle and then with {conns} connections held open through it, each having carried "
            f"one request; per connection = (held - idle) / {conns}."
        )
    if workers:
        lines.append(
            "- The workers = 2 row runs lbctl unpinned (free to use both CPUs, which it shares "
            "with wrk and the backends), so it is not a clean scaling figure on a 2-CPU machine."
        )
    if masters:
        lines.append("- Root (master) process RSS, included in the sums: " + "; ".join(masters) + ".")
    if errors:
        lines.append("- wrk reported socket errors/failed runs: " + ", ".join(f"{k}: {v}" for k, v in errors.items()) + ".")
    if notes:
        lines += ["", "## Notes from this run", ""] + [f"- {n}" for n in notes]
    lines += ["", "## Every run", "", "```"]
    names = dict(proxies, lbctl_w2="lbctl workers=2", relay_epoll="relay epoll", relay_uring="relay io_uring")
    for r in results:
        name = names.get(r["proxy"], r["proxy"])
        extra = f", marginal {_per_unit(r['test'], r['sys_marginal'])}" if "sys_marginal" in r else ""
        lines.append(f"round {r['round']}  {name:<16} {r['test']:<6} {r['summary']}{extra}")
    lines += ["```", ""]
    with open(md_path, "w") as f:
        f.write("\n".join(lines))
    print(f"\nwrote {md_path}")
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "tree":
        print("\n".join(str(p) for p in tree(int(args[0]))))
    elif cmd == "cpu":
        print(f"{cpu_seconds(int(args[0])):.2f}")
    elif cmd == "others":
        print(others(int(args[0])))
    elif cmd == "rss":
        pids = tree(int(args[0]))
        print(sum(rss_kb(p) for p in pids), rss_kb(pids[0]) if pids else 0)
    elif cmd == "probe":
        return probe(int(args[0]), float(args[1]), int(args[2]) if len(args) > 2 else None)
    elif cmd == "hold":
        return hold(int(args[0]), int(args[1]), args[2], float(args[3]))
    elif cmd == "record":
        return record(args[0], args[1:])
    elif cmd == "report":
        return report(*args[:4])
    elif cmd == "split":
        print(split(json.load(sys.stdin)))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
