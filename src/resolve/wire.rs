//! Owns the DNS wire format lbctl needs (RFC 1035, 2782, 3596): building one
//! recursive query for A, AAAA or SRV, and reading the records of an answer
//! (name compression followed with a hop limit, every length checked). Pure:
//! bytes in, records out; nothing here panics on a hostile packet.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Query type A (IPv4 address).
pub const TYPE_A: u16 = 1;
/// Query type AAAA (IPv6 address).
pub const TYPE_AAAA: u16 = 28;
/// Query type SRV (service location).
pub const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;

/// One record of an answer (answer and additional sections).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// An IPv4 address of `name`.
    A { name: String, addr: Ipv4Addr },
    /// An IPv6 address of `name`.
    Aaaa { name: String, addr: Ipv6Addr },
    /// A service location.
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
}

/// Why an answer was not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than its header or a record says.
    Truncated,
    /// Not the answer to our query (id, QR bit).
    NotOurs,
    /// The server set TC: the answer did not fit in UDP.
    TooLong,
    /// RCODE 3: the name does not exist.
    NxDomain,
    /// Another RCODE (2 SERVFAIL, 5 REFUSED, ...).
    Rcode(u8),
    /// A malformed name (bad label, compression loop).
    BadName,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Truncated => write!(f, "truncated answer"),
            WireError::NotOurs => write!(f, "answer to another query"),
            WireError::TooLong => write!(f, "answer too long for UDP (TC set)"),
            WireError::NxDomain => write!(f, "no such name (NXDOMAIN)"),
            WireError::Rcode(2) => write!(f, "server failure (SERVFAIL)"),
            WireError::Rcode(5) => write!(f, "refused (REFUSED)"),
            WireError::Rcode(c) => write!(f, "error code {c}"),
            WireError::BadName => write!(f, "malformed name"),
        }
    }
}

/// A recursive query for `name` (dots between labels, a final dot optional)
/// of type `qtype`; `None` when the name is not a valid DNS name.
pub fn query(id: u16, name: &str, qtype: u16) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(18 + name.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00]); // RD
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Some(out)
}

/// The A, AAAA and SRV records of the answer `buf` to query `id` (other
/// types are skipped). NOERROR with no record is an empty list.
pub fn parse(buf: &[u8], id: u16) -> Result<Vec<Record>, WireError> {
    let u16_at = |i: usize| -> Result<u16, WireError> {
        match buf.get(i..i + 2) {
            Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
            None => Err(WireError::Truncated),
        }
    };
    if u16_at(0)? != id || buf.get(2).is_none_or(|b| b & 0x80 == 0) {
        return Err(WireError::NotOurs);
    }
    let flags = u16_at(2)?;
    if flags & 0x0200 != 0 {
        return Err(WireError::TooLong);
    }
    match (flags & 0x000f) as u8 {
        0 => {}
        3 => return Err(WireError::NxDomain),
        c => return Err(WireError::Rcode(c)),
    }
    let questions = u16_at(4)?;
    let records = u32::from(u16_at(6)?) + u32::from(u16_at(8)?) + u32::from(u16_at(10)?);
    let mut pos = 12;
    for _ in 0..questions {
        pos = skip_name(buf, pos)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..records {
        let (name, after) = read_name(buf, pos)?;
        let rtype = u16_at(after)?;
        let class = u16_at(after + 2)?;
        let len = usize::from(u16_at(after + 8)?);
        let data = after + 10;
        let rdata = buf.get(data..data + len).ok_or(WireError::Truncated)?;
        pos = data + len;
        if class != CLASS_IN {
            continue;
        }
        match (rtype, rdata.len()) {
            (TYPE_A, 4) => out.push(Record::A {
                name,
                addr: Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]),
            }),
            (TYPE_AAAA, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(rdata);
                out.push(Record::Aaaa {
                    name,
                    addr: Ipv6Addr::from(b),
                });
            }
            (TYPE_SRV, 7..) => {
                let (target, _) = read_name(buf, data + 6)?;
                out.push(Record::Srv {
                    priority: u16_at(data)?,
                    weight: u16_at(data + 2)?,
                    port: u16_at(data + 4)?,
                    target,
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The position just after the name at `pos`.
fn skip_name(buf: &[u8], pos: usize) -> Result<usize, WireError> {
    read_name(buf, pos).map(|(_, after)| after)
}

/// The name at `pos` (lower case, no final dot) and the position after it
/// in the record (a compression pointer ends it).
fn read_name(buf: &[u8], mut pos: usize) -> Result<(String, usize), WireError> {
    let mut name = String::new();
    let mut after = None;
    for _ in 0..128 {
        let len = *buf.get(pos).ok_or(WireError::Truncated)?;
        match len {
            0 => return Ok((name, after.unwrap_or(pos + 1))),
            1..=63 => {
                let label = buf
                    .get(pos + 1..pos + 1 + usize::from(len))
                    .ok_or(WireError::Truncated)?;
                if !name.is_empty() {
                    name.push('.');
                }
                for &b in label {
                    if !b.is_ascii_graphic() || b == b'.' {
                        return Err(WireError::BadName);
                    }
                    name.push(char::from(b.to_ascii_lowercase()));
                }
                if name.len() > 253 {
                    return Err(WireError::BadName);
                }
                pos += 1 + usize::from(len);
            }
            0xc0.. => {
                let low = *buf.get(pos + 1).ok_or(WireError::Truncated)?;
                after.get_or_insert(pos + 2);
                pos = (usize::from(len & 0x3f) << 8) | usize::from(low);
            }
            _ => return Err(WireError::BadName),
        }
    }
    Err(WireError::BadName)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer to `q` with `records` (each: type, rdata) for the question's name.
    fn answer(q: &[u8], rcode: u8, records: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut out = q.to_vec();
        out[2] = 0x81;
        out[3] = 0x80 | rcode;
        out[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
        for (t, rdata) in records {
            out.extend_from_slice(&[0xc0, 12]);
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&[0, 1, 0, 0, 0, 10]);
            out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            out.extend_from_slice(rdata);
        }
        out
    }

    #[test]
    fn a_query_reads_its_addresses_through_compressed_names() {
        let q = query(7, "Api.Internal.", TYPE_A).expect("query");
        assert_eq!(&q[12..26], b"\x03Api\x08Internal\x00");
        let a = answer(
            &q,
            0,
            &[(TYPE_A, vec![127, 0, 0, 2]), (TYPE_A, vec![127, 0, 0, 3])],
        );
        let got = parse(&a, 7).expect("parse");
        assert_eq!(
            got,
            vec![
                Record::A {
                    name: "api.internal".into(),
                    addr: Ipv4Addr::new(127, 0, 0, 2)
                },
                Record::A {
                    name: "api.internal".into(),
                    addr: Ipv4Addr::new(127, 0, 0, 3)
                },
            ]
        );
    }

    #[test]
    fn srv_records_carry_priority_weight_port_and_target() {
        let q = query(9, "_http._tcp.api", TYPE_SRV).expect("query");
        let mut rdata = vec![0, 10, 0, 3, 0x1f, 0x90];
        rdata.extend_from_slice(b"\x02b1\x03api\x00");
        let a = answer(&q, 0, &[(TYPE_SRV, rdata)]);
        assert_eq!(
            parse(&a, 9).expect("parse"),
            vec![Record::Srv {
                priority: 10,
                weight: 3,
                port: 8080,
                target: "b1.api".into()
            }]
        );
    }

    #[test]
    fn errors_and_foreign_answers_are_told_apart() {
        let q = query(1, "x", TYPE_A).expect("query");
        assert_eq!(parse(&answer(&q, 3, &[]), 1), Err(WireError::NxDomain));
        assert_eq!(parse(&answer(&q, 2, &[]), 1), Err(WireError::Rcode(2)));
        assert_eq!(parse(&answer(&q, 0, &[]), 2), Err(WireError::NotOurs));
        assert_eq!(parse(&answer(&q, 0, &[]), 1), Ok(vec![]));
        assert_eq!(
            parse(&q, 1),
            Err(WireError::NotOurs),
            "a query is no answer"
        );
    }

    #[test]
    fn hostile_packets_are_errors_not_panics() {
        let q = query(1, "x", TYPE_A).expect("query");
        let good = answer(&q, 0, &[(TYPE_A, vec![1, 2, 3, 4])]);
        for cut in 0..good.len() {
            assert!(parse(&good[..cut], 1).is_err(), "cut at {cut}");
        }
        // A compression pointer to itself.
        let mut looped = good.clone();
        let at = q.len();
        looped[at] = 0xc0;
        looped[at + 1] = at as u8;
        assert_eq!(parse(&looped, 1), Err(WireError::BadName));
        assert!(query(1, "a..b", TYPE_A).is_none());
        assert!(query(1, &"a".repeat(64), TYPE_A).is_none());
    }
}
