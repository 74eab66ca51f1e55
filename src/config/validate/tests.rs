//! Owns the test helpers shared by the section tests (`ok`, `rejected` and the
//! config builders `listen_with`, `servers`, `master_with`) and the tests that
//! span sections: defaults and every key at once, the shipped configs, error
//! order, durations, names.

use super::MAX_WORKERS;
use crate::config::{
    BalanceKind, Config, ConfigError, HashKey, HealthKind, Mode, QueueConfig, ServerConfig,
    Timeouts, parse,
};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The directory relative paths are resolved against in these tests.
pub(super) const BASE: &str = "/etc/lbctl";

pub(super) fn ok(src: &str) -> Config {
    parse(src, Path::new(BASE)).unwrap_or_else(|e| panic!("should be valid: {e}\n{src}"))
}

/// Asserts `src` is rejected as invalid at `key` on `line`; returns the message.
pub(super) fn rejected(src: &str, key: &str, line: usize) -> String {
    let err = match parse(src, Path::new(BASE)) {
        Ok(c) => panic!("should be rejected at {key}: {c:?}\n{src}"),
        Err(e) => e,
    };
    assert!(
        matches!(err, ConfigError::Invalid { .. }),
        "expected Invalid, got {err:?}"
    );
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("{key}: ")),
        "key {key} not in: {shown}"
    );
    assert!(
        shown.ends_with(&format!(" (line {line})")),
        "line {line} not in: {shown}"
    );
    shown
}

/// A valid listen (lines 1-3) followed by `extra` from line 4 on.
pub(super) fn listen_with(extra: &str) -> String {
    format!(
        "[[listen]]\nbind = \"127.0.0.1:8080\"\nservers = [{{ addr = \"127.0.0.1:6001\" }}]\n{extra}\n"
    )
}

/// A valid `mode = "http"` listen (lines 1-4) followed by `extra` from line 5 on.
pub(super) fn http_with(extra: &str) -> String {
    format!(
        "[[listen]]\nbind = \"127.0.0.1:8080\"\nmode = \"http\"\nservers = [{{ addr = \"127.0.0.1:6001\" }}]\n{extra}\n"
    )
}

/// A listen whose servers are `lines`, one per line from line 4 on.
pub(super) fn servers(lines: &[&str]) -> String {
    let mut s = String::from("[[listen]]\nbind = \"127.0.0.1:8080\"\nservers = [\n");
    for l in lines {
        s.push_str("  ");
        s.push_str(l);
        s.push_str(",\n");
    }
    s.push_str("]\n");
    s
}

/// `[master]` on line 1, then `extra` on line 2, then a valid listen.
pub(super) fn master_with(extra: &str) -> String {
    format!("[master]\n{extra}\n{}", listen_with(""))
}

#[test]
fn minimal_config_gets_every_default() {
    let c = ok(&listen_with(""));
    let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    assert_eq!(c.master.workers.get(), cpus.min(MAX_WORKERS));
    assert_eq!(c.master.pid_file, PathBuf::from("/run/lbctl/lbctl.pid"));
    assert_eq!(
        c.master.control_socket,
        PathBuf::from("/run/lbctl/lbctl.sock")
    );
    assert_eq!(c.master.log_file, PathBuf::from("/var/log/lbctl/lbctl.log"));
    assert_eq!(c.master.drain_timeout, Duration::from_secs(30));
    assert_eq!(
        (c.master.user.as_deref(), c.master.group.as_deref()),
        (None, None)
    );
    let l = &c.listens[0];
    assert_eq!(l.name, "127.0.0.1:8080");
    assert_eq!(
        l.bind,
        "127.0.0.1:8080".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(l.mode, Mode::Tcp);
    assert_eq!(l.balance, BalanceKind::RoundRobin);
    assert_eq!(l.retries, 2);
    assert_eq!(
        l.timeouts,
        Timeouts {
            connect: Duration::from_secs(3),
            idle: Duration::from_secs(300),
            header: Duration::from_secs(10),
            server: Duration::from_secs(30),
        }
    );
    assert_eq!(l.max_fails, 1);
    assert_eq!(l.fail_timeout, Duration::from_secs(10));
    assert_eq!(
        l.queue,
        QueueConfig {
            size: 1024,
            timeout: Duration::from_secs(5)
        }
    );
    let s = &l.servers[0];
    assert_eq!(s.name, None);
    assert_eq!(s.label(), "127.0.0.1:6001");
    assert_eq!(
        (s.weight, s.backup, s.max_conns, s.slow_start),
        (1, false, None, None)
    );
    assert_eq!(s.health, None);
}

#[test]
fn every_key_is_carried_into_the_typed_config() {
    let c = ok(r#"
[master]
workers = 3
pid_file = "/tmp/a.pid"
control_socket = "/tmp/a.sock"
log_file = "/tmp/a.log"
drain_timeout = "1.5s"
user = "nobody"
group = "nogroup"

[[listen]]
name = "web"
bind = "[::1]:8080"
mode = "tcp"
balance = "power_of_two"
retries = 0
timeouts = { connect = "250ms", idle = "1h" }
max_fails = 0
fail_timeout = "1m"
queue = { size = 0, timeout = "2s" }
servers = [
  { addr = "[::1]:6001", weight = 0, name = "a", max_conns = 7, slow_start = "30s" },
  { addr = "127.0.0.1:6002", backup = true },
]
"#);
    assert_eq!(c.master.workers.get(), 3);
    assert_eq!(c.master.pid_file, PathBuf::from("/tmp/a.pid"));
    assert_eq!(c.master.drain_timeout, Duration::from_millis(1500));
    assert_eq!(c.master.user.as_deref(), Some("nobody"));
    assert_eq!(c.master.group.as_deref(), Some("nogroup"));
    let l = &c.listens[0];
    assert_eq!(l.name, "web");
    assert_eq!(l.balance, BalanceKind::PowerOfTwo);
    assert_eq!((l.retries, l.max_fails), (0, 0));
    assert_eq!(l.timeouts.connect, Duration::from_millis(250));
    assert_eq!(l.timeouts.idle, Duration::from_secs(3600));
    assert_eq!(l.fail_timeout, Duration::from_secs(60));
    assert_eq!(
        l.queue,
        QueueConfig {
            size: 0,
            timeout: Duration::from_secs(2)
        }
    );
    let a = &l.servers[0];
    assert_eq!(
        (a.label(), a.weight, a.max_conns),
        ("a".to_string(), 0, Some(7))
    );
    assert_eq!(a.slow_start, Some(Duration::from_secs(30)));
    assert!(l.servers[1].backup);
}

#[test]
fn shipped_example_config_validates() {
    let c = ok(include_str!("../../../conf/lbctl.toml"));
    assert_eq!(c.listens.len(), 2);
    let web = &c.listens[0];
    assert_eq!(web.name, "web");
    assert!(matches!(
        web.servers[0].health.as_ref().map(|h| &h.kind),
        Some(HealthKind::Http(_))
    ));
    // The backup switches to a tcp check and drops the http keys.
    let spare = web.servers[2].health.clone().expect("health");
    assert_eq!(
        (spare.kind, spare.interval),
        (HealthKind::Tcp, Duration::from_secs(5))
    );
    assert_eq!(c.listens[1].balance, BalanceKind::LeastConnections);
}

#[test]
fn shipped_http_example_validates_once_uncommented() {
    let src = include_str!("../../../conf/lbctl.toml");
    let start = src
        .find("## Example: mode = \"http\"")
        .expect("http example");
    let mut text = src[..start].to_string();
    for line in src[start..].lines() {
        if line.starts_with("##") {
            continue;
        }
        let code = line
            .strip_prefix("# ")
            .unwrap_or_else(|| panic!("example line neither '# ' nor '##': {line}"));
        text.push_str(code);
        text.push('\n');
    }
    let c = ok(&text);
    assert_eq!(c.listens.len(), 3);
    let l = &c.listens[2];
    assert_eq!((l.name.as_str(), l.mode), ("site", Mode::Http));
    assert_eq!(l.http.hash_key, HashKey::Cookie("sid".into()));
    let pools: Vec<(&str, usize)> = l
        .pools
        .iter()
        .map(|p| (p.name.as_str(), p.servers.len()))
        .collect();
    assert_eq!(pools, [("default", 2), ("api", 2), ("static", 1)]);
    assert_eq!(l.servers[2].pool.as_deref(), Some("api"));
    assert_eq!(
        l.routes.iter().map(|r| r.pool).collect::<Vec<_>>(),
        [1, 2, 0]
    );
}

#[test]
fn demo_config_validates_to_the_demo_setup() {
    let c = ok(include_str!("../../../conf/demo.toml"));
    assert_eq!(c.master.workers.get(), 2);
    assert_eq!(c.master.pid_file, PathBuf::from("/tmp/lbctl-demo.pid"));
    assert_eq!(
        c.master.control_socket,
        PathBuf::from("/tmp/lbctl-demo.sock")
    );
    assert_eq!(c.master.log_file, PathBuf::from("/tmp/lbctl-demo.log"));
    assert_eq!(c.master.drain_timeout, Duration::from_secs(5));
    assert_eq!(c.listens.len(), 1);
    let l = &c.listens[0];
    assert_eq!(l.name, "demo");
    assert_eq!(
        l.bind,
        "127.0.0.1:8080".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(l.balance, BalanceKind::RoundRobin);
    let labels: Vec<String> = l.servers.iter().map(ServerConfig::label).collect();
    assert_eq!(labels, ["world", "workerman"]);
    assert_eq!(
        l.servers[0].addr,
        "127.0.0.1:6001".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(
        l.servers[1].addr,
        "127.0.0.1:6002".parse::<SocketAddr>().expect("addr")
    );
    for s in &l.servers {
        let h = s.health.clone().expect("health");
        assert_eq!(
            (h.kind, h.interval),
            (HealthKind::Tcp, Duration::from_secs(1))
        );
    }
}

// ---- rejections: one test per rule ----

#[test]
fn errors_are_reported_in_file_order() {
    let src = concat!(
        "[[listen]]\nbind = \"127.0.0.1:8080\"\nbalance = \"nope\"\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
        "[[listen]]\nbind = \"nope\"\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
    );
    rejected(src, "listen[0].balance", 3);
}

#[test]
fn zero_durations_are_rejected() {
    let cases = [
        (
            listen_with("health = { interval = \"0s\" }"),
            "listen[0].health.interval",
            4,
        ),
        (
            listen_with("health = { timeout = \"0ms\" }"),
            "listen[0].health.timeout",
            4,
        ),
        (
            listen_with("timeouts = { connect = \"0s\" }"),
            "listen[0].timeouts.connect",
            4,
        ),
        (
            listen_with("timeouts = { idle = \"0m\" }"),
            "listen[0].timeouts.idle",
            4,
        ),
        (
            listen_with("fail_timeout = \"0s\""),
            "listen[0].fail_timeout",
            4,
        ),
        (
            listen_with("queue = { timeout = \"0s\" }"),
            "listen[0].queue.timeout",
            4,
        ),
        (
            master_with("drain_timeout = \"0s\""),
            "master.drain_timeout",
            2,
        ),
    ];
    for (src, key, line) in cases {
        let msg = rejected(&src, key, line);
        assert!(msg.contains("is zero"), "{msg}");
    }
}

#[test]
fn malformed_durations_are_rejected_with_the_accepted_units() {
    let msg = rejected(
        &listen_with("timeouts = { connect = \"3x\" }"),
        "listen[0].timeouts.connect",
        4,
    );
    assert!(msg.contains("'3x'") && msg.contains("ms, s, m, h"), "{msg}");
    let src = servers(&[r#"{ addr = "127.0.0.1:1", slow_start = "30" }"#]);
    rejected(&src, "listen[0].servers[0].slow_start", 4);
}

#[test]
fn names_with_slash_or_whitespace_are_rejected() {
    let msg = rejected(&listen_with("name = \"a b\""), "listen[0].name", 4);
    assert!(msg.contains("'a b'"), "{msg}");
    rejected(&listen_with("name = \"\""), "listen[0].name", 4);
    rejected(&listen_with("name = \"a\\tb\""), "listen[0].name", 4);
    rejected(
        &servers(&[r#"{ addr = "127.0.0.1:1", name = "x/y" }"#]),
        "listen[0].servers[0].name",
        4,
    );
}
