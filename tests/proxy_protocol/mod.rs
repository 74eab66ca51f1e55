//! Owns the PROXY protocol tests: `send_proxy` (send.rs: v1 and v2, IPv4
//! and IPv6, tcp and http mode, health checks, private pooled
//! connections), `accept_proxy` (accept.rs: the header's address used by
//! source_hash, limits, X-Forwarded-For and `connections`; bad, missing,
//! slow headers closed and counted while others are served), and HAProxy
//! as the backend with `accept-proxy` (haproxy.rs).
//!
//! [`ProxyBackend`] is the test backend: it reads the PROXY header of every
//! connection with a parser of its own (not lbctl's, so a bug is not
//! mirrored), records what it learned, and answers with it.

mod accept;
mod haproxy;
mod send;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the backend does after the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    /// Writes `"<header>\n"`, then echoes until EOF.
    Echo,
    /// Answers every HTTP request (keep-alive) with the body
    /// `"<header>|conn=<n>|xff=<X-Forwarded-For>\n"`.
    Http,
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    conns: AtomicUsize,
    /// The header of every connection, in accept order: `v1 TCP4 SRC DST`,
    /// `v2 TCP6 SRC DST`, `v1 UNKNOWN`, `v2 LOCAL`, or `bad: WHY`.
    seen: Mutex<Vec<String>>,
    open: Mutex<Vec<TcpStream>>,
}

/// A backend on 127.0.0.1 (or `[::1]`) that expects a PROXY header first.
#[derive(Debug)]
pub struct ProxyBackend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl ProxyBackend {
    pub fn start(serve: Serve) -> ProxyBackend {
        ProxyBackend::start_on("127.0.0.1:0", serve)
    }

    pub fn start_on(bind: &str, serve: Serve) -> ProxyBackend {
        let listener = TcpListener::bind(bind).expect("bind proxy backend");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                if let Ok(copy) = stream.try_clone() {
                    s.open.lock().expect("lock").push(copy);
                }
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    let _ = serve_one(stream, serve, &s);
                });
            }
        });
        ProxyBackend {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every header seen so far.
    pub fn seen(&self) -> Vec<String> {
        self.shared.seen.lock().expect("lock").clone()
    }
}

impl Drop for ProxyBackend {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in self.shared.open.lock().expect("lock").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(stream: TcpStream, serve: Serve, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let conn = shared.conns.fetch_add(1, Ordering::SeqCst) + 1;
    let mut r = BufReader::new(stream.try_clone()?);
    let mut w = stream;
    let header = match read_header(&mut r) {
        Ok(h) => h,
        Err(e) => {
            shared.seen.lock().expect("lock").push(format!("bad: {e}"));
            return Ok(());
        }
    };
    shared.seen.lock().expect("lock").push(header.clone());
    match serve {
        Serve::Echo => {
            w.write_all(format!("{header}\n").as_bytes())?;
            let mut buf = [0u8; 4096];
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                w.write_all(&buf[..n])?;
            }
        }
        Serve::Http => loop {
            let mut xff = String::new();
            let mut first = true;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                if line == "\r\n" && !first {
                    break;
                }
                first = false;
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("x-forwarded-for:") {
                    xff = v.trim().to_string();
                }
            }
            let body = format!("{header}|conn={conn}|xff={xff}\n");
            write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )?;
        },
    }
}

fn bad(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

/// Reads a v1 or v2 header: `v1 TCP4 SRC DST`, `v2 LOCAL`, ...
fn read_header(r: &mut impl Read) -> io::Result<String> {
    let mut first = [0u8; 1];
    r.read_exact(&mut first)?;
    if first[0] == b'P' {
        let mut line = vec![b'P'];
        while !line.ends_with(b"\r\n") {
            if line.len() >= 107 {
                return Err(bad("v1 too long"));
            }
            let mut b = [0u8; 1];
            r.read_exact(&mut b)?;
            line.push(b[0]);
        }
        let text = String::from_utf8(line).map_err(|_| bad("v1 not text"))?;
        let f: Vec<&str> = text.trim_end().split(' ').collect();
        return match f.as_slice() {
            ["PROXY", "UNKNOWN", ..] => Ok("v1 UNKNOWN".into()),
            ["PROXY", proto @ ("TCP4" | "TCP6"), src, dst, sp, dp] => {
                let ip = |s: &str| s.parse::<IpAddr>().map_err(|_| bad("v1 address"));
                let port = |s: &str| s.parse::<u16>().map_err(|_| bad("v1 port"));
                let src = SocketAddr::new(ip(src)?, port(sp)?);
                let dst = SocketAddr::new(ip(dst)?, port(dp)?);
                Ok(format!("v1 {proto} {src} {dst}"))
            }
            _ => Err(bad("v1 fields")),
        };
    }
    let mut head = [0u8; 16];
    head[0] = first[0];
    r.read_exact(&mut head[1..])?;
    if &head[..12] != b"\r\n\r\n\0\r\nQUIT\n" {
        return Err(bad("no signature"));
    }
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    match (head[12], head[13]) {
        (0x20, _) => Ok("v2 LOCAL".into()),
        (0x21, 0x11) if len >= 12 => {
            let ip = |a: usize| IpAddr::from([body[a], body[a + 1], body[a + 2], body[a + 3]]);
            let port = |a: usize| u16::from_be_bytes([body[a], body[a + 1]]);
            let src = SocketAddr::new(ip(0), port(8));
            let dst = SocketAddr::new(ip(4), port(10));
            Ok(format!("v2 TCP4 {src} {dst}"))
        }
        (0x21, 0x21) if len >= 36 => {
            let ip = |a: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&body[a..a + 16]);
                IpAddr::V6(Ipv6Addr::from(o))
            };
            let port = |a: usize| u16::from_be_bytes([body[a], body[a + 1]]);
            let src = SocketAddr::new(ip(0), port(32));
            let dst = SocketAddr::new(ip(16), port(34));
            Ok(format!("v2 TCP6 {src} {dst}"))
        }
        _ => Err(bad("v2 command or family")),
    }
}

/// A v1 header line for `src` → `dst`.
pub fn v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {proto} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// A v2 PROXY header (IPv4) for `src` → `dst`, with one TLV (skipped).
pub fn v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        panic!("v2 helper is IPv4 only");
    };
    let mut out = b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec();
    let tlv = [0x04u8, 0x00, 0x02, 0, 0]; // PP2_TYPE_NOOP, 2 bytes
    out.extend_from_slice(&((12 + tlv.len()) as u16).to_be_bytes());
    out.extend_from_slice(&s.octets());
    out.extend_from_slice(&d.octets());
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out.extend_from_slice(&tlv);
    out
}

/// The v2 LOCAL header (a balancer's own health check).
pub const V2_LOCAL: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";

pub fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// Reads one line (up to `\n`) from `s`.
pub fn read_line(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\n") {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(_) => out.push(b[0]),
            Err(e) => panic!(
                "reading a line: {e} (so far {:?})",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).trim_end().to_string()
}

/// True when the peer closed `s` (EOF or reset) within 10 s without
/// sending anything.
pub fn closed_by_peer(s: &mut TcpStream) -> bool {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
        ),
    }
}
