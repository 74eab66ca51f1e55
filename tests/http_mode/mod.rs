//! Owns the `mode = "http"` tests: per-request balancing on one keep-alive
//! connection, pipelining, streamed chunked bodies both ways, websocket
//! tunnels, lbctl's own answers (400 for smuggling, 408, 503, 504),
//! forwarded headers, retries when a backend dies under load, routing.

mod answers;
mod balance;
mod bodies;
mod clients;
mod failover;
mod headers;
mod routing;

use crate::util::http_backend::HttpBackend;
use crate::util::{Conf, ListenConf, Master, TempDir};
use std::net::SocketAddr;

/// An http listen over `backends` with `edit` applied, started.
pub fn start_http(
    dir: &TempDir,
    backends: &[&HttpBackend],
    edit: impl FnOnce(ListenConf) -> ListenConf,
) -> (Master, SocketAddr) {
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr()).collect();
    let conf = Conf::new(dir, &addrs).listen(|l| edit(l.http()));
    let master = Master::start(dir, &conf.write(dir));
    (master, conf.bind())
}
