//! Owns the clients of the balancing tests: connections and fetches from a
//! chosen loopback source address (so `source_hash` sees distinct client IPs),
//! tallies of which fixed-reply backend answered, and the config patch that
//! adds keys the [`Conf`](super::Conf) writer does not know (listen `queue`,
//! `max_fails`, server `max_conns`, ...).

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{Conf, TempDir, connect, fetch, write_file};

/// Connects to `addr` from `src` (any port), with 5s read/write timeouts. Any
/// 127.0.0.0/8 address works as a source on Linux loopback.
pub fn connect_from(src: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
    sock.connect_timeout(&SockAddr::from(addr), Duration::from_secs(5))?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// [`fetch`](super::fetch) from source address `src`: sends nothing, reads the
/// whole reply until EOF.
pub fn fetch_from(src: IpAddr, addr: SocketAddr) -> std::io::Result<String> {
    let mut s = connect_from(src, addr)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    String::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Fetches `n` times in a row from `addr` and counts each distinct reply
/// (fixed-reply backends name themselves). Panics on the first failed fetch.
#[track_caller]
pub fn tally(addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for i in 0..n {
        match fetch(addr) {
            Ok(reply) => *counts.entry(reply).or_insert(0) += 1,
            Err(e) => {
                panic!("fetch {i} of {n} through {addr} failed: {e}; replies so far {counts:?}")
            }
        }
    }
    counts
}

/// How many of `counts` came from `name`.
pub fn count_of(counts: &BTreeMap<String, usize>, name: &str) -> usize {
    counts.get(name).copied().unwrap_or(0)
}

/// Opens `n` connections to `addr` and keeps them (the caller holds them open).
#[track_caller]
pub fn open_n(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| match connect(addr) {
            Ok(s) => s,
            Err(e) => panic!("held connection {i} to {addr} failed: {e}"),
        })
        .collect()
}

/// Keys [`Conf`] does not write: whole lines for the first listen
/// (`queue = { size = 4, timeout = "5s" }`, `max_fails = 0`) and inline keys
/// per server (`max_conns = 2`).
#[derive(Debug, Clone, Default)]
pub struct Extra {
    listen: Vec<String>,
    servers: Vec<(SocketAddr, String)>,
}

impl Extra {
    pub fn new() -> Extra {
        Extra::default()
    }

    /// Adds `line` (e.g. `max_fails = 0`) to the first `[[listen]]`.
    pub fn listen(mut self, line: &str) -> Extra {
        self.listen.push(line.to_string());
        self
    }

    /// Adds inline keys (e.g. `max_conns = 2`) to the server at `addr`.
    pub fn server(mut self, addr: SocketAddr, keys: &str) -> Extra {
        self.servers.push((addr, keys.to_string()));
        self
    }

    /// `conf`'s TOML with the extra keys in place. Panics if a server address
    /// is not in the file exactly once.
    #[track_caller]
    pub fn apply(&self, conf: &Conf) -> String {
        let mut out = String::new();
        let mut listen_done = false;
        for line in conf.to_toml().lines() {
            out.push_str(line);
            out.push('\n');
            if !listen_done && line.starts_with("mode = ") {
                for extra in &self.listen {
                    out.push_str(extra);
                    out.push('\n');
                }
                listen_done = true;
            }
        }
        assert!(
            listen_done || self.listen.is_empty(),
            "no listen to patch in:\n{out}"
        );
        for (addr, keys) in &self.servers {
            let needle = format!("{{ addr = \"{addr}\"");
            assert_eq!(
                out.matches(&needle).count(),
                1,
                "server {addr} not in the config exactly once:\n{out}"
            );
            out = out.replace(&needle, &format!("{needle}, {keys}"));
        }
        out
    }

    /// Writes the patched config to `path` and returns it.
    #[track_caller]
    pub fn write_to(&self, conf: &Conf, path: &Path) -> PathBuf {
        write_file(path, &self.apply(conf));
        path.to_path_buf()
    }

    /// Writes the patched config as `lbctl.toml` in `dir`.
    #[track_caller]
    pub fn write(&self, conf: &Conf, dir: &TempDir) -> PathBuf {
        self.write_to(conf, &dir.join("lbctl.toml"))
    }
}
