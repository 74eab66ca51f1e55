//! Owns the raw serde view of the TOML file: [`RawConfig`] and its parts mirror
//! the file exactly (every key optional, unknown keys rejected), and [`parse`]
//! turns TOML text into them. Values that validation may still reject are kept
//! as [`Spanned`] so errors can name their line. No defaults and no range checks
//! live here; that is `validate`'s job.
//! The tables only `mode = "http"` uses live in `http.rs`.

mod access_log;
mod http;
mod int_or_text;
mod origin;
mod tls;

pub use access_log::RawAccessLog;
pub use http::{RawBackend, RawConnPool, RawLimits, RawPool, RawRoute, RawSize};
pub use origin::RawOriginTls;
pub use tls::{RawCert, RawTls};

use super::ConfigError;
use serde::Deserialize;
use serde::de::Deserializer;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// The whole file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawConfig {
    /// `[master]`.
    pub master: Option<RawMaster>,
    /// `[[listen]]` sections; the outer span is the first `[[listen]]` header
    /// (or the `listen = [...]` value), each inner span that section's header.
    pub listen: Option<Spanned<Vec<Spanned<RawListen>>>>,
    /// `[admin]`: the metrics and status page listener.
    pub admin: Option<Spanned<RawAdmin>>,
    /// `[resolver]`: nameservers for servers with `resolve`.
    pub resolver: Option<Spanned<RawResolver>>,
}

/// `[resolver]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawResolver {
    /// `nameservers = ["127.0.0.1:5353"]`.
    pub nameservers: Option<Spanned<Vec<Spanned<String>>>>,
    /// `timeout = "2s"`.
    pub timeout: Option<Spanned<String>>,
}

/// `[admin]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawAdmin {
    /// `bind = "127.0.0.1:9900"`.
    pub bind: Option<Spanned<String>>,
    /// `token = "..."`.
    pub token: Option<Spanned<String>>,
}

/// `[master]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawMaster {
    /// `workers = 4`.
    pub workers: Option<Spanned<i64>>,
    /// `pid_file = "..."`.
    pub pid_file: Option<Spanned<String>>,
    /// `control_socket = "..."`.
    pub control_socket: Option<Spanned<String>>,
    /// `log_file = "..."`.
    pub log_file: Option<Spanned<String>>,
    /// `drain_timeout = "30s"`.
    pub drain_timeout: Option<Spanned<String>>,
    /// `user = "lbctl"`.
    pub user: Option<Spanned<String>>,
    /// `group = "lbctl"`.
    pub group: Option<Spanned<String>>,
}

/// One `[[listen]]` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawListen {
    /// `name = "web"`.
    pub name: Option<Spanned<String>>,
    /// `bind = "0.0.0.0:8080"`.
    pub bind: Option<Spanned<String>>,
    /// `mode = "tcp"`.
    pub mode: Option<Spanned<String>>,
    /// `balance = "round_robin"`.
    pub balance: Option<Spanned<String>>,
    /// `retries = 2`.
    pub retries: Option<Spanned<i64>>,
    /// `timeouts = { connect, idle }`.
    pub timeouts: Option<Spanned<RawTimeouts>>,
    /// `max_fails = 1`.
    pub max_fails: Option<Spanned<i64>>,
    /// `fail_timeout = "10s"`.
    pub fail_timeout: Option<Spanned<String>>,
    /// `queue = { size, timeout }`.
    pub queue: Option<Spanned<RawQueue>>,
    /// `servers = [ {...}, ... ]`.
    pub servers: Option<Spanned<Vec<Spanned<RawServer>>>>,
    /// `health = { kind, ... }`: the default check of every server.
    pub health: Option<Spanned<RawHealth>>,
    /// http: `limits = { header_bytes, headers, uri_bytes }`.
    pub limits: Option<Spanned<RawLimits>>,
    /// http: `forwarded = ["x-forwarded-for", "x-forwarded-proto", "forwarded"]`.
    pub forwarded: Option<Spanned<Vec<Spanned<String>>>>,
    /// http: `pool = { max_idle, idle_timeout }` or `[[listen.pool]]`.
    pub pool: Option<Spanned<RawPool>>,
    /// http: `idle_pool = { max_idle, idle_timeout }`, the table `pool` by
    /// another name.
    pub idle_pool: Option<Spanned<RawConnPool>>,
    /// http: `hash_key = "client" | "header:NAME" | "cookie:NAME"`.
    pub hash_key: Option<Spanned<String>>,
    /// http: `[[listen.backend]]` named server pools.
    pub backend: Option<Spanned<Vec<Spanned<RawBackend>>>>,
    /// http: `[[listen.route]]`.
    pub route: Option<Spanned<Vec<Spanned<RawRoute>>>>,
    /// `max_conns_per_client = 100`: open connections per client address.
    pub max_conns_per_client: Option<Spanned<i64>>,
    /// `rate = { conns = 100, per = "1s" }`: new connections per client address.
    pub rate: Option<Spanned<RawRate>>,
    /// `access_log = { path, format }`: one line per connection (tcp) or
    /// request (http).
    pub access_log: Option<Spanned<RawAccessLog>>,
    /// `accept_proxy = true`: clients start with a PROXY protocol header.
    pub accept_proxy: Option<Spanned<bool>>,
    /// `dataplane = "auto" | "sockmap"`.
    pub dataplane: Option<Spanned<String>>,
    /// `sockmap_sndbuf = "4MiB"`: the send buffer of kernel-relayed sockets.
    pub sockmap_sndbuf: Option<Spanned<RawSize>>,
    /// `defer_accept = true`: accept once the client's first bytes are in.
    pub defer_accept: Option<Spanned<bool>>,
    /// `smart_connect = true`: the connect holds its last ACK for the
    /// client's first bytes.
    pub smart_connect: Option<Spanned<bool>>,
    /// `tls = { certs = [ { cert, key } ] }`: TLS termination.
    pub tls: Option<Spanned<RawTls>>,
}

/// `rate = { conns, per }` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawRate {
    /// `conns = 100`.
    pub conns: Option<Spanned<i64>>,
    /// `per = "1s"`.
    pub per: Option<Spanned<String>>,
}

/// `timeouts = { connect, idle, header, server }` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawTimeouts {
    /// `connect = "3s"`.
    pub connect: Option<Spanned<String>>,
    /// `idle = "5m"`.
    pub idle: Option<Spanned<String>>,
    /// http: `header = "10s"`.
    pub header: Option<Spanned<String>>,
    /// http: `server = "30s"`.
    pub server: Option<Spanned<String>>,
    /// `proxy = "5s"` (with `accept_proxy`): time for the PROXY header.
    pub proxy: Option<Spanned<String>>,
}

/// `queue = { size, timeout }` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawQueue {
    /// `size = 1024`.
    pub size: Option<Spanned<i64>>,
    /// `timeout = "5s"`.
    pub timeout: Option<Spanned<String>>,
}

/// One entry of `servers = [...]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawServer {
    /// `name = "app1"`.
    pub name: Option<Spanned<String>>,
    /// `addr = "10.0.0.11:6001"`.
    pub addr: Option<Spanned<String>>,
    /// `weight = 3`.
    pub weight: Option<Spanned<i64>>,
    /// `backup = true`.
    pub backup: Option<bool>,
    /// `max_conns = 100`.
    pub max_conns: Option<Spanned<i64>>,
    /// `slow_start = "30s"`.
    pub slow_start: Option<Spanned<String>>,
    /// `health = {...}`: merged field by field over the listen's.
    pub health: Option<Spanned<RawHealth>>,
    /// `send_proxy = "v1" | "v2"`.
    pub send_proxy: Option<Spanned<String>>,
    /// `resolve = "10s"`: `addr` is a DNS name (or SRV name) looked up again
    /// at this interval.
    pub resolve: Option<Spanned<String>>,
    /// `max = 8`: slots reserved for the addresses of a `resolve` entry.
    pub max: Option<Spanned<i64>>,
    /// `tls = { verify, ca, sni }`: connect to the server over TLS.
    pub tls: Option<Spanned<RawOriginTls>>,
}

/// `health = {...}` as written, every kind's keys in one flat table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawHealth {
    /// `kind = "tcp" | "http" | "send_expect"`.
    pub kind: Option<Spanned<String>>,
    /// `interval = "2s"`.
    pub interval: Option<Spanned<String>>,
    /// `timeout = "1s"`.
    pub timeout: Option<Spanned<String>>,
    /// `rise = 2`.
    pub rise: Option<Spanned<i64>>,
    /// `fall = 3`.
    pub fall: Option<Spanned<i64>>,
    /// http: `method = "GET"`.
    pub method: Option<Spanned<String>>,
    /// http: `path = "/"`.
    pub path: Option<Spanned<String>>,
    /// http: `host = "example.com"`.
    pub host: Option<Spanned<String>>,
    /// http: `expect_status = 200` or `"200-399"`.
    pub expect_status: Option<Spanned<RawStatus>>,
    /// http: `expect_body = "ok"`.
    pub expect_body: Option<Spanned<String>>,
    /// send_expect: `send = "PING\r\n"`.
    pub send: Option<Spanned<String>>,
    /// send_expect: `expect = "+PONG"`.
    pub expect: Option<Spanned<String>>,
}

/// `expect_status` as written: one code or a `"LOW-HIGH"` string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawStatus {
    /// `expect_status = 200`.
    Code(i64),
    /// `expect_status = "200-399"` (or `"200"`), not yet checked.
    Text(String),
}

impl<'de> Deserialize<'de> for RawStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        int_or_text::int_or_text(
            deserializer,
            "an HTTP status such as 200 or a range string such as \"200-399\"",
            RawStatus::Code,
            RawStatus::Text,
        )
    }
}

/// Parses TOML text into the raw structs. Bad TOML, an unknown key or a value
/// of the wrong type becomes [`ConfigError::Syntax`] with the 1-based line and,
/// when the file itself is well-formed TOML, the key path
/// (`listen[0].servers[1].weight`).
pub fn parse(src: &str) -> Result<RawConfig, ConfigError> {
    toml::from_str::<RawConfig>(src).map_err(|e| {
        let span = e.span();
        ConfigError::Syntax {
            key: span.as_ref().and_then(|s| key_at(src, s.start)),
            line: span.map(|s| line_of(src, s.start)),
            message: tidy_message(e.message()),
        }
    })
}

/// The 1-based line of byte `offset` in `src` (offsets past the end count as
/// the last line).
pub fn line_of(src: &str, offset: usize) -> usize {
    let end = offset.min(src.len());
    src.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The 1-based line where a spanned value starts.
pub fn line_of_span(src: &str, span: &Range<usize>) -> usize {
    line_of(src, span.start)
}

/// Rewrites serde's Rust-flavoured type names into TOML words.
fn tidy_message(message: &str) -> String {
    let mut m = message.trim_end().to_string();
    for (from, to) in [
        (" as i128", ""),
        ("expected i64", "expected an integer"),
        ("expected a sequence", "expected an array"),
        ("expected a boolean", "expected true or false"),
    ] {
        m = m.replace(from, to);
    }
    m
}

/// The key path (`listen[0].servers[1].addr`) of the innermost key or value at
/// byte `pos`, or `None` when the text is not valid TOML or nothing is there.
fn key_at(src: &str, pos: usize) -> Option<String> {
    let doc = DeTable::parse(src).ok()?;
    let mut best: Option<(usize, String)> = None;
    walk_table(doc.get_ref(), pos, "", &mut best);
    best.map(|(_, path)| path)
}

/// Whether `span` covers `pos` (an empty span covers its own start).
fn covers(span: &Range<usize>, pos: usize) -> bool {
    span.start <= pos && (pos < span.end || (span.is_empty() && pos == span.start))
}

/// Keeps the candidate with the narrowest span; on a tie the later (deeper) one.
fn offer(best: &mut Option<(usize, String)>, span: &Range<usize>, path: &str) {
    let width = span.len();
    if best.as_ref().is_none_or(|(w, _)| width <= *w) {
        *best = Some((width, path.to_string()));
    }
}

fn walk_table(table: &DeTable<'_>, pos: usize, prefix: &str, best: &mut Option<(usize, String)>) {
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        if covers(&key.span(), pos) {
            offer(best, &key.span(), &path);
        }
        walk_value(value, pos, &path, best);
    }
}

fn walk_value(
    value: &Spanned<DeValue<'_>>,
    pos: usize,
    path: &str,
    best: &mut Option<(usize, String)>,
) {
    if covers(&value.span(), pos) {
        offer(best, &value.span(), path);
    }
    match value.get_ref() {
        DeValue::Table(t) => walk_table(t, pos, path, best),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_value(item, pos, &format!("{path}[{i}]"), best);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax_error(src: &str) -> (Option<String>, Option<usize>, String) {
        match parse(src) {
            Err(ConfigError::Syntax { key, line, message }) => (key, line, message),
            Err(other) => panic!("expected a syntax error, got {other}"),
            Ok(raw) => panic!("expected a syntax error, got {raw:?}"),
        }
    }

    #[test]
    fn empty_file_parses_to_nothing() {
        let raw = parse("").expect("empty file is valid TOML");
        assert!(raw.master.is_none() && raw.listen.is_none());
    }

    #[test]
    fn every_documented_key_is_accepted() {
        let src = r#"
[master]
workers = 4
pid_file = "/run/lbctl/lbctl.pid"
control_socket = "/run/lbctl/lbctl.sock"
log_file = "/var/log/lbctl/lbctl.log"
drain_timeout = "30s"
user = "lbctl"
group = "lbctl"

[[listen]]
name = "web"
bind = "0.0.0.0:8080"
mode = "tcp"
balance = "round_robin"
retries = 2
timeouts = { connect = "3s", idle = "5m" }
max_fails = 1
fail_timeout = "10s"
queue = { size = 1024, timeout = "5s" }
servers = [
  { addr = "10.0.0.11:6001", weight = 3, name = "app1" },
  { addr = "10.0.0.12:6001", max_conns = 100, slow_start = "30s" },
  { addr = "10.0.0.13:6001", backup = true, health = { kind = "tcp", interval = "1s" } },
]
health = { kind = "http", interval = "2s", timeout = "1s", rise = 2, fall = 3, method = "GET", path = "/", host = "x", expect_status = "200-399", expect_body = "ok", send = "a", expect = "b" }
"#;
        let raw = parse(src).expect("valid");
        let listens = raw.listen.expect("listen");
        let listen = listens.get_ref()[0].get_ref();
        let servers = listen.servers.as_ref().expect("servers").get_ref();
        assert_eq!(servers.len(), 3);
        assert_eq!(servers[2].get_ref().backup, Some(true));
        let health = listen.health.as_ref().expect("health").get_ref();
        assert_eq!(
            health.expect_status.as_ref().map(|s| s.get_ref().clone()),
            Some(RawStatus::Text("200-399".into()))
        );
    }

    #[test]
    fn expect_status_accepts_an_integer_or_a_string() {
        let raw = parse("[[listen]]\nhealth = { expect_status = 204 }\n").expect("valid");
        let listens = raw.listen.expect("listen");
        let health = listens.get_ref()[0]
            .get_ref()
            .health
            .clone()
            .expect("health");
        assert_eq!(
            health
                .get_ref()
                .expect_status
                .as_ref()
                .map(|s| s.get_ref().clone()),
            Some(RawStatus::Code(204))
        );
        let (key, line, message) = syntax_error("[[listen]]\nhealth = { expect_status = true }\n");
        assert_eq!(key.as_deref(), Some("listen[0].health.expect_status"));
        assert_eq!(line, Some(2));
        assert!(message.contains("200-399"), "{message}");
    }

    #[test]
    fn spans_point_at_the_value_line() {
        let src = "[master]\n\nworkers = 3\n[[listen]]\nbind = \"x\"\n[[listen]]\nbind = \"y\"\n";
        let raw = parse(src).expect("valid");
        let workers = raw.master.and_then(|m| m.workers).expect("workers");
        assert_eq!(line_of_span(src, &workers.span()), 3);
        let listens = raw.listen.expect("listen");
        assert_eq!(line_of_span(src, &listens.get_ref()[1].span()), 6);
        let bind = listens.get_ref()[1].get_ref().bind.clone().expect("bind");
        assert_eq!(line_of_span(src, &bind.span()), 7);
    }

    #[test]
    fn toml_syntax_error_reports_its_line() {
        let (key, line, message) = syntax_error("[master]\nworkers = 2\n[[listen]\nbind = 1\n");
        assert_eq!(key, None);
        assert_eq!(line, Some(3));
        assert!(!message.is_empty());
    }

    #[test]
    fn duplicate_key_is_a_syntax_error_with_its_line() {
        let (_, line, message) = syntax_error("[master]\nworkers = 2\nworkers = 3\n");
        assert_eq!(line, Some(3));
        assert!(message.contains("duplicate"), "{message}");
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let (key, line, message) = syntax_error("\nlistens = []\n");
        assert_eq!(key.as_deref(), Some("listens"));
        assert_eq!(line, Some(2));
        assert!(message.contains("unknown field `listens`"), "{message}");
        assert!(message.contains("`listen`"), "{message}");
    }

    #[test]
    fn unknown_server_key_is_named_with_its_path() {
        let src = "[[listen]]\nbind = \"127.0.0.1:1\"\nservers = [\n  { addr = \"127.0.0.1:2\" },\n  { addr = \"127.0.0.1:3\", wieght = 2 },\n]\n";
        let (key, line, message) = syntax_error(src);
        assert_eq!(key.as_deref(), Some("listen[0].servers[1].wieght"));
        assert_eq!(line, Some(5));
        assert!(message.contains("unknown field `wieght`"), "{message}");
        let display = parse(src).expect_err("rejected").to_string();
        assert!(
            display.starts_with("listen[0].servers[1].wieght: "),
            "{display}"
        );
        assert!(display.ends_with("(line 5)"), "{display}");
    }

    #[test]
    fn unknown_key_in_second_listen_names_the_right_index() {
        let src =
            "[[listen]]\nbind = \"127.0.0.1:1\"\n\n[[listen]]\nbind = \"127.0.0.1:2\"\nretry = 3\n";
        let (key, line, _) = syntax_error(src);
        assert_eq!(key.as_deref(), Some("listen[1].retry"));
        assert_eq!(line, Some(6));
    }

    #[test]
    fn unknown_key_in_standard_subtable_is_named() {
        let src = "[[listen]]\nbind = \"127.0.0.1:1\"\n[listen.timeouts]\nconnect = \"1s\"\nread = \"1s\"\n";
        let (key, line, _) = syntax_error(src);
        assert_eq!(key.as_deref(), Some("listen[0].timeouts.read"));
        assert_eq!(line, Some(5));
    }

    #[test]
    fn wrong_type_is_named_with_plain_words() {
        let (key, line, message) = syntax_error("[master]\nworkers = \"four\"\n");
        assert_eq!(key.as_deref(), Some("master.workers"));
        assert_eq!(line, Some(2));
        assert!(message.contains("expected an integer"), "{message}");

        let (key, line, message) = syntax_error("[[listen]]\nservers = \"a\"\n");
        assert_eq!(key.as_deref(), Some("listen[0].servers"));
        assert_eq!(line, Some(2));
        assert!(message.contains("expected an array"), "{message}");

        let (key, _, message) = syntax_error("[[listen]]\nservers = [1]\n");
        assert_eq!(key.as_deref(), Some("listen[0].servers[0]"));
        assert!(message.contains("expected a table"), "{message}");

        let (key, _, message) = syntax_error("master = 1\n");
        assert_eq!(key.as_deref(), Some("master"));
        assert!(message.contains("expected a table"), "{message}");

        let (key, _, message) = syntax_error("[[listen]]\nservers = [{ backup = \"yes\" }]\n");
        assert_eq!(key.as_deref(), Some("listen[0].servers[0].backup"));
        assert!(message.contains("expected true or false"), "{message}");
    }

    #[test]
    fn integers_too_large_for_i64_are_syntax_errors() {
        let (key, line, _) = syntax_error("[master]\nworkers = 99999999999999999999\n");
        assert_eq!(key.as_deref(), Some("master.workers"));
        assert_eq!(line, Some(2));
    }

    #[test]
    fn line_of_counts_newlines_and_clamps() {
        assert_eq!(line_of("", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 100), 3);
    }
}
