//! Owns the loopback HTTP/1.1 backend of the http-mode tests: keep-alive (and
//! the HTTP/1.0 and `Connection: close` rules), pipelining, bodies by length or
//! chunked, the test routes (`/headers`, `/sha256`, `/download`, `/ws`,
//! `/slow`, `/close`, anything else), request and connection counters, and a
//! crash-like [`HttpBackend::kill`]. One thread per connection; stops on drop.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::http_wire::{
    ChunkSizes, Framing, LAST_CHUNK, MAX_HEAD, Wire, chunk_frame, framing_of, has_token,
    owned_headers, read_body,
};
use super::net::pseudo_random_bytes;
use super::tmp::wait_until;

/// How often a blocked connection thread looks at the kill flag.
const POLL: Duration = Duration::from_millis(50);

/// What the listener and the connection threads share.
#[derive(Debug, Default)]
struct Shared {
    /// Set by kill/drop: every thread resets its connection and ends.
    killed: AtomicBool,
    requests: AtomicUsize,
    connections: AtomicUsize,
    /// Connection threads still running.
    live: AtomicUsize,
    last_head: Mutex<Vec<u8>>,
}

/// An HTTP backend on `127.0.0.1:<ephemeral>` (or a given address).
#[derive(Debug)]
pub struct HttpBackend {
    name: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl HttpBackend {
    /// Starts a backend whose `/any` replies are `"<name> <target>\n"`.
    pub fn start(name: &str) -> HttpBackend {
        HttpBackend::start_at(name, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts on a given address (e.g. the one a killed backend had).
    pub fn start_at(name: &str, addr: SocketAddr) -> HttpBackend {
        let listener = TcpListener::bind(addr).expect("bind http backend");
        let addr = listener.local_addr().expect("http backend local_addr");
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = Arc::clone(&shared);
            let name = name.to_string();
            std::thread::spawn(move || accept_loop(listener, name, shared))
        };
        HttpBackend {
            name: name.to_string(),
            addr,
            shared,
            accept: Mutex::new(Some(thread)),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Request heads parsed so far (every pipelined request counts).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far (keep-alive reuse keeps this low).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Connections currently being served.
    pub fn open_connections(&self) -> usize {
        self.shared.live.load(Ordering::SeqCst)
    }

    /// The raw head bytes of the last request received (empty before any).
    pub fn last_head(&self) -> Vec<u8> {
        self.shared
            .last_head
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default()
    }

    /// Stops like a crashed server: the listener is closed (connects are
    /// refused once this returns) and every open connection is reset
    /// (SO_LINGER 0, then close), mid-response or idle. Idempotent.
    pub fn kill(&self) {
        self.shared.killed.store(true, Ordering::SeqCst);
        let thread = self.accept.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            // Wake the blocking accept; the loop sees the flag and drops the listener.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = t.join();
        }
        wait_until(Duration::from_secs(5), || self.open_connections() == 0);
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Lowercase hex SHA-256 of `data`, as `/sha256` answers it (without the newline).
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn accept_loop(listener: TcpListener, name: String, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.killed.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = conn else { continue };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        shared.live.fetch_add(1, Ordering::SeqCst);
        let shared = Arc::clone(&shared);
        let name = name.clone();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(POLL));
            let _ = stream.set_write_timeout(Some(POLL));
            let _ = stream.set_nodelay(true);
            let mut wire = Wire::new(Conn {
                stream,
                shared: Arc::clone(&shared),
            });
            let _ = serve(&mut wire, &name);
            if shared.killed.load(Ordering::SeqCst) {
                let s = &wire.inner().stream;
                let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
            }
            drop(wire);
            shared.live.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// A connection whose blocking reads and writes give up once the backend is killed.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    shared: Arc<Shared>,
}

impl Conn {
    fn killed(&self) -> bool {
        self.shared.killed.load(Ordering::SeqCst)
    }

    fn check(&self) -> io::Result<()> {
        if self.killed() {
            Err(io::Error::other("backend killed"))
        } else {
            Ok(())
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.check()?;
            match self.stream.read(buf) {
                Err(e) if is_timeout(&e) => continue,
                other => return other,
            }
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            self.check()?;
            match self.stream.write(buf) {
                Err(e) if is_timeout(&e) => continue,
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One parsed request head.
#[derive(Debug)]
struct Request {
    method: String,
    target: String,
    minor: u8,
    headers: Vec<(String, String)>,
    raw: Vec<u8>,
}

impl Request {
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    fn query(&self, key: &str) -> Option<u64> {
        let q = self.target.split_once('?')?.1;
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.parse().ok())
    }

    /// HTTP/1.1 stays open unless `Connection: close`; HTTP/1.0 closes unless
    /// `Connection: keep-alive`.
    fn keep_alive(&self) -> bool {
        if self.minor == 0 {
            has_token(&self.headers, "connection", "keep-alive")
        } else {
            !has_token(&self.headers, "connection", "close")
        }
    }
}

/// Serves requests on one connection until it closes, the client asks to
/// close, or the backend is killed.
fn serve(wire: &mut Wire<Conn>, name: &str) -> io::Result<()> {
    loop {
        let Some(req) = read_request(wire)? else {
            return Ok(());
        };
        wire.inner().shared.requests.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut h) = wire.inner().shared.last_head.lock() {
            h.clone_from(&req.raw);
        }
        if !respond(wire, name, &req)? {
            return Ok(());
        }
    }
}

/// Reads one request head; `None` at a clean EOF between requests. A bad or
/// oversized head gets its error reply here, then `None`.
fn read_request(wire: &mut Wire<Conn>) -> io::Result<Option<Request>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(wire.buffered()) {
            Ok(httparse::Status::Complete(n)) => {
                let parsed = Request {
                    method: req.method.unwrap_or("").to_string(),
                    target: req.path.unwrap_or("").to_string(),
                    minor: req.version.unwrap_or(1),
                    headers: owned_headers(req.headers),
                    raw: Vec::new(),
                };
                let raw = wire.consume(n);
                return Ok(Some(Request { raw, ..parsed }));
            }
            Ok(httparse::Status::Partial) if wire.buffered().len() > MAX_HEAD => {
                write_simple(wire, 431, "Request Header Fields Too Large", false)?;
                return Ok(None);
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => {
                write_simple(wire, 400, "Bad Request", false)?;
                return Ok(None);
            }
        }
        if wire.fill()? == 0 {
            return Ok(None);
        }
    }
}

/// Answers one request; returns whether the connection stays open.
fn respond(wire: &mut Wire<Conn>, name: &str, req: &Request) -> io::Result<bool> {
    if has_token(&req.headers, "expect", "100-continue") {
        wire.inner_mut()
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let framing = match framing_of(&req.headers) {
        Ok(Some(Framing::UntilClose)) | Err(_) => {
            write_simple(wire, 400, "Bad Request", false)?;
            return Ok(false);
        }
        Ok(f) => f.unwrap_or(Framing::None),
    };
    let mut hasher = Sha256::new();
    read_body(wire, framing, &mut |b| hasher.update(b))?;
    let keep = req.keep_alive();
    let head_only = req.method == "HEAD";
    match (req.method.as_str(), req.path()) {
        ("GET", "/headers") => {
            write_reply(wire, name, keep, req.minor, head_only, &req.raw)?;
            Ok(keep)
        }
        ("POST" | "PUT", "/sha256") => {
            let body = format!("{}\n", hex(&hasher.finalize()));
            write_reply(wire, name, keep, req.minor, false, body.as_bytes())?;
            Ok(keep)
        }
        ("GET" | "HEAD", "/download") => download(wire, name, req, head_only),
        ("GET", "/ws") => websocket(wire, req),
        (_, path) => {
            let keep = keep && path != "/close";
            if path == "/slow" {
                let until = Instant::now() + Duration::from_millis(req.query("ms").unwrap_or(0));
                while Instant::now() < until {
                    wire.inner().check()?;
                    std::thread::sleep(POLL.min(until - Instant::now()));
                }
            }
            let body = format!("{name} {}\n", req.target);
            write_reply(wire, name, keep, req.minor, head_only, body.as_bytes())?;
            Ok(keep)
        }
    }
}

/// The `Connection` header a reply needs, if any.
fn connection_header(keep: bool, minor: u8) -> &'static str {
    match (keep, minor) {
        (false, _) => "Connection: close\r\n",
        (true, 0) => "Connection: keep-alive\r\n",
        (true, _) => "",
    }
}

/// A 200 `text/plain` reply framed by Content-Length.
fn write_reply(
    wire: &mut Wire<Conn>,
    name: &str,
    keep: bool,
    minor: u8,
    head_only: bool,
    body: &[u8],
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Backend: {name}\r\n{}\r\n",
        body.len(),
        connection_header(keep, minor),
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    wire.inner_mut().write_all(&out)
}

/// An error reply that closes the connection.
fn write_simple(wire: &mut Wire<Conn>, code: u16, reason: &str, keep: bool) -> io::Result<()> {
    let body = format!("{code} {reason}\n");
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
        body.len(),
        connection_header(keep, 1),
    );
    wire.inner_mut()
        .write_all(format!("{head}{body}").as_bytes())
}

/// `GET /download?bytes=N&seed=S`: N pseudo-random bytes in chunks of 1 B to
/// 64 KiB (HTTP/1.0 clients get them unframed, then the close).
fn download(wire: &mut Wire<Conn>, name: &str, req: &Request, head_only: bool) -> io::Result<bool> {
    let len = req.query("bytes").unwrap_or(0) as usize;
    let seed = req.query("seed").unwrap_or(0);
    let chunked = req.minor >= 1;
    let keep = req.keep_alive() && chunked;
    let framing = if chunked {
        "Transfer-Encoding: chunked\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n{framing}X-Backend: {name}\r\n{}\r\n",
        connection_header(keep, req.minor),
    );
    let conn = wire.inner_mut();
    conn.write_all(head.as_bytes())?;
    if head_only {
        return Ok(keep);
    }
    let data = pseudo_random_bytes(len, seed);
    let mut rest = &data[..];
    let mut sizes = ChunkSizes::new(seed, 64 * 1024);
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(1).min(rest.len());
        if chunked {
            conn.write_all(&chunk_frame(&rest[..n]))?;
        } else {
            conn.write_all(&rest[..n])?;
        }
        rest = &rest[n..];
    }
    if chunked {
        conn.write_all(LAST_CHUNK)?;
    }
    Ok(keep)
}

/// `GET /ws` with `Upgrade: websocket`: 101, then a raw echo until EOF.
/// Without the upgrade headers: 426 and close.
fn websocket(wire: &mut Wire<Conn>, req: &Request) -> io::Result<bool> {
    let upgrade = has_token(&req.headers, "upgrade", "websocket")
        && has_token(&req.headers, "connection", "upgrade");
    if !upgrade {
        write_simple(wire, 426, "Upgrade Required", false)?;
        return Ok(false);
    }
    let early = wire.take_buffered();
    let conn = wire.inner_mut();
    conn.write_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )?;
    conn.write_all(&early)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match conn.read(&mut buf)? {
            0 => {
                let _ = conn.stream.shutdown(std::net::Shutdown::Write);
                return Ok(false);
            }
            n => conn.write_all(&buf[..n])?,
        }
    }
}
