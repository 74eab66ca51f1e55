//! Owns the zero-downtime tests: with client load running (short connections
//! checked reply by reply, long-lived echo streams checked byte by byte),
//! reloads (same file, servers added/removed/re-weighted, other strategies,
//! listeners added/removed, worker count changes, 20 in a row), binary
//! upgrades (command, SIGUSR2, broken binary), a killed worker, and an fd
//! flood against a low open-files limit fail no connection they should not.
//!
//! One file per kind of operation; the load, configs and connection helpers
//! they share live here.

// Reload variants, listeners added and removed, worker count changes, 20 reloads.
mod reload;
// Binary upgrade: by command, by SIGUSR2, and a broken binary.
mod upgrade;
// A killed worker and a worker crashing in a loop.
mod crash;
// An fd flood against a low open-files limit.
mod fd_flood;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};

use crate::util::load::{Load, LoadConfig};
use crate::util::{Conf, ListenConf, TempDir};

/// Long enough that no draining worker is killed while a test runs: every
/// long-lived connection must survive until the load stops.
const DRAIN: &str = "60s";

/// A config with two listens: `short` over `short` (fixed-reply backends) on
/// `conf.bind()`, and `long` over `long` (echo backends) on `listens[1]`.
fn two_listens(dir: &TempDir, short: &[SocketAddr], long: &[SocketAddr], workers: usize) -> Conf {
    let mut conf = Conf::new(dir, short).workers(workers).drain_timeout(DRAIN);
    conf.listens[0].name = "short".to_string();
    let mut l = ListenConf::new(long);
    l.name = "long".to_string();
    conf.listens.push(l);
    conf
}

/// The standard load on a [`two_listens`] config: 2 short-connection
/// threads, 4 long-lived streams.
fn standard_load(conf: &Conf, replies: &[&str]) -> Load {
    Load::start(
        LoadConfig::default()
            .short(conf.listens[0].bind, 2, replies)
            .long(conf.listens[1].bind, 4),
    )
}

/// One echo round trip on an open connection.
fn echo_round(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    s.write_all(msg)?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back)?;
    if back == msg {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "echoed {back:?} instead of {msg:?}"
        )))
    }
}

/// Ends a connection cleanly: our EOF, then the peer's EOF with no byte.
fn finish(mut s: TcpStream) -> std::io::Result<()> {
    s.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)?;
    if rest.is_empty() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{} stray bytes before EOF",
            rest.len()
        )))
    }
}
