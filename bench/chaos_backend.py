#!/usr/bin/env python3
"""Owns the chaos soak's loopback backends (one process each, so that the soak
can kill -9 one and start it again on the same port):

  chaos_backend.py echo NAME PORT   greets every connection with a 16-byte line
                                    "BK NAME...\\n", then echoes every byte; on the
                                    client's FIN it sends what is left and closes
  chaos_backend.py http NAME PORT   HTTP/1.1 with keep-alive; every answer carries
                                    X-Backend: NAME and a Content-Length
      GET  /health                  200 "ok"
      GET  /bytes?n=N&seed=S        N bytes of shake_128(S) (the client checks them)
      POST /sha                     the sha256 (hex) and length of the request body

Binds 127.0.0.1 only. SIGTERM exits cleanly; SIGKILL is the chaos.
"""

import asyncio
import hashlib
import resource
import signal
import socket
import sys
from urllib.parse import parse_qs, urlsplit

GREETING_LEN = 16
CHUNK = 256 * 1024
MAX_BYTES = 64 << 20


def greeting(name):
    """The fixed-size line an echo backend sends first: it names the backend."""
    return (b"BK " + name.encode())[: GREETING_LEN - 1].ljust(GREETING_LEN - 1) + b"\n"


def body_bytes(n, seed):
    """The body GET /bytes answers; the client computes the same to check it."""
    return hashlib.shake_128(seed.encode()).digest(n) if n else b""


class Echo(asyncio.Protocol):
    """One echo connection, with back-pressure: reading pauses while the
    write buffer is above its high-water mark."""

    def __init__(self, hello):
        self.hello = hello
        self.t = None

    def connection_made(self, transport):
        self.t = transport
        transport.set_write_buffer_limits(high=1 << 20)
        transport.write(self.hello)

    def data_received(self, data):
        self.t.write(data)

    def pause_writing(self):
        self.t.pause_reading()

    def resume_writing(self):
        self.t.resume_reading()

    def eof_received(self):
        return False  # close once the write buffer is flushed


def reply(status, body, name, close, ctype=b"application/octet-stream"):
    head = (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Type: " + ctype + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"X-Backend: " + name.encode() + b"\r\n"
    )
    if close:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + body


async def http_conn(name, reader, writer):
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                break
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                writer.write(reply(b"400 Bad Request", b"bad request line\n", name, True))
                break
            method, target, version = parts
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            close = version == "HTTP/1.0" or headers.get("connection", "").lower() == "close"
            sha = hashlib.sha256()
            length = int(headers.get("content-length", "0") or 0)
            left = length
            while left > 0:
                data = await reader.read(min(left, CHUNK))
                if not data:
                    return
                sha.update(data)
                left -= len(data)
            url = urlsplit(target)
            if url.path == "/health":
                out = reply(b"200 OK", b"ok", name, close, b"text/plain")
            elif url.path == "/bytes" and method == "GET":
                q = parse_qs(url.query)
                n = min(int(q.get("n", ["0"])[0]), MAX_BYTES)
                out = reply(b"200 OK", body_bytes(n, q.get("seed", [""])[0]), name, close)
            elif url.path == "/sha" and method == "POST":
                text = f"{sha.hexdigest()} {length}".encode()
                out = reply(b"200 OK", text, name, close, b"text/plain")
            else:
                out = reply(b"404 Not Found", b"no such route\n", name, close, b"text/plain")
            writer.write(out)
            await writer.drain()
            if close:
                break
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def listen_socket(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(4096)
    s.setblocking(False)
    return s


async def main(kind, name, port):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    sock = listen_socket(port)
    if kind == "echo":
        hello = greeting(name)
        server = await loop.create_server(lambda: Echo(hello), sock=sock, backlog=4096)
    else:
        server = await asyncio.start_server(
            lambda r, w: http_conn(name, r, w), sock=sock, backlog=4096, limit=1 << 16
        )
    async with server:
        await stop


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if len(sys.argv) != 4 or sys.argv[1] not in ("echo", "http"):
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
