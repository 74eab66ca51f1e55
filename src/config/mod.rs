//! Owns the typed, immutable configuration: the [`Config`] every other module
//! reads, the [`ConfigError`] every bad file produces, and [`load`]/[`parse`],
//! the one path from a TOML file to a `Config` (raw serde structs in [`raw`],
//! checks and defaults in [`validate`], duration strings in [`duration`], size
//! strings in [`size`], checks against the host in [`host`]). `lbctl check`
//! and `lbctl start` go through [`load`], a reload through [`load_for_reload`].

pub mod dns;
pub mod duration;
pub mod host;
pub mod origin;
pub mod raw;
pub mod size;
pub mod tls;
pub mod validate;

pub use dns::{DnsSlot, DnsSpec, Lookup, ResolverConfig};

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A complete, validated configuration: one generation of the balancer.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[master]`: process-level settings.
    pub master: MasterConfig,
    /// `[[listen]]` sections in file order; at least one.
    pub listens: Vec<ListenConfig>,
    /// `[admin]`: the metrics and status page listener; `None` (no `[admin]`
    /// section) means none is opened.
    pub admin: Option<AdminConfig>,
    /// `[resolver]`: nameservers for servers with `resolve`.
    pub resolver: ResolverConfig,
}

/// `[admin]`: an HTTP listener served by the master (`GET /metrics`,
/// `/status.json`, `/status`; `POST /server/LISTEN/SERVER/ACTION`).
#[derive(Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Address to bind, e.g. `127.0.0.1:9900`. Required in `[admin]`; must
    /// not clash with a listen's bind.
    pub bind: SocketAddr,
    /// Bearer token the `POST` actions require: 8..=256 visible ASCII
    /// characters. Without one the page is read-only and every `POST` is
    /// refused with 403.
    pub token: Option<String>,
}

impl fmt::Debug for AdminConfig {
    /// Never prints the token (configs are logged in debug output).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("bind", &self.bind)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `[master]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MasterConfig {
    /// Worker processes. Default: number of CPUs.
    pub workers: NonZeroUsize,
    /// Pid file, locked by the master for its whole life.
    /// Default `/run/lbctl/lbctl.pid`. Relative paths are resolved against the
    /// directory of the config file.
    pub pid_file: PathBuf,
    /// Control socket (unix stream, mode 0600). Default `/run/lbctl/lbctl.sock`.
    pub control_socket: PathBuf,
    /// Log file used in daemon mode. Default `/var/log/lbctl/lbctl.log`.
    pub log_file: PathBuf,
    /// How long draining workers may take to finish open connections on a
    /// reload or graceful stop before they are killed. Default 30s.
    pub drain_timeout: Duration,
    /// User the workers run as after the master has bound the ports.
    pub user: Option<String>,
    /// Group the workers run as after the master has bound the ports.
    pub group: Option<String>,
}

/// One `[[listen]]` section: a frontend address and its servers.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenConfig {
    /// Unique name, used in `status` and in `LISTEN/SERVER` references.
    pub name: String,
    /// Address to bind (one SO_REUSEPORT socket per worker slot).
    pub bind: SocketAddr,
    /// Proxy mode. Default `tcp`.
    pub mode: Mode,
    /// Balancing strategy. Default `round_robin`.
    pub balance: BalanceKind,
    /// Connect failures re-dispatched to another server. Default 2.
    pub retries: u32,
    /// `timeouts = { connect, idle, header, server }`.
    pub timeouts: Timeouts,
    /// `max_fails` connect failures within `fail_timeout` mark a server down for
    /// `fail_timeout` (nginx semantics). Default 1; 0 disables passive checks.
    pub max_fails: u32,
    /// Window and penalty of passive failure detection. Default 10s.
    pub fail_timeout: Duration,
    /// Where connections wait when every server is at `max_conns`.
    pub queue: QueueConfig,
    /// Every server of the listen, flattened: its own `servers` in file order,
    /// then each named pool's servers in file order ([`PoolConfig::servers`] is
    /// each pool's range). Each non-empty pool has one that is not `backup`.
    pub servers: Vec<ServerConfig>,
    /// The HTTP settings; their defaults in `mode = "tcp"`, where none may be set.
    pub http: HttpConfig,
    /// The server pools: `pools[0]` is always the listen's own `servers`, named
    /// `"default"` (empty only when there are named pools), then each
    /// `[[listen.backend]]` (or `[[listen.pool]]`) in file order.
    pub pools: Vec<PoolConfig>,
    /// `[[listen.route]]` in file order (the first match wins); empty in
    /// `mode = "tcp"`. A request no route matches goes to `pools[0]`.
    pub routes: Vec<RouteConfig>,
    /// `max_conns_per_client` and `rate`: limits per client address, global
    /// across the workers.
    pub client_limits: ClientLimits,
    /// `access_log = { path, format }`: where and how each connection (tcp)
    /// or request (http) is logged. `None` (the default): not logged.
    pub access_log: Option<AccessLogConfig>,
    /// `accept_proxy = true`: every client starts with a PROXY protocol
    /// header (v1 or v2), whose client address is the one lbctl uses.
    /// `None` (the default): no header is expected.
    pub accept_proxy: Option<AcceptProxy>,
    /// `dataplane`: how a `mode = "tcp"` listen moves bytes. Default `auto`.
    pub dataplane: Dataplane,
    /// `sockmap_sndbuf`: with `dataplane = "sockmap"`, the send buffer each
    /// socket of a connection gets when the kernel takes it over
    /// (SO_SNDBUFFORCE, raised only, never lowered), in bytes; 0 leaves the
    /// kernel's autotuning. Default [`DEFAULT_SOCKMAP_SNDBUF`]. Why: the
    /// kernel relay retries a full send buffer on a 1-jiffy timer, not on
    /// the peer's ACK, so a send buffer sized by autotuning (a few hundred
    /// KiB to 4 MiB) stalls a bulk transfer every few milliseconds.
    pub sockmap_sndbuf: usize,
    /// `defer_accept = true`: the kernel hands a connection over only once
    /// the client's first bytes are in (TCP_DEFER_ACCEPT, 1 s; HAProxy's
    /// `defer-accept`, nginx's `deferred`), and a connect to a server with
    /// those bytes in hand lets them carry the handshake's last ACK. For
    /// protocols where the client speaks first. Default false.
    pub defer_accept: bool,
    /// `smart_connect = true`: every connect to a server asks the kernel
    /// to hold the handshake's last ACK (TCP_QUICKACK off) until the first
    /// bytes are written to it, which the worker does as soon as the
    /// client's arrive: one segment and one wake-up less for the server per
    /// connection, with no wait added (HAProxy's `option tcp-smart-connect`,
    /// which holds it only when it has bytes to send at the connect). For
    /// protocols where the client speaks first: a server-first one (SMTP,
    /// SSH, MySQL) sees its client only once the kernel's delayed-ACK timer
    /// sends the ACK, about 200 ms (unless a PROXY header or a TLS
    /// ClientHello goes first). Default false.
    pub smart_connect: bool,
    /// `tls = { certs = [...] }`: TLS termination, `None` for plain TCP.
    pub tls: Option<std::sync::Arc<tls::TlsListen>>,
}

/// `accept_proxy = true` and `timeouts.proxy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptProxy {
    /// `timeouts.proxy`: the header must be complete within this time of
    /// the accept, else the connection is closed. Default 5s.
    pub timeout: Duration,
}

/// `sockmap_sndbuf`'s default: 4 MiB (the kernel doubles it for its own
/// bookkeeping, as for any SO_SNDBUF). Memory is taken only while a client
/// reads slower than its server sends.
pub const DEFAULT_SOCKMAP_SNDBUF: usize = 4 * 1024 * 1024;

/// `dataplane = "auto" | "sockmap"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dataplane {
    /// User space: read/write, splice(2) for bulk transfers.
    #[default]
    Auto,
    /// The kernel relays the bytes (a BPF sockmap); falls back to `Auto`
    /// where the kernel refuses.
    Sockmap,
}

/// A listen's `access_log` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// The file lines are appended to (resolved against the config's
    /// directory; its directory must exist).
    pub path: PathBuf,
    /// `format = "text"` (default) or `"json"`.
    pub format: LogFormat,
}

/// `access_log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One HAProxy/nginx-like line of space-separated fields.
    Text,
    /// One JSON object per line.
    Json,
}

/// Per-client-address limits of a listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientLimits {
    /// `max_conns_per_client`: open connections per client address at most
    /// (all workers together). `None`: unlimited (the default).
    pub max_conns: Option<u32>,
    /// `rate = { conns, per }`: new connections per client address within
    /// each `per` window (aligned windows, all workers together). `None`:
    /// unlimited (the default).
    pub rate: Option<RateLimit>,
}

/// `rate = { conns, per }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Connections allowed per window.
    pub conns: u32,
    /// The window.
    pub per: Duration,
}

/// `mode = "tcp" | "http"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Layer 4: bytes are relayed unchanged.
    Tcp,
    /// HTTP/1.1: requests are parsed, routed to a pool and forwarded.
    Http,
}

/// `balance = "..."`: the strategy that picks a server for each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalanceKind {
    /// Uniform among usable servers.
    Random,
    /// Each usable server in turn.
    RoundRobin,
    /// Smooth weighted round robin (nginx).
    WeightedRoundRobin,
    /// Fewest active connections per weight, across all workers.
    LeastConnections,
    /// Two distinct random candidates, the less loaded wins.
    PowerOfTwo,
    /// Consistent hash of the client IP.
    SourceHash,
    /// The first server in config order below its `max_conns`.
    First,
}

impl BalanceKind {
    /// Every accepted spelling, in the order the docs list them.
    pub const NAMES: &'static [&'static str] = &[
        "random",
        "round_robin",
        "weighted_round_robin",
        "least_connections",
        "power_of_two",
        "source_hash",
        "first",
    ];

    /// The config spelling of this strategy.
    pub fn name(self) -> &'static str {
        match self {
            BalanceKind::Random => "random",
            BalanceKind::RoundRobin => "round_robin",
            BalanceKind::WeightedRoundRobin => "weighted_round_robin",
            BalanceKind::LeastConnections => "least_connections",
            BalanceKind::PowerOfTwo => "power_of_two",
            BalanceKind::SourceHash => "source_hash",
            BalanceKind::First => "first",
        }
    }

    /// Parses a config spelling.
    pub fn from_name(name: &str) -> Option<BalanceKind> {
        Some(match name {
            "random" => BalanceKind::Random,
            "round_robin" => BalanceKind::RoundRobin,
            "weighted_round_robin" => BalanceKind::WeightedRoundRobin,
            "least_connections" => BalanceKind::LeastConnections,
            "power_of_two" => BalanceKind::PowerOfTwo,
            "source_hash" => BalanceKind::SourceHash,
            "first" => BalanceKind::First,
            _ => return None,
        })
    }
}

/// `timeouts = { connect, idle, header, server }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Time allowed for a backend connect. Default 3s.
    pub connect: Duration,
    /// `mode = "tcp"`: a relayed connection with no traffic either way for
    /// this long is closed. Default 5m.
    /// `mode = "http"`: a kept-alive client connection with no request for
    /// this long is closed. Default 60s.
    pub idle: Duration,
    /// `mode = "http"` only: a client's request head (request line and
    /// headers) must be complete within this time. Default 10s.
    pub header: Duration,
    /// `mode = "http"` only: the longest silence from a server while a
    /// response is awaited or streamed. Default 30s.
    pub server: Duration,
}

/// The settings of `mode = "http"`; [`Default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpConfig {
    /// `limits = { header_bytes, headers, uri_bytes }`.
    pub limits: HttpLimits,
    /// `forwarded = [...]`: the headers added to a forwarded request.
    pub forwarded: Forwarded,
    /// `pool = { max_idle, idle_timeout }` (or `idle_pool = {...}`): kept-alive
    /// connections to servers.
    pub pool: ConnPool,
    /// `hash_key = "..."`: what `balance = "source_hash"` hashes.
    pub hash_key: HashKey,
}

/// `limits = { header_bytes, headers, uri_bytes }`: a request over a limit is
/// refused. Sizes are written as bytes (`16384`) or with a unit (`"16KiB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Bytes of a request head (request line and headers). 1KiB..=1MiB.
    /// Default 16KiB.
    pub header_bytes: usize,
    /// Header lines in a request head. 1..=1000. Default 100.
    pub headers: usize,
    /// Bytes of the request target. 16..=`header_bytes`. Default 8KiB (or
    /// `header_bytes` if that is smaller).
    pub uri_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_bytes: 16 * 1024,
            headers: 100,
            uri_bytes: 8 * 1024,
        }
    }
}

/// `forwarded = ["x-forwarded-for", "x-forwarded-proto", "forwarded"]`: which
/// headers tell a server about the client. Default: the first two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    /// `X-Forwarded-For: <client ip>`.
    pub xff: bool,
    /// `X-Forwarded-Proto: http`.
    pub xfp: bool,
    /// `Forwarded: for=...;proto=...` (RFC 7239).
    pub rfc7239: bool,
}

impl Default for Forwarded {
    fn default() -> Self {
        Forwarded {
            xff: true,
            xfp: true,
            rfc7239: false,
        }
    }
}

/// `pool = { max_idle, idle_timeout }`: idle keep-alive connections to servers,
/// reused for later requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnPool {
    /// Idle connections kept per worker. 0..=10000, 0 = never reuse. Default 64.
    pub max_idle: usize,
    /// An idle connection unused for this long is closed. Default 30s.
    pub idle_timeout: Duration,
}

impl Default for ConnPool {
    fn default() -> Self {
        ConnPool {
            max_idle: 64,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// `hash_key = "client" | "header:NAME" | "cookie:NAME"`: the key
/// `balance = "source_hash"` hashes. Default `client`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HashKey {
    /// The client IP.
    #[default]
    Client,
    /// The value of this request header (name lower-cased).
    Header(String),
    /// The value of this cookie (name exactly as written).
    Cookie(String),
}

/// One server pool of a listen: `pools[0]` is the listen's own servers
/// (`"default"`), the others its `[[listen.backend]]` sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// `"default"`, or the pool's unique `name`.
    pub name: String,
    /// The pool's strategy. Default: the listen's `balance`.
    pub balance: BalanceKind,
    /// The pool's servers: this range of [`ListenConfig::servers`].
    pub servers: Range<usize>,
}

/// One `[[listen.route]]`: requests that match go to `pool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// `host = "api.example.com"` or `"*.example.com"`; `None` matches any host.
    pub host: Option<HostMatch>,
    /// `path_prefix = "/v1"`: the request path starts with it; `None` matches
    /// any path. At least one of `host` and `path_prefix` is set.
    pub path_prefix: Option<String>,
    /// The pool: an index into [`ListenConfig::pools`].
    pub pool: usize,
}

/// How a route matches the request's host (without its port, compared in
/// lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `host = "api.example.com"`: this host exactly (stored lower-case).
    Exact(String),
    /// `host = "*.example.com"`: any host ending in `".example.com"` (stored
    /// lower-case with its leading dot; `example.com` itself does not match).
    Suffix(String),
}

/// `queue = { size, timeout }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Connections that may wait per worker when every server is full. Default 1024.
    pub size: usize,
    /// How long one may wait before it is closed. Default 5s.
    pub timeout: Duration,
}

/// One entry of `servers = [...]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Optional name, for `LISTEN/SERVER` references; else the address is used.
    pub name: Option<String>,
    /// Backend address.
    pub addr: SocketAddr,
    /// Relative weight. Default 1; 0 receives nothing new.
    pub weight: u32,
    /// Used only when no primary server is usable.
    pub backup: bool,
    /// Concurrent connections allowed to this server (across all workers);
    /// `None` means unlimited.
    pub max_conns: Option<u32>,
    /// After the server comes (back) up, its weight ramps up over this time.
    pub slow_start: Option<Duration>,
    /// The effective health check: the server's own `health` table merged over
    /// the listen's (and its pool's), or `None` when none has one.
    pub health: Option<HealthConfig>,
    /// The named pool the server belongs to; `None` for the listen's own
    /// `servers` (pool `"default"`).
    pub pool: Option<String>,
    /// `send_proxy = "v1" | "v2"`: a PROXY protocol header with the client's
    /// address is written on every connection to the server (health checks
    /// send v1 `UNKNOWN` / v2 `LOCAL`). `None` (the default): none.
    pub send_proxy: Option<crate::proxy_protocol::Version>,
    /// Set when the server is a slot of a `resolve` entry (see [`DnsSlot`]).
    pub dns: Option<DnsSlot>,
    /// `tls = { verify, ca, sni }` (its own, else its pool's): connections
    /// and health checks to the server go over TLS. `None`: plain TCP.
    pub tls: Option<std::sync::Arc<origin::OriginTls>>,
}

impl ServerConfig {
    /// The label used in logs, status and `LISTEN/SERVER` references.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => self.addr.to_string(),
        }
    }
}

/// `health = { kind, interval, timeout, rise, fall, ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// What a probe does.
    pub kind: HealthKind,
    /// Time between the starts of two probes. Default 2s.
    pub interval: Duration,
    /// A probe not finished in this time fails. Default 1s.
    pub timeout: Duration,
    /// Consecutive successes that bring a down server up. Default 2.
    pub rise: u32,
    /// Consecutive failures that take an up server down. Default 3.
    pub fall: u32,
}

/// The probe kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    /// A TCP connect succeeds.
    Tcp,
    /// An HTTP/1.1 request gets a status in range (and a body substring).
    Http(HttpCheck),
    /// Send bytes, expect a reply that starts with the given bytes.
    SendExpect {
        /// Bytes sent once connected.
        send: Vec<u8>,
        /// Expected prefix of the reply.
        expect: Vec<u8>,
    },
}

/// `kind = "http"` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    /// Default `GET`.
    pub method: String,
    /// Default `/`.
    pub path: String,
    /// `Host` header. Default: the server address.
    pub host: Option<String>,
    /// Accepted status range, inclusive. Default 200..=399.
    pub expect_status: (u16, u16),
    /// A substring the body must contain.
    pub expect_body: Option<String>,
}

/// Reads and validates a config file, host checks included (see [`host`]).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_checked(path, None)
}

/// As [`load`], for a reload of a master running `running`: `user` and
/// `group` are looked up only when they name other accounts than
/// `running`'s, so an unchanged file never waits on the account databases.
pub fn load_for_reload(path: &Path, running: &Config) -> Result<Config, ConfigError> {
    load_checked(path, Some(running))
}

fn load_checked(path: &Path, running: Option<&Config>) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let base = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    let config = parse(&src, base).map_err(|e| e.in_file(path))?;
    host::check(&config, path, running).map_err(|e| e.in_file(path))?;
    Ok(config)
}

/// Parses and validates config text; relative paths are resolved against `base`.
pub fn parse(src: &str, base: &Path) -> Result<Config, ConfigError> {
    let raw = raw::parse(src)?;
    validate::validate(raw, src, base)
}

/// Why a config file was rejected. Every variant names what to fix.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    Syntax {
        /// Key path when known (`listen[0].servers[1].addr`).
        key: Option<String>,
        /// 1-based line, when known.
        line: Option<usize>,
        /// What the parser said.
        message: String,
    },
    /// A well-formed value that is not allowed.
    Invalid {
        /// Key path (`listen[0].servers[1].addr`).
        key: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// Any of the above, located in a file.
    InFile {
        /// The file.
        path: PathBuf,
        /// The error inside it.
        inner: Box<ConfigError>,
    },
}

impl ConfigError {
    /// Wraps this error with the file it came from.
    pub fn in_file(self, path: &Path) -> ConfigError {
        match self {
            e @ (ConfigError::Read { .. } | ConfigError::InFile { .. }) => e,
            e => ConfigError::InFile {
                path: path.to_path_buf(),
                inner: Box::new(e),
            },
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "cannot read config {}: {}", path.display(), source)
            }
            ConfigError::Syntax { key, line, message } => {
                if let Some(k) = key {
                    write!(f, "{k}: ")?;
                }
                write!(f, "{message}")?;
                if let Some(l) = line {
                    write!(f, " (line {l})")?;
                }
                Ok(())
            }
            ConfigError::Invalid { key, line, message } => {
                write!(f, "{key}: {message}")?;
                if let Some(l) = line {
                    write!(f, " (line {l})")?;
                }
                Ok(())
            }
            ConfigError::InFile { path, inner } => write!(f, "{}: {}", path.display(), inner),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}
