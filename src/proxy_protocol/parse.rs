//! Owns reading a received PROXY header, v1 or v2: [`parse`] over the bytes
//! received so far. The rules are in the module docs of `proxy_protocol`.

use super::{Header, Parsed, ProxyError, V1_MAX, V2_MAX, V2_SIGNATURE};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const V1_PREFIX: &[u8] = b"PROXY ";

type Result<T> = std::result::Result<T, ProxyError>;

/// Reads the header at the start of `buf` (the bytes received so far):
/// complete, incomplete (a valid header may still follow), or refused.
pub fn parse(buf: &[u8]) -> Result<Parsed> {
    match buf.first() {
        None => Ok(Parsed::Incomplete),
        Some(b'P') => v1(buf),
        Some(b'\r') => v2(buf),
        Some(_) => Err(ProxyError("not a PROXY header")),
    }
}

fn v1(buf: &[u8]) -> Result<Parsed> {
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] != V1_PREFIX[..n] {
        return Err(ProxyError("not a PROXY header"));
    }
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(cr) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        if buf.len() >= V1_MAX {
            return Err(ProxyError("v1 line longer than 107 bytes"));
        }
        printable(window)?;
        return Ok(Parsed::Incomplete);
    };
    let line = &window[..cr];
    printable(line)?;
    if window[cr] != b'\r' {
        return Err(ProxyError("v1 line ends in LF without CR"));
    }
    match window.get(cr + 1) {
        None if buf.len() >= V1_MAX => return Err(ProxyError("v1 line longer than 107 bytes")),
        None => return Ok(Parsed::Incomplete),
        Some(b'\n') => {}
        Some(_) => return Err(ProxyError("v1 CR not followed by LF")),
    }
    let len = cr + 2;
    let header = v1_fields(&line[V1_PREFIX.len().min(line.len())..])?;
    Ok(Parsed::Done { header, len })
}

/// Only printable ASCII (and spaces) before the CRLF.
fn printable(bytes: &[u8]) -> Result<()> {
    if bytes.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        Ok(())
    } else {
        Err(ProxyError("v1 line has a byte that is not printable ASCII"))
    }
}

fn v1_fields(rest: &[u8]) -> Result<Header> {
    // `rest` is printable ASCII: valid UTF-8.
    let text = std::str::from_utf8(rest).map_err(|_| ProxyError("v1 line is not ASCII"))?;
    let mut fields = text.split(' ');
    let proto = fields.next().unwrap_or_default();
    let v4 = match proto {
        "UNKNOWN" => return Ok(Header::Unknown),
        "TCP4" => true,
        "TCP6" => false,
        "" => return Err(ProxyError("v1 protocol missing (or two spaces)")),
        _ => return Err(ProxyError("v1 protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let mut next = |what: &'static str| {
        fields
            .next()
            .filter(|f| !f.is_empty())
            .ok_or(ProxyError(what))
    };
    let src = next("v1 source address missing")?;
    let dst = next("v1 destination address missing")?;
    let sport = next("v1 source port missing")?;
    let dport = next("v1 destination port missing")?;
    if fields.next().is_some() {
        return Err(ProxyError("v1 line has more than six fields"));
    }
    let ip = |s: &str| -> Result<IpAddr> {
        if v4 {
            s.parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| ProxyError("v1 TCP4 address is not IPv4"))
        } else {
            s.parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| ProxyError("v1 TCP6 address is not IPv6"))
        }
    };
    Ok(Header::Proxy {
        src: SocketAddr::new(ip(src)?, port(sport)?),
        dst: SocketAddr::new(ip(dst)?, port(dport)?),
    })
}

fn port(s: &str) -> Result<u16> {
    let bad = ProxyError("v1 port is not a number in 0..=65535");
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    s.parse::<u16>().map_err(|_| bad)
}

fn v2(buf: &[u8]) -> Result<Parsed> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Err(ProxyError("not a PROXY header"));
    }
    let Some(&ver_cmd) = buf.get(12) else {
        return Ok(Parsed::Incomplete);
    };
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError("v2 version is not 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ProxyError("v2 command is not LOCAL or PROXY")),
    };
    let Some(&fam) = buf.get(13) else {
        return Ok(Parsed::Incomplete);
    };
    let (family, transport) = (fam >> 4, fam & 0x0f);
    if !local && (family > 3 || transport > 2) {
        return Err(ProxyError("v2 family or transport unknown"));
    }
    let Some(len) = buf.get(14..16) else {
        return Ok(Parsed::Incomplete);
    };
    let body_len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let total = 16 + body_len;
    if total > V2_MAX {
        return Err(ProxyError("v2 header longer than 4096 bytes"));
    }
    let Some(body) = buf.get(16..total) else {
        return Ok(Parsed::Incomplete);
    };
    let done = |header| Ok(Parsed::Done { header, len: total });
    if local {
        return done(Header::Local);
    }
    let need = match family {
        0 => return done(Header::Unknown),
        1 => 12,
        2 => 36,
        _ => 216,
    };
    if family != 3 && transport != 1 {
        return Err(ProxyError("v2 transport is not STREAM (lbctl carries TCP)"));
    }
    if body.len() < need {
        return Err(ProxyError("v2 address block shorter than its family needs"));
    }
    tlvs(&body[need..])?;
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    let header = match family {
        1 => {
            let ip = |at: usize| IpAddr::from([body[at], body[at + 1], body[at + 2], body[at + 3]]);
            Header::Proxy {
                src: SocketAddr::new(ip(0), port(8)),
                dst: SocketAddr::new(ip(4), port(10)),
            }
        }
        2 => {
            let ip = |at: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&body[at..at + 16]);
                IpAddr::from(o)
            };
            Header::Proxy {
                src: SocketAddr::new(ip(0), port(32)),
                dst: SocketAddr::new(ip(16), port(34)),
            }
        }
        _ => Header::Unknown,
    };
    done(header)
}

/// TLVs (type, 16-bit length, value) must exactly fill `rest`; they are
/// skipped, not interpreted.
fn tlvs(mut rest: &[u8]) -> Result<()> {
    while !rest.is_empty() {
        let Some(head) = rest.get(..3) else {
            return Err(ProxyError("v2 TLV cut short"));
        };
        let len = usize::from(u16::from_be_bytes([head[1], head[2]]));
        let Some(after) = rest.get(3 + len..) else {
            return Err(ProxyError("v2 TLV longer than the header"));
        };
        rest = after;
    }
    Ok(())
}
