#!/usr/bin/env python3
"""Owns the chaos soak run by bench/chaos.sh: it starts the loopback backends
(bench/chaos_backend.py) and lbctl (a tcp and an http listen), drives the
client load (bench/chaos_load.py) for DURATION seconds while a chaos loop
kills workers and backends, reloads (valid, invalid, 2<->4 workers), upgrades
the binary and fills the workers' fd tables, then checks for leaks and writes
the report (bench/chaos_report.py). Exit 0 only if every failure is explained,
no byte was corrupted, every chaos check held and nothing leaked.
"""

import argparse
import asyncio
import datetime
import json
import os
import random
import resource
import signal
import subprocess
import sys

import chaos_report
from chaos_backend import GREETING_LEN
from chaos_load import Conn, Corrupt, Load, Op, Record, now, run_op
from chaos_procs import Procs, fd_count, free_port, orphan_unix, quiet_fds, rss_kb

INVALID = [
    ("retries out of range", lambda c: c.replace("retries = 2", "retries = 1000", 1)),
    ("unknown key", lambda c: c.replace("retries = 2", "retriez = 2", 1)),
    ("TOML syntax error", lambda c: c.replace('mode = "tcp"', 'mode = "tcp', 1)),
    ("duplicate bind", lambda c: c.replace("@HTTP_BIND@", "@TCP_BIND@")),
    ("workers = 0", lambda c: c.replace("workers = ", "workers = 0 #", 1)),
]


class Soak:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.conf = os.path.join(a.dir, "lbctl.toml")
        self.procs = Procs(a.dir)
        self.tcp_port, self.http_port = free_port(), free_port()
        self.echo = {f"echo{i}": free_port() for i in (1, 2, 3)}
        self.web = {f"web{i}": free_port() for i in (1, 2, 3)}
        self.workers = a.workers
        self.balance = "round_robin"
        self.rec = Record()
        self.kills, self.bkills, self.drains, self.actions = [], [], [], []
        self.checks_failed = 0
        self.masters = []  # every master pid seen (upgrades)
        self.first_seen = {}  # master pid -> its RSS once it served
        self.restarting = None

    # ------------------------------------------------------------ lbctl

    def conf_text(self):
        """The config of the current state (workers, balance); the binds are
        placeholders (see write_conf), so a spoiled copy can swap them."""
        d = self.a.dir

        def servers(m):
            return ", ".join(f'{{ addr = "127.0.0.1:{p}", name = "{n}" }}' for n, p in m.items())

        return f"""[master]
workers = {self.workers}
pid_file = "{d}/lbctl.pid"
control_socket = "{d}/lbctl.sock"
log_file = "{d}/lbctl.log"
drain_timeout = "120s"

[[listen]]
name = "tcp"
bind = "@TCP_BIND@"
mode = "tcp"
balance = "{self.balance}"
retries = 2
max_fails = 1
fail_timeout = "2s"
timeouts = {{ connect = "2s", idle = "60s" }}
servers = [ {servers(self.echo)} ]
health = {{ kind = "tcp", interval = "500ms", timeout = "1s", rise = 1, fall = 2 }}

[[listen]]
name = "http"
bind = "@HTTP_BIND@"
mode = "http"
balance = "{self.balance}"
retries = 2
max_fails = 1
fail_timeout = "2s"
timeouts = {{ connect = "2s", idle = "60s", header = "10s", server = "20s" }}
pool = {{ max_idle = 16, idle_timeout = "2s" }}
servers = [ {servers(self.web)} ]
health = {{ kind = "http", path = "/health", interval = "500ms", timeout = "1s", rise = 1, fall = 2 }}
"""

    def write_conf(self, text):
        text = text.replace("@TCP_BIND@", f"127.0.0.1:{self.tcp_port}")
        text = text.replace("@HTTP_BIND@", f"127.0.0.1:{self.http_port}")
        tmp = self.conf + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.conf)

    async def lb(self, *args, timeout=90):
        p = await asyncio.create_subprocess_exec(
            self.a.lbctl, *args, "-c", self.conf,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(p.communicate(), timeout)
        except asyncio.TimeoutError:
            p.kill()
            await p.wait()
            return 124, "", f"lbctl {args[0]} timed out after {timeout}s"
        return p.returncode, out.decode(), err.decode()

    async def status(self, tries=40):
        """status --json; retried (an upgrade's handover says "not running")."""
        for _ in range(tries):
            rc, out, _ = await self.lb("status", "--json", timeout=20)
            if rc == 0:
                return json.loads(out)
            await asyncio.sleep(0.1)
        raise RuntimeError("lbctl status failed repeatedly")

    async def settled(self, timeout=30.0, only_current=False):
        """Wait until the serving generation's workers all run (and, with
        only_current, no older worker is left); return the status."""
        end = now() + timeout
        while True:
            st = await self.status()
            cur = [w for w in st["workers"] if w["generation"] == st["generation"]]
            ok = (
                len(cur) == st["workers_configured"]
                and all(w["state"] == "running" and w["pid"] for w in cur)
                and (not only_current or len(cur) == len(st["workers"]))
            )
            if ok or now() > end:
                return st, ok
            await asyncio.sleep(0.2)

    def act(self, what, ok, note):
        self.actions.append({"t": now(), "what": what, "ok": ok, "note": note})
        if not ok:
            self.checks_failed += 1
        print(f"chaos {chaos_report.rel(now(), self.t0)} {what}: {'ok' if ok else 'FAILED'}"
              f" {chaos_report.fill_times(note, self.t0)}", flush=True)

    # ------------------------------------------------------------ chaos actions

    async def kill_worker(self):
        st = await self.status()
        alive = [w for w in st["workers"] if w["pid"] and w["state"] in ("running", "draining")]
        draining = [w for w in alive if w["state"] == "draining"]
        pool = draining if draining and self.rng.random() < 0.3 else alive
        w = self.rng.choice(pool)
        pid = w["pid"]
        listen = {self.tcp_port, self.http_port}
        try:
            # Freeze it first (SIGSTOP is asynchronous: wait until it is
            # stopped), so its socket table cannot change while it is read.
            os.kill(pid, signal.SIGSTOP)
            state = await self.procs.wait_stopped(pid)
            ports, reads = self.procs.peers(pid, listen, tries=5) if state != "gone" else (set(), 0)
            census = self.procs.census([x["pid"] for x in st["workers"] if x["pid"]], listen)
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, FileNotFoundError):
            state = "gone"
        if state == "gone":
            self.act("kill worker", True, f"worker {pid} had exited before the kill")
            return
        if state == "running":
            self.checks_failed += 1
            print(f"chaos: worker {pid} did not stop on SIGSTOP within 2s", flush=True)
        t = now()
        # `census`: who held every client connection while the worker was
        # stopped (for the report, should a failure not be explained).
        self.kills.append({"t": t, "pid": pid, "slot": w["slot"], "state": w["state"],
                           "ports": ports, "census": census})
        note = (f"kill -9 {w['state']} worker {pid} (slot {w['slot']}, {len(ports)} client conns; "
                f"socket table read {reads}x)")
        end = now() + 15
        while now() < end:
            st = await self.status()
            rows = [x for x in st["workers"] if x["pid"] == pid]
            if w["state"] == "draining" or w["generation"] != st["generation"]:
                if not rows:
                    self.act("kill worker", True, note + "; not respawned (old generation)")
                    return
            else:
                new = [x for x in st["workers"] if x["slot"] == w["slot"]
                       and x["generation"] == w["generation"] and x["state"] == "running"
                       and x["pid"] not in (0, pid)]
                if new:
                    self.act("kill worker", True, note + f"; slot respawned as {new[0]['pid']}")
                    return
            await asyncio.sleep(0.1)
        self.act("kill worker", False, note + "; slot not respawned within 15s")

    async def reload(self, what, text, expect_gen_change=True):
        st0, _ = await self.settled()
        t_start = now()
        self.write_conf(text)
        rc, out, err = await self.lb("reload")
        t_end = now()
        st, ok = await self.settled()
        self.drains.append({"what": what, "t_start": t_start, "t_end": now()})
        good = rc == 0 and "reloaded: generation" in out and st["generation"] > st0["generation"]
        good = good and ok
        return good, st, f"rc {rc}, {out.strip() or err.strip()[:120]}, took {t_end - t_start:.2f}s"

    async def reload_valid(self):
        self.balance = "least_connections" if self.balance == "round_robin" else "round_robin"
        good, st, note = await self.reload("reload", self.conf_text())
        bal = {ls["balance"] for ls in st["listens"]}
        good = good and bal == {self.balance}
        self.act("reload (valid)", good, f"balance -> {self.balance}: {note}")

    async def resize(self):
        self.workers = 2 if self.workers == 4 else 4
        good, st, note = await self.reload(f"resize to {self.workers}", self.conf_text())
        cur = [w for w in st["workers"] if w["generation"] == st["generation"]]
        good = good and st["workers_configured"] == self.workers and len(cur) == self.workers
        self.act("resize workers", good, f"workers -> {self.workers}: {note}")

    async def reload_invalid(self):
        name, spoil = self.rng.choice(INVALID)
        st0, _ = await self.settled()
        self.write_conf(spoil(self.conf_text()))
        rc, out, err = await self.lb("reload")
        self.write_conf(self.conf_text())
        st = await self.status()

        def shape(s):
            cur = sorted((w["slot"], w["pid"]) for w in s["workers"]
                         if w["generation"] == s["generation"])
            return s["master_pid"], s["generation"], cur, [ls["balance"] for ls in s["listens"]]

        good = rc == 1 and shape(st) == shape(st0)
        msg = (err.strip().splitlines() or [""])[-1][:100]
        self.act("reload (invalid)", good,
                 f"{name}: rc {rc} (want 1), {'nothing changed' if shape(st) == shape(st0) else 'STATE CHANGED'}; {msg}")

    async def upgrade(self):
        st0, _ = await self.settled()
        t_start = now()
        rc, out, err = await self.lb("upgrade")
        end, st = now() + 20, st0
        while now() < end:
            st = await self.status()
            if st["master_pid"] != st0["master_pid"]:
                break
            await asyncio.sleep(0.1)
        st, ok = await self.settled()
        self.drains.append({"what": "upgrade", "t_start": t_start, "t_end": now()})
        self.masters.append(st["master_pid"])
        self.first_seen.setdefault(st["master_pid"], {"rss": rss_kb(st["master_pid"])})
        good = rc == 0 and ok and st["master_pid"] != st0["master_pid"]
        self.act("upgrade", good, f"master {st0['master_pid']} -> {st['master_pid']}: rc {rc}, "
                 f"{(out.strip() or err.strip())[:100]}, took {now() - t_start:.2f}s")

    async def kill_backend(self):
        if self.restarting is not None:
            await self.restarting
        name = self.rng.choice(sorted(self.echo) + sorted(self.web))
        self.procs.kill_backend(name)
        t = now()
        self.bkills.append({"t": t, "name": name})
        delay = self.rng.uniform(0.5, 3.0)

        async def back():
            await asyncio.sleep(delay)
            kind, port = ("echo", self.echo[name]) if name in self.echo else ("http", self.web[name])
            ok = await self.procs.start_backend(name, kind, port)
            self.act("backend back", ok, f"{name} restarted on :{port} after {delay:.1f}s")

        self.restarting = asyncio.ensure_future(back())
        self.act("kill backend", True, f"kill -9 {name}")

    async def fill_fds(self):
        st, _ = await self.settled()
        pids = [w["pid"] for w in st["workers"] if w["generation"] == st["generation"]]
        limit = min(self.procs.nofile(p) for p in pids)
        target = limit - self.a.fd_margin
        base = {p: fd_count(p) for p in pids}
        ready, release = asyncio.Queue(), asyncio.Event()
        tasks = []

        async def one():
            conn, op = Conn(self.tcp_port), Op(kind="fd_fill", listen_port=self.tcp_port,
                                                  t_start=now())
            told = False

            async def body():
                nonlocal told
                await conn.open()
                op.client_port, op.t_open = conn.client_port, conn.t_open
                hello = await conn.recv_exact(GREETING_LEN)
                op.backend = hello[3:].strip().decode()
                told = True
                ready.put_nowait(True)
                await release.wait()
                await conn.send(b"ping")
                if await conn.recv_exact(4) != b"ping":
                    raise Corrupt(4, "idle connection echoed something else")
                op.nbytes = 4

            try:
                await run_op(self.rec, op, body())
            finally:
                conn.close()
                if not told:
                    ready.put_nowait(False)

        t_start, peak, opened = now(), 0, 0
        while now() - t_start < 20 and opened < self.a.fill_cap:
            peak = max(fd_count(p) for p in pids)
            if peak >= target:
                break
            # Even if all of them land on the busiest worker, it stays <= target.
            n = min(64, max(1, (target - peak) // 2))
            tasks += [asyncio.ensure_future(one()) for _ in range(n)]
            for _ in range(n):
                opened += await ready.get()
        peak = max(peak, max(fd_count(p) for p in pids))
        await asyncio.sleep(self.rng.uniform(1.0, 3.0))
        release.set()
        await asyncio.gather(*tasks)
        bad = sum(1 for o in self.rec.ops[-len(tasks):] if not o.ok) if tasks else 0
        end = now() + 10
        while now() < end:
            back = {p: fd_count(p) for p in pids}
            if all(back[p] <= base[p] + 24 for p in pids):
                break
            await asyncio.sleep(0.2)
        back = {p: fd_count(p) for p in pids}
        freed = all(back[p] <= base[p] + 24 for p in pids)
        self.act("fill fds", peak >= target and freed and not bad,
                 f"{opened} idle conns, busiest worker at {peak}/{limit} fds (target {target}); "
                 f"{bad} failed; fds after release {sorted(back.values())} vs "
                 f"{sorted(base.values())} before")

    # ------------------------------------------------------------ the run

    async def chaos(self, until):
        steps = {
            "kill_worker": self.kill_worker, "reload_valid": self.reload_valid,
            "reload_invalid": self.reload_invalid, "resize": self.resize,
            "upgrade": self.upgrade, "kill_backend": self.kill_backend,
            "fill_fds": self.fill_fds,
        }
        if self.a.only:
            steps = {k: v for k, v in steps.items() if k in self.a.only.split(",")}
        deck = sorted(steps)  # the first round has each action once
        self.rng.shuffle(deck)
        while now() < until:
            await asyncio.sleep(self.rng.uniform(0.2, 2.0))
            if now() >= until:
                break
            if not deck:
                deck = sorted(steps) + [k for k in ("kill_worker", "kill_backend") if k in steps]
                self.rng.shuffle(deck)
            await steps[deck.pop()]()

    async def run(self):
        for n, p in self.echo.items():
            assert await self.procs.start_backend(n, "echo", p), f"backend {n} did not start"
        for n, p in self.web.items():
            assert await self.procs.start_backend(n, "http", p), f"backend {n} did not start"
        self.write_conf(self.conf_text())
        rc = subprocess.call(
            ["sh", "-c", f'ulimit -n {self.a.nofile} && exec "$0" start -d -c "$1"',
             self.a.lbctl, self.conf])
        if rc != 0:
            raise RuntimeError(f"lbctl start -d exited {rc}")
        st, ok = await self.settled()
        await asyncio.sleep(1.0)
        master = st["master_pid"]
        self.masters.append(master)
        fds, kinds = quiet_fds(master)
        before = {"fds": fds, "rss": rss_kb(master), "kinds": kinds,
                  "orphans": orphan_unix(master),
                  "workers": {w["pid"]: fd_count(w["pid"]) for w in st["workers"]}}
        self.t0 = now()
        load = Load(self.rec, self.tcp_port, self.http_port, self.a.seed)
        tasks = load.tasks()
        await self.chaos(self.t0 + self.a.duration)
        load.stop.set()
        t_load = now() - self.t0
        done, pending = await asyncio.wait(tasks, timeout=120)
        for t in pending:
            t.cancel()
        if self.restarting is not None:
            await self.restarting
        return await self.finish(before, t_load, len(pending))

    async def finish(self, before, t_load, stuck):
        if self.workers != self.a.workers:  # compare the master at the same shape
            self.workers = self.a.workers
            good, _, note = await self.reload("final resize", self.conf_text())
            self.act("final resize", good, f"workers -> {self.workers}: {note}")
        st, settled = await self.settled(timeout=150, only_current=True)
        end = now() + 30  # older masters exit once their workers have drained
        while now() < end and any(os.path.exists(f"/proc/{m}") for m in self.masters
                                  if m != st["master_pid"]):
            await asyncio.sleep(0.2)
        await asyncio.sleep(3.0)  # the servers' keep-alive pool times out (2s)
        st = await self.status()
        master = st["master_pid"]
        (after_fds, after_kinds), after_rss = quiet_fds(master), rss_kb(master)
        orphans = orphan_unix(master)
        first = self.first_seen.get(master, before)
        extra = self.procs.extra_lbctl(self.a.lbctl, {master} | {w["pid"] for w in st["workers"]})
        ours = [master, os.getpid()] + [w["pid"] for w in st["workers"]]
        ours += [p.pid for p in self.procs.backends.values()]
        leftover = self.procs.backend_conns(set(self.echo.values()) | set(self.web.values()), ours)
        active = sum(w["active"] for w in st["workers"])
        old_masters = [m for m in self.masters if m != master and os.path.exists(f"/proc/{m}")]
        worker_fds = sorted(fd_count(w["pid"]) for w in st["workers"])
        rc, _, err = await self.lb("stop")
        end = now() + 10
        while now() < end and self.procs.extra_lbctl(self.a.lbctl, set()):
            await asyncio.sleep(0.2)
        after_stop = self.procs.extra_lbctl(self.a.lbctl, set())
        rows = [
            ("serving workers all running, no older one left", "-", "yes" if settled else "no",
             "ok" if settled else "LEAK"),
            ("lbctl processes beyond master + workers", "-", f"{len(extra)} {extra or ''}",
             "ok" if not extra else "LEAK"),
            ("older masters still alive", "-", len(old_masters), "ok" if not old_masters else "LEAK"),
            ("master fds (first master → final master)",
             f"{before['fds']} ({before['kinds']})",
             f"{after_fds} ({after_kinds})"
             + (f", of which {orphans} orphaned" if orphans else ""),
             "ok" if after_fds <= before["fds"] else "LEAK"),
            ("master unix sockets whose peer is gone", before["orphans"], orphans,
             "ok" if not orphans else "LEAK"),
            ("master RSS KiB (first master → final master)", before["rss"], after_rss,
             "ok" if after_rss <= before["rss"] + 8192 else "LEAK"),
            ("final master RSS KiB (its start → end)", first["rss"], after_rss,
             "ok" if after_rss <= first["rss"] + 8192 else "LEAK"),
            ("backend connections left open", "-",
             f"{len(leftover)} {'; '.join(leftover)}".strip(), "ok" if not leftover else "LEAK"),
            ("client connections lbctl still counts", "-", active, "ok" if not active else "LEAK"),
            ("client loops stuck after the load stopped", "-", stuck, "ok" if not stuck else "LEAK"),
            ("lbctl processes left after `lbctl stop`", "-",
             f"{len(after_stop)} {after_stop or ''} (stop exit {rc})",
             "ok" if not after_stop and rc == 0 else "LEAK"),
            ("worker fds (other processes after respawns and reloads)",
             sorted(before["workers"].values()), worker_fds, "info"),
        ]
        bad = [r[0] for r in rows if r[3] == "LEAK"]
        summary = "none" if not bad else "LEAK: " + ", ".join(bad)
        leaks = {"rows": rows, "bad": bad, "summary": summary}
        if rc != 0:
            print(f"chaos: lbctl stop exited {rc}: {err.strip()}", file=sys.stderr)
        self.procs.stop_all()
        unexplained = chaos_report.attribute(self.rec, self.kills, self.bkills, self.drains)
        meta = {
            "t0": self.t0, "duration": t_load, "seed": self.a.seed, "command": self.a.command,
            "commit": self.a.commit, "when": datetime.date.today().isoformat(),
            "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
            "workers": f"{self.a.workers} (resized 2<->4 by reloads)", "nofile": self.a.nofile,
            "backends": f"{len(self.echo)} echo + {len(self.web)} HTTP backends",
        }
        corrupt = sum(o.corrupt for o in self.rec.ops)
        full = chaos_report.build(self.rec, meta, self.actions, leaks, self.checks_failed,
                                  unexplained)
        print(full)
        if self.a.report != "-":
            with open(self.a.report, "w") as f:
                f.write(full)
        failed = unexplained or corrupt or self.checks_failed or bad
        return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lbctl", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--duration", type=float, default=120)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--workers", type=int, default=4, choices=(2, 4))
    ap.add_argument("--nofile", type=int, default=1024)
    ap.add_argument("--fd-margin", type=int, default=128)
    ap.add_argument("--fill-cap", type=int, default=4000)
    ap.add_argument("--report", default="-")
    ap.add_argument("--only", default="", help="comma-separated chaos actions (default: all)")
    ap.add_argument("--command", default="bash bench/chaos.sh")
    ap.add_argument("--commit", default="?")
    a = ap.parse_args()
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1 << 31)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soak = Soak(a)
    try:
        rc = asyncio.run(soak.run())
    finally:
        soak.procs.stop_all()
    sys.exit(rc)


if __name__ == "__main__":
    main()
