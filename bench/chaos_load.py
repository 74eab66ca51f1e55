"""Owns the chaos soak's client load: the loopback connection wrapper, the
record of every operation (one HTTP request or one TCP exchange, with the
client port it used so a failure can be matched to a kill), and the client
loops — keep-alive HTTP, new-connection HTTP and TCP, large TCP transfers
checked byte by byte and by sha256, slow readers, and clients that reset
(SO_LINGER 0) mid-transfer.

Every received byte is compared with what was sent (echo) or with what the
backend must have sent (HTTP /bytes is a pure function of n and seed), so
`corrupt` counts real corruption, also in a transfer cut short by a kill.
"""

import asyncio
import collections
import errno
import hashlib
import random
import socket
import struct
import time
from dataclasses import dataclass, field

from chaos_backend import GREETING_LEN, body_bytes

CHUNK = 256 * 1024
STALL = 20.0  # no progress for this long: the operation failed ("stall")
CONNECT_TIMEOUT = 10.0
MIB = 1 << 20


def now():
    return time.monotonic()


class Failure(Exception):
    """An operation failed for a named cause."""

    def __init__(self, cause, detail=""):
        super().__init__(f"{cause}: {detail}" if detail else cause)
        self.cause = cause
        self.detail = detail


class Corrupt(Failure):
    def __init__(self, nbytes, detail):
        super().__init__("corrupt", detail)
        self.nbytes = nbytes


class StaleClose(Exception):
    """A reused keep-alive connection closed before any byte of the answer."""


def cause_of(exc):
    """The failure cause of an exception raised by an operation."""
    if isinstance(exc, Failure):
        return exc.cause
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return "reset"
    if isinstance(exc, OSError) and exc.errno == errno.ENOTCONN:
        return "reset"  # shutdown() of a connection the peer has reset
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "stall"
    if isinstance(exc, OSError):
        return f"oserror:{exc.errno}"
    return type(exc).__name__


@dataclass
class Op:
    """One operation and its outcome."""

    kind: str
    listen_port: int
    t_start: float
    client_port: int = 0
    t_open: float = 0.0  # when its connection's connect began
    t_end: float = 0.0
    t_first: float = 0.0  # first byte from the server side
    ok: bool = False
    cause: str = ""
    detail: str = ""
    backend: str = ""
    nbytes: int = 0  # payload bytes checked
    corrupt: int = 0
    reset_by_client: bool = False
    verdict: str = ""  # filled by the attribution
    why: str = ""


@dataclass
class Close:
    """A kept-alive client connection lbctl closed between two requests."""

    listen_port: int
    client_port: int
    t_open: float
    t_seen: float
    how: str  # "idle" (seen before reuse) or "race" (request crossed the close)
    verdict: str = ""
    why: str = ""


@dataclass
class Record:
    ops: list = field(default_factory=list)
    closes: list = field(default_factory=list)


class Conn:
    """One non-blocking client socket driven through the asyncio loop."""

    def __init__(self, port):
        self.port = port
        self.sock = None
        self.client_port = 0
        self.t_open = 0.0
        self.buf = b""
        self.used = 0

    async def open(self):
        loop = asyncio.get_running_loop()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        self.sock = s
        # Taken before connect: this task may resume well after the kernel
        # has connected (and a worker accepted) — the chaos loop shares the
        # event loop — and a kill in between must still count as overlapping.
        self.t_open = now()
        await asyncio.wait_for(loop.sock_connect(s, ("127.0.0.1", self.port)), CONNECT_TIMEOUT)
        self.client_port = s.getsockname()[1]
        return self

    async def send(self, data):
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_sendall(self.sock, data), STALL)

    async def recv(self, n=CHUNK):
        if self.buf:
            data, self.buf = self.buf[:n], self.buf[n:]
            return data
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.sock_recv(self.sock, n), STALL)

    async def recv_exact(self, n):
        out = b""
        while len(out) < n:
            data = await self.recv(n - len(out))
            if not data:
                raise Failure("eof", f"after {len(out)} of {n} bytes")
            out += data
        return out

    def peer_closed(self):
        """True if the peer has closed an idle connection (EOF or reset pending)."""
        try:
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def close(self, reset=False):
        if self.sock is None:
            return
        if reset:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
        self.sock = None


class Pool:
    """A block of random bytes; a transfer sends slices at random offsets, so
    a reordered or repeated chunk is caught as well as a flipped byte."""

    def __init__(self, rng, size=16 * MIB):
        self.data = memoryview(rng.randbytes(size))
        self.rng = rng

    def chunk(self, n):
        off = self.rng.randrange(0, len(self.data) - n)
        return self.data[off : off + n]


def count_diff(a, b):
    return sum(1 for x, y in zip(a, b) if x != y) + abs(len(a) - len(b))


async def run_op(rec, op, coro):
    """Run one operation, filling in its outcome; never raises (but cancellation)."""
    try:
        await coro
        op.ok = True
    except (asyncio.CancelledError, StaleClose):
        raise
    except Exception as e:  # noqa: BLE001 - every failure is recorded, by cause
        op.cause = cause_of(e)
        op.detail = str(e)[:200]
        if isinstance(e, Corrupt):
            op.corrupt += e.nbytes
    op.t_end = now()
    rec.ops.append(op)
    return op.ok


async def first_error(*coros):
    """Run coroutines together; the first exception cancels the others and is raised."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in pending:
            t.cancel()
        for t in done:
            if t.exception() is not None:
                raise t.exception()
        return [t.result() for t in tasks]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def echo_exchange(conn, op, pool, size, read_pause=0.0, read_size=CHUNK, reset_after=None):
    """Through an echo backend: read its greeting, send `size` bytes (then FIN)
    while reading them back; every byte is compared with the sent stream and
    both sha256 must match. With reset_after, the client resets the
    connection (SO_LINGER 0) once that many bytes came back."""
    hello = await conn.recv_exact(GREETING_LEN)
    op.t_first = now()
    if not hello.startswith(b"BK "):
        raise Failure("protocol", f"greeting {hello!r}")
    op.backend = hello[3:].strip().decode()
    pending = collections.deque()
    sent_sha, got_sha = hashlib.sha256(), hashlib.sha256()

    async def sender():
        left = size
        while left > 0:
            chunk = pool.chunk(min(CHUNK, left))
            sent_sha.update(chunk)
            pending.append(chunk)
            await conn.send(chunk)
            left -= len(chunk)
        conn.sock.shutdown(socket.SHUT_WR)

    async def receiver():
        got = 0
        while True:
            data = await conn.recv(read_size)
            if not data:
                break
            got_sha.update(data)
            view = memoryview(data)
            while view:
                if not pending:
                    raise Corrupt(len(view), f"{len(view)} bytes more than sent")
                head = pending[0]
                k = min(len(head), len(view))
                if head[:k] != view[:k]:
                    bad = count_diff(head[:k], view[:k])
                    raise Corrupt(bad, f"{bad} bytes differ at offset {got}")
                got += k
                op.nbytes = got
                view = view[k:]
                if k == len(head):
                    pending.popleft()
                else:
                    pending[0] = head[k:]
            if reset_after is not None and got >= reset_after:
                return "reset"
            if read_pause:
                await asyncio.sleep(read_pause)
        if got != size:
            raise Failure("eof", f"echo ended after {got} of {size} bytes")
        if sent_sha.digest() != got_sha.digest():
            raise Corrupt(size, "sha256 differs")
        return "done"

    if reset_after is None:
        await first_error(sender(), receiver())
        return
    recv_task = asyncio.ensure_future(receiver())
    send_task = asyncio.ensure_future(sender())
    try:
        done, _ = await asyncio.wait([recv_task, send_task], return_when=asyncio.FIRST_EXCEPTION)
        if recv_task in done:
            recv_task.result()  # raises its failure
        elif send_task.exception() is not None:
            raise send_task.exception()
    finally:
        send_task.cancel()
        recv_task.cancel()
        await asyncio.gather(send_task, recv_task, return_exceptions=True)
    op.reset_by_client = True
    conn.close(reset=True)


async def http_call(conn, op, method, path, body=b"", close=False, read_pause=0.0):
    """One request on `conn`; returns (status, headers, body)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: chaos\r\n"
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    if close:
        head += "Connection: close\r\n"
    reused = conn.used > 0
    conn.used += 1
    got_any = False
    try:
        await conn.send(head.encode() + b"\r\n" + body)
        raw = b""
        while b"\r\n\r\n" not in raw:
            data = await conn.recv(65536)
            if not data:
                raise Failure("eof", f"after {len(raw)} bytes of the response head")
            if not got_any:
                op.t_first = now()
            got_any = True
            raw += data
            if len(raw) > 65536:
                raise Failure("protocol", "response head too long")
    except Failure as e:
        if reused and not got_any and e.cause == "eof":
            raise StaleClose() from e
        raise
    except (ConnectionResetError, BrokenPipeError) as e:
        if reused and not got_any:
            raise StaleClose() from e
        raise
    head_bytes, rest = raw.split(b"\r\n\r\n", 1)
    lines = head_bytes.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise Failure("protocol", f"status line {lines[0]!r}")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    op.backend = headers.get("x-backend", "")
    conn.buf = rest
    if "content-length" not in headers:
        raise Failure("protocol", f"status {status} without Content-Length")
    n = int(headers["content-length"])
    parts = []
    got = 0
    while got < n:
        data = await conn.recv(min(n - got, 32768 if read_pause else CHUNK))
        if not data:
            raise Failure("eof", f"body ended after {got} of {n} bytes (status {status})")
        parts.append(data)
        got += len(data)
        if read_pause:
            await asyncio.sleep(read_pause)
    if headers.get("connection", "").lower() == "close":
        conn.close()
    return status, headers, b"".join(parts)


async def http_checked(conn, op, rng, size, close=False, read_pause=0.0, post=False):
    """GET /bytes (or POST /sha) and check every byte of the answer."""
    if post:
        body = rng.randbytes(size)
        status, _, got = await http_call(conn, op, "POST", "/sha", body, close)
        expect = f"{hashlib.sha256(body).hexdigest()} {size}".encode()
    else:
        seed = f"{rng.getrandbits(48):x}"
        path = f"/bytes?n={size}&seed={seed}"
        status, _, got = await http_call(conn, op, "GET", path, b"", close, read_pause)
        expect = None
    if status != 200:
        raise Failure(f"http_{status}", got[:120].decode("latin-1"))
    if expect is None:
        expect = body_bytes(size, seed)
    op.nbytes = len(got)
    if got != expect:
        bad = count_diff(got, expect)
        raise Corrupt(bad, f"{bad} of {len(expect)} body bytes differ")


class Load:
    """The client loops, all stopped by `stop` (an asyncio.Event)."""

    def __init__(self, rec, tcp_port, http_port, seed):
        self.rec = rec
        self.tcp = tcp_port
        self.http = http_port
        self.rng = random.Random(seed)
        self.pool = Pool(self.rng)
        self.stop = asyncio.Event()

    def op(self, kind, port):
        return Op(kind=kind, listen_port=port, t_start=now())

    async def pause(self, lo, hi):
        try:
            await asyncio.wait_for(self.stop.wait(), self.rng.uniform(lo, hi))
        except asyncio.TimeoutError:
            pass

    async def keepalive_http(self):
        """One kept-alive connection for many requests; reconnects when lbctl
        closes it (each close is recorded and judged like a failure)."""
        conn = None
        while not self.stop.is_set():
            if conn is not None and conn.sock is not None and conn.peer_closed():
                self.note_close(conn, "idle")
                conn.close()
            if conn is None or conn.sock is None:
                conn = Conn(self.http)
            post = self.rng.random() < 0.3
            size = self.rng.randrange(0, 256 * 1024 if post else 64 * 1024)
            for _ in range(2):
                op = self.op("http_keepalive", self.http)

                async def go(conn=conn, op=op):
                    if conn.sock is None:
                        await conn.open()
                    op.client_port, op.t_open = conn.client_port, conn.t_open
                    await http_checked(conn, op, self.rng, size, post=post)

                try:
                    await run_op(self.rec, op, go())
                    break
                except StaleClose:
                    # The request crossed lbctl's close: ask again on a new
                    # connection, as HTTP clients do.
                    self.note_close(conn, "race")
                    conn.close()
                    conn = Conn(self.http)
            if not op.ok:
                conn.close()
            await self.pause(0.0, 1.2 if self.rng.random() < 0.05 else 0.03)
        if conn is not None:
            conn.close()

    def note_close(self, conn, how):
        self.rec.closes.append(Close(self.http, conn.client_port, conn.t_open, now(), how))

    async def one_conn(self, kind, port, body):
        """An operation on a connection of its own."""
        conn = Conn(port)
        op = self.op(kind, port)

        async def run():
            await conn.open()
            op.client_port, op.t_open = conn.client_port, conn.t_open
            await body(conn, op)

        try:
            return await run_op(self.rec, op, run())
        finally:
            conn.close()

    async def newconn_http(self):
        while not self.stop.is_set():
            size = self.rng.randrange(0, 16 * 1024)
            await self.one_conn(
                "http_newconn",
                self.http,
                lambda c, o, s=size: http_checked(c, o, self.rng, s, close=True),
            )
            await self.pause(0.0, 0.02)

    async def newconn_tcp(self):
        while not self.stop.is_set():
            size = self.rng.randrange(1, 64 * 1024)
            await self.one_conn(
                "tcp_newconn", self.tcp, lambda c, o, s=size: echo_exchange(c, o, self.pool, s)
            )
            await self.pause(0.0, 0.02)

    async def transfer(self):
        while not self.stop.is_set():
            size = self.rng.randrange(1 * MIB, 48 * MIB + 1)
            await self.one_conn(
                "tcp_transfer", self.tcp, lambda c, o, s=size: echo_exchange(c, o, self.pool, s)
            )
            await self.pause(0.0, 0.3)

    async def slow_reader(self):
        """A reader far slower than the sender: back-pressure all the way."""
        while not self.stop.is_set():
            size = self.rng.randrange(1 * MIB, 4 * MIB)
            if self.rng.random() < 0.5:
                await self.one_conn(
                    "tcp_slow_reader",
                    self.tcp,
                    lambda c, o, s=size: echo_exchange(
                        c, o, self.pool, s, read_pause=0.01, read_size=16384
                    ),
                )
            else:
                await self.one_conn(
                    "http_slow_reader",
                    self.http,
                    lambda c, o, s=size: http_checked(c, o, self.rng, s, close=True, read_pause=0.01),
                )
            await self.pause(0.0, 0.3)

    async def resetter(self):
        """Transfers the client resets (SO_LINGER 0) part-way."""
        while not self.stop.is_set():
            size = self.rng.randrange(4 * MIB, 32 * MIB)
            cut = self.rng.randrange(0, size // 2)
            await self.one_conn(
                "tcp_reset_by_client",
                self.tcp,
                lambda c, o, s=size, r=cut: echo_exchange(c, o, self.pool, s, reset_after=r),
            )
            await self.pause(0.1, 0.6)

    def tasks(self):
        loops = (
            [self.keepalive_http] * 3
            + [self.newconn_http] * 2
            + [self.newconn_tcp] * 2
            + [self.transfer] * 2
            + [self.slow_reader, self.resetter]
        )
        return [asyncio.ensure_future(f()) for f in loops]
