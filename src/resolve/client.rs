//! Owns one lookup, done with blocking UDP I/O (only the resolver thread
//! calls it): the nameservers (the config's, else `/etc/resolv.conf`'s), a
//! query to each in turn with a timeout, and turning the records into the
//! members of a pool: A+AAAA of a host name at the configured port, or the
//! targets of SRV records with their ports and weights (the lowest priority
//! is the primary tier, every higher one backup).

use super::wire::{self, Record, TYPE_A, TYPE_AAAA, TYPE_SRV};
use super::{Lookup, Member};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

/// The nameservers `/etc/resolv.conf` names (port 53), at most three as in
/// glibc; none when it cannot be read.
pub fn system_nameservers() -> Vec<SocketAddr> {
    match std::fs::read_to_string("/etc/resolv.conf") {
        Ok(text) => parse_resolv_conf(&text),
        Err(_) => Vec::new(),
    }
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then_some(())?;
            // A scoped IPv6 address ("fe80::1%eth0") is not supported.
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .take(3)
        .collect()
}

/// Resolves `lookup` with `servers` (each tried in turn until one answers),
/// each query bounded by `timeout`.
pub fn resolve(
    lookup: &Lookup,
    servers: &[SocketAddr],
    timeout: Duration,
) -> Result<Vec<Member>, String> {
    if servers.is_empty() {
        return Err("no nameserver (none in /etc/resolv.conf)".into());
    }
    match lookup {
        Lookup::Host { name, port } => {
            let ips = addresses(name, servers, timeout, &[])?;
            Ok(ips
                .into_iter()
                .map(|ip| Member {
                    addr: SocketAddr::new(ip, *port),
                    weight: None,
                    backup: false,
                })
                .collect())
        }
        Lookup::Srv { name } => {
            let records = ask(name, TYPE_SRV, servers, timeout)?;
            let srvs: Vec<(u16, u16, u16, &str)> = records
                .iter()
                .filter_map(|r| match r {
                    Record::Srv {
                        priority,
                        weight,
                        port,
                        target,
                    } if *port != 0 && !target.is_empty() => {
                        Some((*priority, *weight, *port, target.as_str()))
                    }
                    _ => None,
                })
                .collect();
            let Some(best) = srvs.iter().map(|s| s.0).min() else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            let mut failures = Vec::new();
            for (priority, weight, port, target) in &srvs {
                // The additional section usually carries the targets' addresses.
                match addresses(target, servers, timeout, &records) {
                    Ok(ips) => out.extend(ips.into_iter().map(|ip| Member {
                        addr: SocketAddr::new(ip, *port),
                        // SRV weight 0 means "rarely": the smallest weight here.
                        weight: Some(u32::from(*weight).clamp(1, 1000)),
                        backup: *priority != best,
                    })),
                    Err(e) => failures.push(format!("{target}: {e}")),
                }
            }
            if out.is_empty() && !failures.is_empty() {
                return Err(failures.join("; "));
            }
            Ok(out)
        }
    }
}

/// The addresses of `name`: from `known` (an additional section) when it
/// has some, else A and AAAA queries. Errors only when neither answers.
fn addresses(
    name: &str,
    servers: &[SocketAddr],
    timeout: Duration,
    known: &[Record],
) -> Result<Vec<IpAddr>, String> {
    let pick = |records: &[Record]| -> Vec<IpAddr> {
        records
            .iter()
            .filter_map(|r| match r {
                Record::A { name: n, addr } if n == name => Some(IpAddr::V4(*addr)),
                Record::Aaaa { name: n, addr } if n == name => Some(IpAddr::V6(*addr)),
                _ => None,
            })
            .collect()
    };
    let mut ips = pick(known);
    if !ips.is_empty() {
        return Ok(ips);
    }
    let a = ask(name, TYPE_A, servers, timeout);
    let aaaa = ask(name, TYPE_AAAA, servers, timeout);
    match (&a, &aaaa) {
        (Err(e), Err(_)) => return Err(e.clone()),
        _ => {
            for r in [a, aaaa].into_iter().flatten() {
                ips.extend(pick(&r));
            }
        }
    }
    ips.sort();
    ips.dedup();
    Ok(ips)
}

/// One query of `qtype` for `name`, to each server in turn. NXDOMAIN is an
/// answer (an error, not worth asking the next server).
fn ask(
    name: &str,
    qtype: u16,
    servers: &[SocketAddr],
    timeout: Duration,
) -> Result<Vec<Record>, String> {
    let name = name.to_ascii_lowercase();
    let id: u16 = rand::random();
    let query = wire::query(id, &name, qtype).ok_or_else(|| format!("'{name}' is no DNS name"))?;
    let mut last = String::new();
    for server in servers {
        match ask_one(&query, id, *server, timeout) {
            Ok(records) => return Ok(records),
            Err(Answer::Final(e)) => return Err(e),
            Err(Answer::TryNext(e)) => last = format!("{server}: {e}"),
        }
    }
    Err(last)
}

enum Answer {
    /// The name's own verdict (NXDOMAIN).
    Final(String),
    /// This server failed; another may answer.
    TryNext(String),
}

fn ask_one(
    query: &[u8],
    id: u16,
    server: SocketAddr,
    timeout: Duration,
) -> Result<Vec<Record>, Answer> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => "0.0.0.0:0"
            .parse()
            .map_err(|_| Answer::TryNext("bind".into()))?,
        SocketAddr::V6(_) => "[::]:0"
            .parse()
            .map_err(|_| Answer::TryNext("bind".into()))?,
    };
    let io = |e: std::io::Error| Answer::TryNext(e.to_string());
    let sock = UdpSocket::bind(local).map_err(io)?;
    sock.connect(server).map_err(io)?;
    sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .map_err(io)?;
    sock.send(query).map_err(io)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Err(Answer::TryNext(format!(
                    "no answer within {}",
                    crate::health::human_duration(timeout)
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        match wire::parse(&buf[..n], id) {
            Ok(records) => return Ok(records),
            // A stray datagram: keep waiting for ours until the deadline.
            Err(wire::WireError::NotOurs) if std::time::Instant::now() < deadline => continue,
            Err(e @ wire::WireError::NxDomain) => return Err(Answer::Final(e.to_string())),
            Err(e) => return Err(Answer::TryNext(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_are_read_at_port_53() {
        let text = "# c\nsearch example.com\nnameserver 10.0.0.1\nnameserver ::1\n\
                    nameserver fe80::1%eth0\nnameserver bogus\noptions ndots:1\n";
        let got = parse_resolv_conf(text);
        assert_eq!(
            got,
            vec![
                "10.0.0.1:53".parse().expect("addr"),
                "[::1]:53".parse().expect("addr")
            ]
        );
    }

    #[test]
    fn no_nameserver_is_an_error_not_an_empty_answer() {
        let l = Lookup::Host {
            name: "x".into(),
            port: 1,
        };
        assert!(resolve(&l, &[], Duration::from_millis(10)).is_err());
    }
}
