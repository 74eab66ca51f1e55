"""Owns the chaos soak's view of processes: the backend processes it starts,
kills and restarts (their pids also go to DIR/pids, for chaos.sh's exit trap),
and what /proc says — a process's sockets and their peers, fd counts and
kinds, RSS, fd limit, lbctl processes, connections left on the backends.
"""

import asyncio
import collections
import os
import signal
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TCP_LISTEN, TCP_TIME_WAIT = "0A", "06"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _links(pid):
    out = []
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in names:
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


def quiet_fds(pid, samples=10, every=0.1):
    """(count, kinds) at the quietest of several samples: the master's health
    probes open sockets for a few ms now and then."""
    import time

    best = None
    for _ in range(samples):
        n = fd_count(pid)
        if best is None or n < best[0]:
            best = (n, master_fd_kinds(pid))
        time.sleep(every)
    return best


def master_fd_kinds(pid):
    """The master's fds by kind, e.g. "socket 12, pipe 2, eventpoll 1, file 3"."""
    kinds = collections.Counter()
    for link in _links(pid):
        if link.startswith("socket:"):
            kinds["socket"] += 1
        elif link.startswith("pipe:"):
            kinds["pipe"] += 1
        elif link.startswith("anon_inode:"):
            kinds[link[len("anon_inode:") :].strip("[]")] += 1
        else:
            kinds["file"] += 1
    return ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))


def orphan_unix(pid):
    """Connected unix sockets of `pid` whose peer has closed (ss shows peer
    inode 0): descriptors nobody can talk to any more. None without ss."""
    mine = {link[8:-1] for link in _links(pid) if link.startswith("socket:[")}
    try:
        out = subprocess.run(["ss", "-xaH"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    n = 0
    for line in out.splitlines():
        p = line.split()
        # Netid State Recv-Q Send-Q Local-path Local-inode Peer-path Peer-inode
        if len(p) >= 8 and p[1] == "ESTAB" and p[5] in mine and p[7] == "0":
            n += 1
    return n


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tcp_table(pid="self"):
    """(local_port, remote_port, state, inode) of every IPv4 TCP socket in the
    network namespace."""
    rows = []
    with open(f"/proc/{pid}/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            rows.append((int(p[1].split(":")[1], 16), int(p[2].split(":")[1], 16), p[3], p[9]))
    return rows


def _stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    comm = data[data.index("(") + 1 : data.rindex(")")]
    rest = data[data.rindex(")") + 2 :].split()
    return comm, rest[0], int(rest[1])  # comm, state, ppid


class Procs:
    def __init__(self, run_dir):
        self.dir = run_dir
        self.backends = {}  # name -> Popen
        self.pidfile = os.path.join(run_dir, "pids")

    async def start_backend(self, name, kind, port, timeout=15.0):
        """Start (or restart) a backend; True once it accepts connections."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            log = open(os.path.join(self.dir, f"backend-{name}.log"), "a")
            p = subprocess.Popen(
                [sys.executable, os.path.join(HERE, "chaos_backend.py"), kind, name, str(port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
            log.close()
            self.backends[name] = p
            with open(self.pidfile, "a") as f:
                f.write(f"{p.pid}\n")
            while loop.time() < end and p.poll() is None:
                try:
                    _, w = await asyncio.open_connection("127.0.0.1", port)
                    w.close()
                    return True
                except OSError:
                    await asyncio.sleep(0.05)
            if p.poll() is None or loop.time() >= end:
                return False
            await asyncio.sleep(0.2)  # it exited (port still taken?): try again

    def kill_backend(self, name):
        p = self.backends.pop(name)
        p.send_signal(signal.SIGKILL)
        p.wait()

    def stop_all(self):
        for p in self.backends.values():
            if p.poll() is None:
                p.terminate()
        for p in self.backends.values():
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.backends.clear()

    @staticmethod
    async def wait_stopped(pid, timeout=2.0):
        """"stopped" once `pid` is in the stopped state (T), "gone" if it
        exited, "running" if it did not stop in time."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            st = _stat(pid)
            if st is None or st[1] in ("Z", "X"):
                return "gone"
            if st[1] in ("T", "t"):
                return "stopped"
            await asyncio.sleep(0.001)
        return "running"

    @staticmethod
    def peers(pid, listen_ports, tries=20):
        """(listen port, client port) of every accepted client socket `pid`
        holds, and how many reads that took. A read of /proc/net/tcp can skip
        entries while other sockets come and go, so the tables are read again
        until every socket of `pid` has been seen (in the TCP or unix table)."""
        inodes = {link[8:-1] for link in _links(pid) if link.startswith("socket:[")}
        seen, found = set(), set()
        for reads in range(1, tries + 1):
            with open(f"/proc/{pid}/net/unix") as f:
                seen |= {p[6] for p in (line.split() for line in list(f)[1:]) if len(p) > 6}
            for lp, rp, st, ino in _tcp_table(pid):
                if ino in inodes:
                    seen.add(ino)
                    if lp in listen_ports and st != TCP_LISTEN:
                        found.add((lp, rp))
            if inodes <= seen:
                break
        return found, reads

    @staticmethod
    def census(pids, listen_ports):
        """Who holds each client connection of the listens now: (listen port,
        client port) -> a pid of `pids`, "queued" (in an accept queue: no
        inode yet) or "other"."""
        owner = {}
        for pid in pids:
            for link in _links(pid):
                if link.startswith("socket:["):
                    owner[link[8:-1]] = pid
        return {
            (lp, rp): "queued" if ino == "0" else owner.get(ino, "other")
            for lp, rp, st, ino in _tcp_table()
            if lp in listen_ports and st != TCP_LISTEN
        }

    @staticmethod
    def nofile(pid):
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
        raise RuntimeError(f"no fd limit for {pid}")

    @staticmethod
    def extra_lbctl(binary, known):
        """Pids running `binary` (or zombies of theirs) other than `known`."""
        real = os.path.realpath(binary)
        mine, zombies = [], []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            pid = int(d)
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                exe = ""
            st = _stat(pid)
            if exe == real:
                mine.append(pid)
            elif st and st[1] == "Z" and st[0].startswith("lbctl"):
                zombies.append((pid, st[2]))
        mine_set = set(mine)
        extra = [p for p in mine if p not in known]
        return extra + [p for p, ppid in zombies if ppid in mine_set or ppid in known]

    @staticmethod
    def backend_conns(ports, pids, samples=10, every=0.2):
        """Connections still open to or on the backends (either side; not
        LISTEN, not TIME_WAIT), at the quietest of several samples (a health
        probe lives a few ms): a list of "local->remote STATE owner"."""
        import time

        states = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
                  "05": "FIN_WAIT2", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK",
                  "0B": "CLOSING"}
        best = None
        for _ in range(samples):
            rows = [r for r in _tcp_table() if (r[0] in ports or r[1] in ports)
                    and r[2] not in (TCP_LISTEN, TCP_TIME_WAIT)]
            if best is None or len(rows) < len(best):
                best = rows
            if not best:
                return []
            time.sleep(every)
        owner = {}
        for pid in pids:
            for link in _links(pid):
                if link.startswith("socket:["):
                    owner[link[8:-1]] = pid
        return [f"{lp}->{rp} {states.get(st, st)} pid {owner.get(ino, '?')}"
                for lp, rp, st, ino in best]
