//! Owns the `[admin]` listener tests, one file per concern: `/metrics`
//! checked by the Prometheus Python client's parsers (metrics.rs),
//! `/status.json`, the actions and their token, bad requests, idle and slow
//! connections, reloads (api.rs), and the status page in headless Chromium
//! (page.rs). This file holds the shared setup: an lbctl over two echo
//! backends with `[admin]` on a free port, and a one-shot HTTP request.

mod api;
mod metrics;
mod page;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::Value;

use crate::util::backend::Backend;
use crate::util::http_client::{HttpConn, Response};
use crate::util::{Conf, Lbctl, Master, TempDir, WAIT, exchange, free_addr, wait_until};

/// The token of the setups that have one.
pub const TOKEN: &str = "admin-test-token-0123456789";

/// A running lbctl with `[admin]`, over two echo backends.
pub struct Setup {
    pub dir: TempDir,
    pub backends: Vec<Backend>,
    pub conf: Conf,
    pub path: PathBuf,
    pub master: Master,
    pub admin: SocketAddr,
}

impl Setup {
    /// Two workers, round robin over two echo backends, `[admin]` with
    /// `token` if given.
    pub fn start(token: Option<&str>) -> Setup {
        let dir = TempDir::new();
        let backends = vec![Backend::echo(), Backend::echo()];
        let addrs: Vec<SocketAddr> = backends.iter().map(Backend::addr).collect();
        let admin = free_addr();
        let conf = Conf::new(&dir, &addrs).workers(2).admin(admin, token);
        let path = conf.write(&dir);
        let master = Master::start(&dir, &path);
        assert!(
            wait_until(WAIT, || master.workers().len() == 2),
            "expected 2 workers"
        );
        Setup {
            dir,
            backends,
            conf,
            path,
            master,
            admin,
        }
    }

    pub fn lbctl(&self) -> Lbctl {
        Lbctl::new(&self.dir, &self.path)
    }

    /// The backends' addresses, as the servers are named.
    pub fn server_names(&self) -> Vec<String> {
        self.backends.iter().map(|b| b.addr().to_string()).collect()
    }

    /// Sends `n` echo connections through the listen and waits until the
    /// servers' counters (through `/status.json`) add up to `n` more.
    pub fn send_connections(&self, n: u64) {
        let before = server_totals(&self.get("/status.json").json());
        for i in 0..n {
            let reply = exchange(self.conf.bind(), b"ping").expect("exchange");
            assert_eq!(reply, b"ping", "connection {i}");
        }
        let ok = wait_until(WAIT, || {
            server_totals(&self.get("/status.json").json()) == before + n
        });
        assert!(ok, "server totals did not reach {}", before + n);
    }

    /// One request on a new connection.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        request(self.admin, method, path, headers, body)
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], None)
    }
}

/// One request to `addr` with `Connection: close`.
#[track_caller]
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    let mut all = vec![("Connection", "close")];
    all.extend_from_slice(headers);
    let mut conn = HttpConn::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    conn.request(method, path, &all, body)
        .unwrap_or_else(|e| panic!("{method} {path} via {addr}: {e}"))
}

pub trait JsonBody {
    fn json(&self) -> Value;
}

impl JsonBody for Response {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// The sum of every server's `total` in a status object.
pub fn server_totals(st: &Value) -> u64 {
    servers(st)
        .iter()
        .map(|s| s["total"].as_u64().expect("total"))
        .sum()
}

/// Every server row of a status object (all listens).
pub fn servers(st: &Value) -> Vec<Value> {
    st["listens"]
        .as_array()
        .expect("listens")
        .iter()
        .flat_map(|l| l["servers"].as_array().expect("servers").clone())
        .collect()
}

/// The state of server `name` in a status object.
pub fn server_state(st: &Value, name: &str) -> String {
    servers(st)
        .iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["state"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no server {name} in {st:#}"))
}
