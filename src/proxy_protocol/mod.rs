//! Owns the PROXY protocol (HAProxy's spec, versions 1 and 2), pure: bytes
//! in, a [`Header`] out ([`parse`], in `parse.rs`), and the headers lbctl
//! sends ([`encode`], [`encode_local`]). No I/O; the worker peeks at a
//! client's first bytes and hands them here (`worker/proxy_accept.rs`), and
//! writes an encoded header to a server right after connecting
//! (`worker/proxy_send.rs`); health checks send [`encode_local`].
//!
//! Strictness (what [`parse`] refuses, beyond "not a header at all"):
//! - v1: longer than [`V1_MAX`] (107) bytes with its CRLF; anything but
//!   printable ASCII before the CRLF; a lone CR or LF; not exactly one space
//!   between fields; a protocol other than `TCP4`, `TCP6`, `UNKNOWN`; an
//!   address not of the protocol's family; a port that is not 1-5 digits
//!   within 0..=65535. After `UNKNOWN` anything up to the CRLF is ignored
//!   (the spec says so).
//! - v2: a version other than 2; a command other than LOCAL or PROXY; a
//!   header longer than [`V2_MAX`] bytes in all; with PROXY, a family other
//!   than UNSPEC, INET, INET6, UNIX, a transport other than STREAM for INET
//!   and INET6 (lbctl carries TCP), an address block shorter than its
//!   family needs, or TLVs that do not exactly fill the rest. TLVs are
//!   skipped, never interpreted. LOCAL (the sender's own health check)
//!   skips whatever follows its 16 bytes.
//!
//! [`parse`] decides as early as the bytes allow: a first byte that cannot
//! start either version is refused at once (no waiting for a timeout), and
//! [`Parsed::Incomplete`] only ever means "a valid header may still follow".

mod parse;
#[cfg(test)]
mod tests;

pub use parse::parse;

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Most bytes of a v1 header, its CRLF included (the spec's bound).
pub const V1_MAX: usize = 107;

/// Most bytes of a v2 header lbctl accepts (16 fixed bytes, the address
/// block and TLVs). The spec allows up to 16 + 65535; senders in practice
/// (HAProxy, cloud balancers) stay far below this.
pub const V2_MAX: usize = 4096;

/// Most bytes either version may take: what a reader needs to look at.
pub const MAX_HEADER: usize = V2_MAX;

/// The v2 signature: the first 12 bytes of every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// `send_proxy = "v1" | "v2"`: which version a server is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header.
    V2,
}

impl Version {
    /// Every accepted spelling.
    pub const NAMES: &'static [&'static str] = &["v1", "v2"];

    /// Parses a config spelling.
    pub fn from_name(name: &str) -> Option<Version> {
        match name {
            "v1" => Some(Version::V1),
            "v2" => Some(Version::V2),
            _ => None,
        }
    }

    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

/// What a received header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The original connection: the client (`src`) and the address it
    /// connected to (`dst`).
    Proxy {
        /// The client.
        src: SocketAddr,
        /// What the client connected to.
        dst: SocketAddr,
    },
    /// v2 LOCAL: the sender's own connection (its health check); the
    /// connection's real addresses apply.
    Local,
    /// v1 `UNKNOWN`, or v2 PROXY over an unspecified or unix family: the
    /// sender does not know; the connection's real addresses apply.
    Unknown,
}

impl Header {
    /// The addresses the header carries, if it carries any.
    pub fn addresses(&self) -> Option<(SocketAddr, SocketAddr)> {
        match *self {
            Header::Proxy { src, dst } => Some((src, dst)),
            Header::Local | Header::Unknown => None,
        }
    }
}

/// Outcome of [`parse`] on the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Too few bytes to decide; a valid header may still follow.
    Incomplete,
    /// A complete header of `len` bytes; what follows belongs to the
    /// connection.
    Done {
        /// What it says.
        header: Header,
        /// Its length in bytes.
        len: usize,
    },
}

/// Why bytes are not a PROXY header; the text names the rule broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyError(pub &'static str);

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad PROXY header: {}", self.0)
    }
}

impl std::error::Error for ProxyError {}

/// An encoded header, on the stack (no allocation per server connection).
#[derive(Clone, Copy)]
pub struct Encoded {
    bytes: [u8; V1_MAX],
    len: usize,
}

impl Encoded {
    fn new() -> Encoded {
        Encoded {
            bytes: [0; V1_MAX],
            len: 0,
        }
    }

    fn push(&mut self, data: &[u8]) {
        // Callers stay within V1_MAX (the longest v1 header, larger than
        // any v2 header lbctl writes); past it bytes are dropped, never a
        // panic, and the tests would see a truncated header.
        let end = (self.len + data.len()).min(self.bytes.len());
        let n = end - self.len;
        self.bytes[self.len..end].copy_from_slice(&data[..n]);
        self.len = end;
    }

    /// The header's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Debug for Encoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Encoded({:?})",
            self.as_bytes().escape_ascii().to_string()
        )
    }
}

impl fmt::Write for Encoded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

/// Both addresses in one family: when they differ, the IPv4 one is written
/// as IPv4-mapped IPv6 (`::ffff:a.b.c.d`).
fn same_family(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    if src.is_ipv4() == dst.is_ipv4() {
        (src, dst)
    } else {
        (v6(src), v6(dst))
    }
}

/// The header telling a server that `src` connected to `dst` (PROXY
/// command, TCP over IPv4 or IPv6).
pub fn encode(version: Version, src: SocketAddr, dst: SocketAddr) -> Encoded {
    use std::fmt::Write as _;
    let (src, dst) = same_family(src, dst);
    let mut out = Encoded::new();
    match version {
        Version::V1 => {
            let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            let _ = write!(
                out,
                "PROXY {proto} {} {} {} {}\r\n",
                src.ip(),
                dst.ip(),
                src.port(),
                dst.port()
            );
        }
        Version::V2 => {
            out.push(&V2_SIGNATURE);
            match (src.ip(), dst.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(&[0x21, 0x11]);
                    out.push(&12u16.to_be_bytes());
                    out.push(&s.octets());
                    out.push(&d.octets());
                }
                (s, d) => {
                    let v6 = |ip: IpAddr| match ip {
                        IpAddr::V6(v6) => v6.octets(),
                        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                    };
                    out.push(&[0x21, 0x21]);
                    out.push(&36u16.to_be_bytes());
                    out.push(&v6(s));
                    out.push(&v6(d));
                }
            }
            out.push(&src.port().to_be_bytes());
            out.push(&dst.port().to_be_bytes());
        }
    }
    out
}

/// The header of a connection that carries no client (a health check):
/// v1 `PROXY UNKNOWN\r\n`, v2 the LOCAL command with no addresses — what
/// HAProxy sends on its own checks (`check-send-proxy`).
pub fn encode_local(version: Version) -> Encoded {
    let mut out = Encoded::new();
    match version {
        Version::V1 => out.push(b"PROXY UNKNOWN\r\n"),
        Version::V2 => {
            out.push(&V2_SIGNATURE);
            out.push(&[0x20, 0x00, 0x00, 0x00]);
        }
    }
    out
}
