//! Owns raw -> typed validation: the one step that applies every default,
//! checks every range and cross-field rule, and freezes a [`RawConfig`] into a
//! [`Config`]. Each rejection is a [`ConfigError::Invalid`] whose key is the full
//! path (`listen[0].servers[1].addr`), whose message names the bad value and what
//! is accepted, and whose line is where the value (or its table) was written.
//!
//! Decisions beyond the doc comments in `config/mod.rs`:
//! - A `health` table without `kind` is `kind = "tcp"`.
//! - A server's `health` is merged key by key over its listen's. If the server
//!   switches `kind`, only the common keys (`interval`, `timeout`, `rise`,
//!   `fall`) are inherited, never the other kind's keys. Keys of one kind written
//!   in a table of another kind are rejected.
//! - `send = ""` is allowed (read the banner only); `expect` must not be empty.
//! - `slow_start = "0s"` means no slow start (`None`).
//! - Zero is rejected for every duration except `slow_start`.
//! - Binds must not repeat or overlap: a wildcard (`0.0.0.0:P`, `[::]:P`) clashes
//!   with any address of the same family on the same port. Port 0 is rejected.
//! - A server address must not be unspecified, port 0, or a listen's own bind.
//! - Server labels (name, else address) are unique within a listen, so a name
//!   cannot shadow another server's address.
//! - `pid_file`, `control_socket` and `log_file` must be three different files.

use super::duration;
use super::raw::{RawConfig, RawHealth, RawListen, RawMaster, RawServer, RawStatus, line_of_span};
use super::{
    BalanceKind, Config, ConfigError, HealthConfig, HealthKind, HttpCheck, ListenConfig,
    MasterConfig, Mode, QueueConfig, ServerConfig, Timeouts,
};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Upper bound of `workers`.
pub const MAX_WORKERS: usize = 1024;
/// Upper bound of a server's `weight`.
pub const MAX_WEIGHT: i64 = 1000;
/// Upper bound of `queue.size`.
pub const MAX_QUEUE: i64 = 1_000_000;
/// Upper bound of `retries`.
pub const MAX_RETRIES: i64 = 100;
/// Upper bound of `max_fails`, `rise` and `fall`.
pub const MAX_COUNT: i64 = 1000;

/// The accepted health kinds, in the order the docs list them.
pub const HEALTH_KINDS: &[&str] = &["tcp", "http", "send_expect"];
/// The accepted modes.
pub const MODES: &[&str] = &["tcp"];

const ADDR_EXPECTED: &str = "expected IP:PORT such as 127.0.0.1:6001";
const HTTP_KEYS: &[&str] = &["method", "path", "host", "expect_status", "expect_body"];
const SEND_EXPECT_KEYS: &[&str] = &["send", "expect"];

/// Validates the raw config into a typed [`Config`]; `src` is the text `raw`
/// was parsed from (for line numbers), `base` the directory relative paths are
/// resolved against.
pub fn validate(raw: RawConfig, src: &str, base: &Path) -> Result<Config> {
    let v = Validator { src, base };
    let master = v.master(raw.master.unwrap_or_default())?;
    let listens = v.listens(raw.listen.as_ref())?;
    Ok(Config { master, listens })
}

struct Validator<'a> {
    src: &'a str,
    base: &'a Path,
}

type Result<T> = std::result::Result<T, ConfigError>;

impl Validator<'_> {
    fn invalid<T>(&self, key: &str, at: &Spanned<T>, message: String) -> ConfigError {
        self.invalid_at(key, &at.span(), message)
    }

    /// An [`ConfigError::Invalid`] located at the line of `span`.
    fn invalid_at(&self, key: &str, span: &std::ops::Range<usize>, message: String) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_string(),
            line: Some(line_of_span(self.src, span)),
            message,
        }
    }

    /// A duration string; zero is rejected unless `allow_zero`.
    fn duration(&self, key: &str, s: &Spanned<String>, allow_zero: bool) -> Result<Duration> {
        let d = duration::parse(s.get_ref()).map_err(|e| self.invalid(key, s, e.to_string()))?;
        if d.is_zero() && !allow_zero {
            return Err(self.invalid(
                key,
                s,
                format!(
                    "'{}' is zero, expected a positive duration such as \"500ms\" or \"3s\"",
                    s.get_ref().escape_debug()
                ),
            ));
        }
        Ok(d)
    }

    fn opt_duration(
        &self,
        key: &str,
        s: Option<&Spanned<String>>,
        default: Duration,
    ) -> Result<Duration> {
        match s {
            Some(s) => self.duration(key, s, false),
            None => Ok(default),
        }
    }

    /// An integer in `min..=max`.
    fn int(&self, key: &str, n: &Spanned<i64>, min: i64, max: i64) -> Result<i64> {
        let v = *n.get_ref();
        if v < min || v > max {
            return Err(self.invalid(
                key,
                n,
                format!("{v} is out of range, expected an integer from {min} to {max}"),
            ));
        }
        Ok(v)
    }

    fn opt_u32(
        &self,
        key: &str,
        n: Option<&Spanned<i64>>,
        min: i64,
        max: i64,
        default: u32,
    ) -> Result<u32> {
        match n {
            // In range of u32 by construction: callers pass max <= u32::MAX.
            Some(n) => Ok(self.int(key, n, min, max.min(i64::from(u32::MAX)))? as u32),
            None => Ok(default),
        }
    }

    /// A listen or server name: non-empty, no '/', whitespace or control chars.
    fn name(&self, key: &str, s: &Spanned<String>) -> Result<String> {
        let name = s.get_ref();
        if name.is_empty()
            || name
                .chars()
                .any(|c| c == '/' || c.is_whitespace() || c.is_control())
        {
            return Err(self.invalid(
                key,
                s,
                format!(
                    "invalid name '{}', expected a non-empty name without '/', spaces or control characters, such as \"web\" or \"app1\"",
                    name.escape_debug()
                ),
            ));
        }
        Ok(name.clone())
    }

    /// A `user`/`group` name.
    fn account(&self, key: &str, s: &Spanned<String>) -> Result<String> {
        let name = s.get_ref();
        if name.is_empty()
            || name
                .chars()
                .any(|c| c == ':' || c.is_whitespace() || c.is_control())
        {
            return Err(self.invalid(
                key,
                s,
                format!(
                    "invalid account name '{}', expected a user or group name such as \"lbctl\"",
                    name.escape_debug()
                ),
            ));
        }
        Ok(name.clone())
    }

    /// A file path; relative paths are resolved against `base`.
    fn path(&self, key: &str, s: Option<&Spanned<String>>, default: &str) -> Result<PathBuf> {
        let Some(s) = s else {
            return Ok(PathBuf::from(default));
        };
        let p = s.get_ref();
        if p.is_empty() || p.contains('\0') {
            return Err(self.invalid(
                key,
                s,
                format!(
                    "invalid path '{}', expected a file path such as \"{default}\"",
                    p.escape_debug()
                ),
            ));
        }
        let p = Path::new(p);
        Ok(if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        })
    }

    /// An `IP:PORT` socket address with a non-zero port.
    fn socket_addr(&self, key: &str, s: &Spanned<String>) -> Result<SocketAddr> {
        let text = s.get_ref();
        let addr: SocketAddr = text.parse().map_err(|_| {
            let hint = if looks_like_host_name(text) {
                "; DNS names are not resolved"
            } else {
                ""
            };
            self.invalid(
                key,
                s,
                format!(
                    "invalid socket address '{}', {ADDR_EXPECTED}{hint}",
                    text.escape_debug()
                ),
            )
        })?;
        if addr.port() == 0 {
            return Err(self.invalid(
                key,
                s,
                format!("port 0 in '{text}' is not allowed, {ADDR_EXPECTED}"),
            ));
        }
        Ok(addr)
    }

    fn master(&self, m: RawMaster) -> Result<MasterConfig> {
        let workers = match &m.workers {
            Some(n) => self.int("master.workers", n, 1, MAX_WORKERS as i64)? as usize,
            None => std::thread::available_parallelism()
                .map(NonZeroUsize::get)
                .unwrap_or(1)
                .min(MAX_WORKERS),
        };
        let workers = NonZeroUsize::new(workers).unwrap_or(NonZeroUsize::MIN);
        let pid_file = self.path(
            "master.pid_file",
            m.pid_file.as_ref(),
            "/run/lbctl/lbctl.pid",
        )?;
        let control_socket = self.path(
            "master.control_socket",
            m.control_socket.as_ref(),
            "/run/lbctl/lbctl.sock",
        )?;
        let log_file = self.path(
            "master.log_file",
            m.log_file.as_ref(),
            "/var/log/lbctl/lbctl.log",
        )?;
        let files = [
            ("master.pid_file", &m.pid_file, &pid_file),
            ("master.control_socket", &m.control_socket, &control_socket),
            ("master.log_file", &m.log_file, &log_file),
        ];
        for (i, (key, raw, path)) in files.iter().enumerate() {
            if let Some((other, _, _)) = files[..i].iter().find(|(_, _, p)| p == path) {
                let message = format!(
                    "'{}' is the same file as {other}, expected a different path",
                    path.display()
                );
                return Err(match raw {
                    Some(raw) => self.invalid(key, raw, message),
                    None => ConfigError::Invalid {
                        key: key.to_string(),
                        line: None,
                        message,
                    },
                });
            }
        }
        let drain_timeout = self.opt_duration(
            "master.drain_timeout",
            m.drain_timeout.as_ref(),
            Duration::from_secs(30),
        )?;
        let user = match &m.user {
            Some(u) => Some(self.account("master.user", u)?),
            None => None,
        };
        let group = match &m.group {
            Some(g) => Some(self.account("master.group", g)?),
            None => None,
        };
        Ok(MasterConfig {
            workers,
            pid_file,
            control_socket,
            log_file,
            drain_timeout,
            user,
            group,
        })
    }

    fn listens(&self, raw: Option<&Spanned<Vec<Spanned<RawListen>>>>) -> Result<Vec<ListenConfig>> {
        const EXPECTED: &str =
            "expected at least one [[listen]] section with a bind address and servers";
        let raw = match raw {
            Some(r) if !r.get_ref().is_empty() => r,
            Some(r) => {
                return Err(self.invalid("listen", r, format!("no listen sections, {EXPECTED}")));
            }
            None => {
                return Err(ConfigError::Invalid {
                    key: "listen".into(),
                    line: None,
                    message: format!("no [[listen]] section, {EXPECTED}"),
                });
            }
        };
        // Every well-formed bind up front, so a server pointing at any listen
        // (even a later one) is caught; each bind is validated with its listen.
        let binds: Vec<Option<SocketAddr>> = raw
            .get_ref()
            .iter()
            .map(|l| l.get_ref().bind.as_ref()?.get_ref().parse().ok())
            .collect();
        let mut out: Vec<ListenConfig> = Vec::with_capacity(raw.get_ref().len());
        for (i, l) in raw.get_ref().iter().enumerate() {
            let listen = self.listen(i, l, &binds)?;
            let prefix = format!("listen[{i}]");
            let lr = l.get_ref();
            for (k, prev) in out.iter().enumerate() {
                if prev.name == listen.name {
                    let message = format!(
                        "duplicate listen name '{}', already used by listen[{k}]",
                        listen.name
                    );
                    return Err(match &lr.name {
                        Some(n) => self.invalid(&format!("{prefix}.name"), n, message),
                        None => self.bind_error(&prefix, lr, l, message),
                    });
                }
                if let Some(why) = binds_clash(prev.bind, listen.bind) {
                    let message =
                        format!("'{}' {why} listen[{k}].bind '{}'", listen.bind, prev.bind);
                    return Err(self.bind_error(&prefix, lr, l, message));
                }
            }
            out.push(listen);
        }
        Ok(out)
    }

    fn bind_error(
        &self,
        prefix: &str,
        lr: &RawListen,
        l: &Spanned<RawListen>,
        message: String,
    ) -> ConfigError {
        let key = format!("{prefix}.bind");
        match &lr.bind {
            Some(b) => self.invalid(&key, b, message),
            None => self.invalid(&key, l, message),
        }
    }

    fn listen(
        &self,
        i: usize,
        spanned: &Spanned<RawListen>,
        binds: &[Option<SocketAddr>],
    ) -> Result<ListenConfig> {
        let p = format!("listen[{i}]");
        let l = spanned.get_ref();
        let bind_key = format!("{p}.bind");
        let Some(raw_bind) = &l.bind else {
            return Err(self.invalid(
                &bind_key,
                spanned,
                format!("missing, {}", ADDR_EXPECTED.replace("6001", "8080")),
            ));
        };
        let bind = self.socket_addr(&bind_key, raw_bind)?;
        let name = match &l.name {
            Some(n) => self.name(&format!("{p}.name"), n)?,
            None => raw_bind.get_ref().clone(),
        };
        let mode = match &l.mode {
            None => Mode::Tcp,
            Some(m) if m.get_ref() == "tcp" => Mode::Tcp,
            Some(m) => {
                return Err(self.invalid(
                    &format!("{p}.mode"),
                    m,
                    format!(
                        "unknown mode '{}', expected one of: {}",
                        m.get_ref().escape_debug(),
                        MODES.join(", ")
                    ),
                ));
            }
        };
        let balance = match &l.balance {
            None => BalanceKind::RoundRobin,
            Some(b) => BalanceKind::from_name(b.get_ref()).ok_or_else(|| {
                self.invalid(
                    &format!("{p}.balance"),
                    b,
                    format!(
                        "unknown balance '{}', expected one of: {}",
                        b.get_ref().escape_debug(),
                        BalanceKind::NAMES.join(", ")
                    ),
                )
            })?,
        };
        let retries = self.opt_u32(
            &format!("{p}.retries"),
            l.retries.as_ref(),
            0,
            MAX_RETRIES,
            2,
        )?;
        let timeouts = match &l.timeouts {
            Some(t) => Timeouts {
                connect: self.opt_duration(
                    &format!("{p}.timeouts.connect"),
                    t.get_ref().connect.as_ref(),
                    Duration::from_secs(3),
                )?,
                idle: self.opt_duration(
                    &format!("{p}.timeouts.idle"),
                    t.get_ref().idle.as_ref(),
                    Duration::from_secs(300),
                )?,
            },
            None => Timeouts {
                connect: Duration::from_secs(3),
                idle: Duration::from_secs(300),
            },
        };
        let max_fails = self.opt_u32(
            &format!("{p}.max_fails"),
            l.max_fails.as_ref(),
            0,
            MAX_COUNT,
            1,
        )?;
        let fail_timeout = self.opt_duration(
            &format!("{p}.fail_timeout"),
            l.fail_timeout.as_ref(),
            Duration::from_secs(10),
        )?;
        let queue = match &l.queue {
            Some(q) => QueueConfig {
                size: match &q.get_ref().size {
                    Some(n) => self.int(&format!("{p}.queue.size"), n, 0, MAX_QUEUE)? as usize,
                    None => 1024,
                },
                timeout: self.opt_duration(
                    &format!("{p}.queue.timeout"),
                    q.get_ref().timeout.as_ref(),
                    Duration::from_secs(5),
                )?,
            },
            None => QueueConfig {
                size: 1024,
                timeout: Duration::from_secs(5),
            },
        };
        let listen_health = match &l.health {
            Some(h) => Some(self.health(&format!("{p}.health"), h, h.get_ref())?),
            None => None,
        };
        let servers = self.servers(&p, spanned, listen_health.as_ref(), binds)?;
        Ok(ListenConfig {
            name,
            bind,
            mode,
            balance,
            retries,
            timeouts,
            max_fails,
            fail_timeout,
            queue,
            servers,
        })
    }

    fn servers(
        &self,
        p: &str,
        listen: &Spanned<RawListen>,
        listen_health: Option<&HealthConfig>,
        binds: &[Option<SocketAddr>],
    ) -> Result<Vec<ServerConfig>> {
        let key = format!("{p}.servers");
        const EXPECTED: &str =
            "expected at least one server such as servers = [{ addr = \"127.0.0.1:6001\" }]";
        let raw = match &listen.get_ref().servers {
            Some(s) if !s.get_ref().is_empty() => s,
            Some(s) => return Err(self.invalid(&key, s, format!("empty, {EXPECTED}"))),
            None => return Err(self.invalid(&key, listen, format!("missing, {EXPECTED}"))),
        };
        let mut out: Vec<ServerConfig> = Vec::with_capacity(raw.get_ref().len());
        for (j, s) in raw.get_ref().iter().enumerate() {
            let sp = format!("{key}[{j}]");
            let server = self.server(&sp, s, listen, listen_health, binds)?;
            let sr = s.get_ref();
            // `addr` is present: `server` would have failed without it.
            let addr_span = sr
                .addr
                .as_ref()
                .map(Spanned::span)
                .unwrap_or_else(|| s.span());
            for (k, prev) in out.iter().enumerate() {
                if prev.addr == server.addr {
                    return Err(self.invalid_at(
                        &format!("{sp}.addr"),
                        &addr_span,
                        format!(
                            "duplicate server address '{}', already used by {key}[{k}]",
                            server.addr
                        ),
                    ));
                }
                if prev.label() == server.label() {
                    let (field, at) = match &sr.name {
                        Some(n) => ("name", n.span()),
                        None => ("addr", addr_span.clone()),
                    };
                    return Err(self.invalid_at(
                        &format!("{sp}.{field}"),
                        &at,
                        format!(
                            "duplicate server name '{}', already used by {key}[{k}]",
                            server.label()
                        ),
                    ));
                }
            }
            out.push(server);
        }
        if out.iter().all(|s| s.backup) {
            return Err(self.invalid(
                &key,
                raw,
                "every server is a backup, expected at least one server without backup = true"
                    .into(),
            ));
        }
        Ok(out)
    }

    fn server(
        &self,
        sp: &str,
        spanned: &Spanned<RawServer>,
        listen: &Spanned<RawListen>,
        listen_health: Option<&HealthConfig>,
        binds: &[Option<SocketAddr>],
    ) -> Result<ServerConfig> {
        let s = spanned.get_ref();
        let addr_key = format!("{sp}.addr");
        let Some(raw_addr) = &s.addr else {
            return Err(self.invalid(&addr_key, spanned, format!("missing, {ADDR_EXPECTED}")));
        };
        let addr = self.socket_addr(&addr_key, raw_addr)?;
        if addr.ip().is_unspecified() {
            return Err(self.invalid(
                &addr_key,
                raw_addr,
                format!("'{addr}' is an unspecified address, {ADDR_EXPECTED}"),
            ));
        }
        if let Some(k) = binds.iter().position(|b| *b == Some(addr)) {
            return Err(self.invalid(
                &addr_key,
                raw_addr,
                format!("'{addr}' is listen[{k}].bind, a balancer cannot be its own server"),
            ));
        }
        let name = match &s.name {
            Some(n) => Some(self.name(&format!("{sp}.name"), n)?),
            None => None,
        };
        let weight = self.opt_u32(&format!("{sp}.weight"), s.weight.as_ref(), 0, MAX_WEIGHT, 1)?;
        let max_conns = match &s.max_conns {
            Some(n) => {
                Some(self.int(&format!("{sp}.max_conns"), n, 1, i64::from(u32::MAX))? as u32)
            }
            None => None,
        };
        let slow_start = match &s.slow_start {
            Some(d) => {
                Some(self.duration(&format!("{sp}.slow_start"), d, true)?).filter(|d| !d.is_zero())
            }
            None => None,
        };
        let health = match &s.health {
            Some(own) => {
                let empty = RawHealth::default();
                let base = listen
                    .get_ref()
                    .health
                    .as_ref()
                    .map_or(&empty, Spanned::get_ref);
                let merged = merge_health(base, own.get_ref());
                Some(self.health(&format!("{sp}.health"), own, &merged)?)
            }
            None => listen_health.cloned(),
        };
        Ok(ServerConfig {
            name,
            addr,
            weight,
            backup: s.backup.unwrap_or(false),
            max_conns,
            slow_start,
            health,
        })
    }

    /// Validates one (possibly merged) health table; `table` locates errors
    /// about missing keys.
    fn health<T>(&self, p: &str, table: &Spanned<T>, h: &RawHealth) -> Result<HealthConfig> {
        let kind_name = match &h.kind {
            None => "tcp",
            Some(k) => match HEALTH_KINDS.iter().find(|n| **n == k.get_ref().as_str()) {
                Some(n) => n,
                None => {
                    return Err(self.invalid(
                        &format!("{p}.kind"),
                        k,
                        format!(
                            "unknown health kind '{}', expected one of: {}",
                            k.get_ref().escape_debug(),
                            HEALTH_KINDS.join(", ")
                        ),
                    ));
                }
            },
        };
        let interval = self.opt_duration(
            &format!("{p}.interval"),
            h.interval.as_ref(),
            Duration::from_secs(2),
        )?;
        let timeout = self.opt_duration(
            &format!("{p}.timeout"),
            h.timeout.as_ref(),
            Duration::from_secs(1),
        )?;
        let rise = self.opt_u32(&format!("{p}.rise"), h.rise.as_ref(), 1, MAX_COUNT, 2)?;
        let fall = self.opt_u32(&format!("{p}.fall"), h.fall.as_ref(), 1, MAX_COUNT, 3)?;

        let foreign: Vec<&str> = match kind_name {
            "http" => SEND_EXPECT_KEYS.to_vec(),
            "send_expect" => HTTP_KEYS.to_vec(),
            _ => [HTTP_KEYS, SEND_EXPECT_KEYS].concat(),
        };
        for key in foreign {
            if let Some(at) = health_key_span(h, key) {
                let owner = if HTTP_KEYS.contains(&key) {
                    "http"
                } else {
                    "send_expect"
                };
                return Err(self.invalid_at(
                    &format!("{p}.{key}"),
                    &at,
                    format!(
                        "'{key}' only applies to kind = \"{owner}\", this check is kind = \"{kind_name}\""
                    ),
                ));
            }
        }

        let kind = match kind_name {
            "http" => HealthKind::Http(self.http_check(p, h)?),
            "send_expect" => {
                let missing = |key: &str| {
                    self.invalid(
                        &format!("{p}.{key}"),
                        table,
                        "missing, kind = \"send_expect\" needs both send and expect, such as send = \"PING\\r\\n\", expect = \"+PONG\"".to_string(),
                    )
                };
                let send = h.send.as_ref().ok_or_else(|| missing("send"))?;
                let expect = h.expect.as_ref().ok_or_else(|| missing("expect"))?;
                if expect.get_ref().is_empty() {
                    return Err(self.invalid(
                        &format!("{p}.expect"),
                        expect,
                        "'' is empty, expected the bytes a healthy reply starts with, such as \"+PONG\"".into(),
                    ));
                }
                HealthKind::SendExpect {
                    send: send.get_ref().as_bytes().to_vec(),
                    expect: expect.get_ref().as_bytes().to_vec(),
                }
            }
            _ => HealthKind::Tcp,
        };
        Ok(HealthConfig {
            kind,
            interval,
            timeout,
            rise,
            fall,
        })
    }

    fn http_check(&self, p: &str, h: &RawHealth) -> Result<HttpCheck> {
        let method = match &h.method {
            None => "GET".to_string(),
            Some(m) => {
                let text = m.get_ref();
                if text.is_empty()
                    || text.len() > 20
                    || !text.bytes().all(|b| b.is_ascii_uppercase())
                {
                    return Err(self.invalid(
                        &format!("{p}.method"),
                        m,
                        format!(
                            "invalid HTTP method '{}', expected uppercase letters such as GET or HEAD",
                            text.escape_debug()
                        ),
                    ));
                }
                text.clone()
            }
        };
        let visible = |s: &str| !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b));
        let path = match &h.path {
            None => "/".to_string(),
            Some(s) => {
                if !s.get_ref().starts_with('/') || !visible(s.get_ref()) {
                    return Err(self.invalid(
                        &format!("{p}.path"),
                        s,
                        format!(
                            "invalid HTTP path '{}', expected a path starting with '/' without spaces, such as \"/health\"",
                            s.get_ref().escape_debug()
                        ),
                    ));
                }
                s.get_ref().clone()
            }
        };
        let host = match &h.host {
            None => None,
            Some(s) => {
                if !visible(s.get_ref()) {
                    return Err(self.invalid(
                        &format!("{p}.host"),
                        s,
                        format!(
                            "invalid Host header '{}', expected a host name without spaces, such as \"example.com\"",
                            s.get_ref().escape_debug()
                        ),
                    ));
                }
                Some(s.get_ref().clone())
            }
        };
        let expect_status = match &h.expect_status {
            None => (200, 399),
            Some(s) => parse_status(s.get_ref())
                .map_err(|m| self.invalid(&format!("{p}.expect_status"), s, m))?,
        };
        Ok(HttpCheck {
            method,
            path,
            host,
            expect_status,
            expect_body: h.expect_body.as_ref().map(|s| s.get_ref().clone()),
        })
    }
}

/// Whether `text` reads as `NAME:PORT` (a host name where an IP belongs).
fn looks_like_host_name(text: &str) -> bool {
    match text.rsplit_once(':') {
        Some((host, port)) => {
            !host.starts_with('[')
                && host.bytes().any(|b| b.is_ascii_alphabetic())
                && port.parse::<u16>().is_ok()
        }
        None => false,
    }
}

/// Why two binds cannot coexist, if they cannot.
fn binds_clash(a: SocketAddr, b: SocketAddr) -> Option<&'static str> {
    if a == b {
        return Some("duplicates");
    }
    let same_family = a.is_ipv4() == b.is_ipv4();
    if a.port() == b.port() && same_family && (a.ip().is_unspecified() || b.ip().is_unspecified()) {
        return Some("overlaps (same port, one is a wildcard address)");
    }
    None
}

/// `expect_status` as an inclusive range.
fn parse_status(raw: &RawStatus) -> std::result::Result<(u16, u16), String> {
    const EXPECTED: &str =
        "expected a status from 100 to 599 such as 200, or a range such as \"200-399\"";
    let code = |n: i64| -> std::result::Result<u16, String> {
        if (100..=599).contains(&n) {
            Ok(n as u16)
        } else {
            Err(format!("status {n} is out of range, {EXPECTED}"))
        }
    };
    match raw {
        RawStatus::Code(n) => code(*n).map(|c| (c, c)),
        RawStatus::Text(text) => {
            let bad = || format!("invalid status range '{}', {EXPECTED}", text.escape_debug());
            let num = |s: &str| -> std::result::Result<i64, String> {
                let s = s.trim();
                if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                s.parse::<i64>().map_err(|_| bad())
            };
            let (lo, hi) = match text.split_once('-') {
                Some((a, b)) => (code(num(a)?)?, code(num(b)?)?),
                None => {
                    let c = code(num(text)?)?;
                    (c, c)
                }
            };
            if lo > hi {
                return Err(format!(
                    "status range '{text}' is reversed, expected LOW-HIGH with LOW <= HIGH such as \"200-399\""
                ));
            }
            Ok((lo, hi))
        }
    }
}

/// The server's health table merged over the listen's (see the module docs).
fn merge_health(base: &RawHealth, over: &RawHealth) -> RawHealth {
    let base_kind = base.kind.as_ref().map_or("tcp", |k| k.get_ref().as_str());
    let kind_changed = over
        .kind
        .as_ref()
        .is_some_and(|k| k.get_ref().as_str() != base_kind);
    fn pick<T: Clone>(over: &Option<T>, base: &Option<T>, inherit: bool) -> Option<T> {
        match over {
            Some(v) => Some(v.clone()),
            None if inherit => base.clone(),
            None => None,
        }
    }
    let same = !kind_changed;
    RawHealth {
        kind: pick(&over.kind, &base.kind, true),
        interval: pick(&over.interval, &base.interval, true),
        timeout: pick(&over.timeout, &base.timeout, true),
        rise: pick(&over.rise, &base.rise, true),
        fall: pick(&over.fall, &base.fall, true),
        method: pick(&over.method, &base.method, same),
        path: pick(&over.path, &base.path, same),
        host: pick(&over.host, &base.host, same),
        expect_status: pick(&over.expect_status, &base.expect_status, same),
        expect_body: pick(&over.expect_body, &base.expect_body, same),
        send: pick(&over.send, &base.send, same),
        expect: pick(&over.expect, &base.expect, same),
    }
}

/// Where a kind-specific key was written, if it was.
fn health_key_span(h: &RawHealth, key: &str) -> Option<std::ops::Range<usize>> {
    match key {
        "method" => h.method.as_ref().map(Spanned::span),
        "path" => h.path.as_ref().map(Spanned::span),
        "host" => h.host.as_ref().map(Spanned::span),
        "expect_status" => h.expect_status.as_ref().map(Spanned::span),
        "expect_body" => h.expect_body.as_ref().map(Spanned::span),
        "send" => h.send.as_ref().map(Spanned::span),
        "expect" => h.expect.as_ref().map(Spanned::span),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    const BASE: &str = "/etc/lbctl";

    fn ok(src: &str) -> Config {
        parse(src, Path::new(BASE)).unwrap_or_else(|e| panic!("should be valid: {e}\n{src}"))
    }

    /// Asserts `src` is rejected as invalid at `key` on `line`; returns the message.
    fn rejected(src: &str, key: &str, line: usize) -> String {
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
    fn listen_with(extra: &str) -> String {
        format!(
            "[[listen]]\nbind = \"127.0.0.1:8080\"\nservers = [{{ addr = \"127.0.0.1:6001\" }}]\n{extra}\n"
        )
    }

    /// A listen whose servers are `lines`, one per line from line 4 on.
    fn servers(lines: &[&str]) -> String {
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
    fn master_with(extra: &str) -> String {
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
                idle: Duration::from_secs(300)
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
    fn relative_paths_resolve_against_the_base_directory() {
        let c = ok(&master_with(
            "pid_file = \"run/x.pid\"\ncontrol_socket = \"./x.sock\"",
        ));
        assert_eq!(c.master.pid_file, PathBuf::from("/etc/lbctl/run/x.pid"));
        assert_eq!(
            c.master.control_socket,
            PathBuf::from("/etc/lbctl/./x.sock")
        );
    }

    #[test]
    fn every_balance_name_is_accepted() {
        for name in BalanceKind::NAMES {
            let c = ok(&listen_with(&format!("balance = \"{name}\"")));
            assert_eq!(c.listens[0].balance.name(), *name);
        }
    }

    #[test]
    fn weight_zero_is_allowed() {
        let c = ok(&servers(&[
            r#"{ addr = "127.0.0.1:1" }"#,
            r#"{ addr = "127.0.0.1:2", weight = 0 }"#,
        ]));
        assert_eq!(c.listens[0].servers[1].weight, 0);
    }

    #[test]
    fn slow_start_of_zero_means_none() {
        let c = ok(&servers(&[
            r#"{ addr = "127.0.0.1:1", slow_start = "0s" }"#,
        ]));
        assert_eq!(c.listens[0].servers[0].slow_start, None);
    }

    #[test]
    fn health_timeout_longer_than_interval_is_accepted() {
        let c = ok(&listen_with(
            r#"health = { interval = "1s", timeout = "5s" }"#,
        ));
        let h = c.listens[0].servers[0].health.clone().expect("health");
        assert_eq!(
            (h.interval, h.timeout),
            (Duration::from_secs(1), Duration::from_secs(5))
        );
    }

    #[test]
    fn listen_health_gives_every_server_the_defaults_it_omits() {
        let c = ok(&listen_with(r#"health = { interval = "5s" }"#));
        assert_eq!(
            c.listens[0].servers[0].health,
            Some(HealthConfig {
                kind: HealthKind::Tcp,
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(1),
                rise: 2,
                fall: 3,
            })
        );
    }

    #[test]
    fn server_health_is_merged_over_the_listen_health() {
        let mut src = servers(&[
            r#"{ addr = "127.0.0.1:1" }"#,
            r#"{ addr = "127.0.0.1:2", health = { path = "/deep", rise = 5 } }"#,
            r#"{ addr = "127.0.0.1:3", health = { kind = "tcp" } }"#,
        ]);
        src.push_str(r#"health = { kind = "http", path = "/h", interval = "3s", fall = 4, expect_status = 204 }"#);
        let c = ok(&src);
        let s = &c.listens[0].servers;
        let http = |path: &str| {
            HealthKind::Http(HttpCheck {
                method: "GET".into(),
                path: path.into(),
                host: None,
                expect_status: (204, 204),
                expect_body: None,
            })
        };
        let h0 = s[0].health.clone().expect("inherited");
        assert_eq!(
            (h0.kind, h0.interval, h0.rise, h0.fall),
            (http("/h"), Duration::from_secs(3), 2, 4)
        );
        let h1 = s[1].health.clone().expect("merged");
        assert_eq!(
            (h1.kind, h1.interval, h1.rise, h1.fall),
            (http("/deep"), Duration::from_secs(3), 5, 4)
        );
        let h2 = s[2].health.clone().expect("switched kind");
        assert_eq!(
            (h2.kind, h2.interval, h2.fall),
            (HealthKind::Tcp, Duration::from_secs(3), 4)
        );
    }

    #[test]
    fn server_health_without_listen_health_gets_defaults() {
        let c = ok(&servers(&[
            r#"{ addr = "127.0.0.1:1", health = { interval = "1s" } }"#,
            r#"{ addr = "127.0.0.1:2" }"#,
        ]));
        let s = &c.listens[0].servers;
        assert_eq!(
            s[0].health,
            Some(HealthConfig {
                kind: HealthKind::Tcp,
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                rise: 2,
                fall: 3,
            })
        );
        assert_eq!(s[1].health, None);
    }

    #[test]
    fn http_check_defaults_and_forms_of_expect_status() {
        let check = |extra: &str| {
            let c = ok(&listen_with(&format!(
                "health = {{ kind = \"http\"{extra} }}"
            )));
            match c.listens[0].servers[0].health.clone().expect("health").kind {
                HealthKind::Http(h) => h,
                other => panic!("expected http, got {other:?}"),
            }
        };
        let h = check("");
        assert_eq!((h.method.as_str(), h.path.as_str()), ("GET", "/"));
        assert_eq!(
            (h.host, h.expect_status, h.expect_body),
            (None, (200, 399), None)
        );
        assert_eq!(check(", expect_status = 200").expect_status, (200, 200));
        assert_eq!(check(", expect_status = \"204\"").expect_status, (204, 204));
        assert_eq!(
            check(", expect_status = \"200-299\"").expect_status,
            (200, 299)
        );
        assert_eq!(
            check(", expect_status = \"100-599\"").expect_status,
            (100, 599)
        );
        let h = check(
            ", method = \"HEAD\", path = \"/h?x=1\", host = \"a.example\", expect_body = \"ok\"",
        );
        assert_eq!(h.method, "HEAD");
        assert_eq!(h.path, "/h?x=1");
        assert_eq!(h.host.as_deref(), Some("a.example"));
        assert_eq!(h.expect_body.as_deref(), Some("ok"));
    }

    #[test]
    fn send_expect_keeps_escaped_bytes() {
        let c = ok(&listen_with(
            r#"health = { kind = "send_expect", send = "PING\r\n", expect = "+PONG" }"#,
        ));
        assert_eq!(
            c.listens[0].servers[0].health.clone().expect("health").kind,
            HealthKind::SendExpect {
                send: b"PING\r\n".to_vec(),
                expect: b"+PONG".to_vec()
            }
        );
        ok(&listen_with(
            r#"health = { kind = "send_expect", send = "", expect = "220" }"#,
        ));
    }

    #[test]
    fn ipv4_and_ipv6_wildcards_on_one_port_may_coexist() {
        let c = ok(concat!(
            "[[listen]]\nbind = \"0.0.0.0:8080\"\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
            "[[listen]]\nbind = \"[::]:8080\"\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
        ));
        assert_eq!(c.listens.len(), 2);
    }

    #[test]
    fn shipped_example_config_validates() {
        let c = ok(include_str!("../../conf/lbctl.toml"));
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
    fn demo_config_validates_to_the_demo_setup() {
        let c = ok(include_str!("../../conf/demo.toml"));
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
    fn file_without_listen_is_rejected() {
        let err = parse("[master]\nworkers = 1\n", Path::new(BASE)).expect_err("rejected");
        let shown = err.to_string();
        assert!(
            shown.starts_with("listen: no [[listen]] section"),
            "{shown}"
        );
        // Nothing was written, so there is no line to point at.
        assert!(!shown.contains("(line"), "{shown}");
        rejected("\n\nlisten = []\n[master]\nworkers = 1\n", "listen", 3);
    }

    #[test]
    fn listen_without_bind_is_rejected_at_its_header() {
        let msg = rejected(
            "[master]\n[[listen]]\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
            "listen[0].bind",
            2,
        );
        assert!(msg.contains("missing"), "{msg}");
    }

    #[test]
    fn dns_name_as_bind_is_rejected() {
        let msg = rejected(
            "[[listen]]\nbind = \"localhost:8080\"\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
            "listen[0].bind",
            2,
        );
        assert!(
            msg.contains("'localhost:8080'") && msg.contains("IP:PORT"),
            "{msg}"
        );
    }

    #[test]
    fn errors_are_reported_in_file_order() {
        let src = concat!(
            "[[listen]]\nbind = \"127.0.0.1:8080\"\nbalance = \"nope\"\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
            "[[listen]]\nbind = \"nope\"\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
        );
        rejected(src, "listen[0].balance", 3);
    }

    #[test]
    fn server_pointing_at_a_later_listen_bind_is_rejected() {
        let src = concat!(
            "[[listen]]\nbind = \"127.0.0.1:8080\"\nservers = [{ addr = \"127.0.0.1:9090\" }]\n",
            "[[listen]]\nbind = \"127.0.0.1:9090\"\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
        );
        let msg = rejected(src, "listen[0].servers[0].addr", 3);
        assert!(msg.contains("listen[1].bind"), "{msg}");
    }

    #[test]
    fn bind_on_port_zero_is_rejected() {
        rejected(
            "[[listen]]\nbind = \"127.0.0.1:0\"\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
            "listen[0].bind",
            2,
        );
    }

    #[test]
    fn bad_server_address_is_rejected_with_its_path() {
        let src = servers(&[r#"{ addr = "127.0.0.1:1" }"#, r#"{ addr = "x:y" }"#]);
        let msg = rejected(&src, "listen[0].servers[1].addr", 5);
        assert_eq!(
            msg,
            "listen[0].servers[1].addr: invalid socket address 'x:y', expected IP:PORT such as 127.0.0.1:6001 (line 5)"
        );
        rejected(
            &servers(&[r#"{ addr = "127.0.0.1" }"#]),
            "listen[0].servers[0].addr",
            4,
        );
        rejected(
            &servers(&[r#"{ addr = "db.local:5432" }"#]),
            "listen[0].servers[0].addr",
            4,
        );
        rejected(
            &servers(&[r#"{ addr = "127.0.0.1:0" }"#]),
            "listen[0].servers[0].addr",
            4,
        );
    }

    #[test]
    fn server_without_addr_is_rejected() {
        rejected(
            &servers(&[r#"{ name = "a" }"#]),
            "listen[0].servers[0].addr",
            4,
        );
    }

    #[test]
    fn unspecified_server_address_is_rejected() {
        let msg = rejected(
            &servers(&[r#"{ addr = "0.0.0.0:6001" }"#]),
            "listen[0].servers[0].addr",
            4,
        );
        assert!(msg.contains("unspecified"), "{msg}");
    }

    #[test]
    fn server_pointing_at_a_listen_bind_is_rejected() {
        let msg = rejected(
            &servers(&[r#"{ addr = "127.0.0.1:8080" }"#]),
            "listen[0].servers[0].addr",
            4,
        );
        assert!(msg.contains("listen[0].bind"), "{msg}");
    }

    #[test]
    fn unknown_mode_is_rejected_with_the_accepted_modes() {
        let msg = rejected(&listen_with("mode = \"http\""), "listen[0].mode", 4);
        assert!(
            msg.contains("'http'") && msg.contains("expected one of: tcp"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_balance_is_rejected_with_every_accepted_name() {
        let msg = rejected(
            &listen_with("balance = \"fastest\""),
            "listen[0].balance",
            4,
        );
        assert!(msg.contains("'fastest'"), "{msg}");
        assert!(msg.contains(&BalanceKind::NAMES.join(", ")), "{msg}");
    }

    #[test]
    fn workers_outside_one_to_1024_are_rejected() {
        for bad in ["0", "1025", "-1"] {
            let msg = rejected(
                &master_with(&format!("workers = {bad}")),
                "master.workers",
                2,
            );
            assert!(msg.contains(bad) && msg.contains("from 1 to 1024"), "{msg}");
        }
        ok(&master_with("workers = 1024"));
    }

    #[test]
    fn duplicate_listen_names_are_rejected() {
        let src = concat!(
            "[[listen]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
            "[[listen]]\nname = \"web\"\nbind = \"127.0.0.1:8081\"\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
        );
        let msg = rejected(src, "listen[1].name", 6);
        assert!(msg.contains("'web'") && msg.contains("listen[0]"), "{msg}");
    }

    #[test]
    fn default_listen_name_colliding_with_an_explicit_one_is_rejected() {
        let src = concat!(
            "[[listen]]\nname = \"127.0.0.1:8081\"\nbind = \"127.0.0.1:8080\"\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
            "[[listen]]\nbind = \"127.0.0.1:8081\"\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
        );
        rejected(src, "listen[1].bind", 6);
    }

    #[test]
    fn duplicate_bind_addresses_are_rejected() {
        let src = concat!(
            "[[listen]]\nname = \"a\"\nbind = \"127.0.0.1:8080\"\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
            "[[listen]]\nname = \"b\"\nbind = \"127.0.0.1:8080\"\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
        );
        let msg = rejected(src, "listen[1].bind", 7);
        assert!(msg.contains("duplicates listen[0].bind"), "{msg}");
    }

    #[test]
    fn wildcard_bind_overlapping_another_listen_is_rejected() {
        let src = concat!(
            "[[listen]]\nname = \"a\"\nbind = \"127.0.0.1:8080\"\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
            "[[listen]]\nname = \"b\"\nbind = \"0.0.0.0:8080\"\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
        );
        let msg = rejected(src, "listen[1].bind", 7);
        assert!(msg.contains("overlaps"), "{msg}");
    }

    #[test]
    fn missing_or_empty_servers_are_rejected() {
        rejected(
            "[[listen]]\nbind = \"127.0.0.1:8080\"\n",
            "listen[0].servers",
            1,
        );
        rejected(
            "[[listen]]\nbind = \"127.0.0.1:8080\"\nservers = []\n",
            "listen[0].servers",
            3,
        );
    }

    #[test]
    fn listen_with_only_backup_servers_is_rejected() {
        let src = servers(&[
            r#"{ addr = "127.0.0.1:1", backup = true }"#,
            r#"{ addr = "127.0.0.1:2", backup = true }"#,
        ]);
        let msg = rejected(&src, "listen[0].servers", 3);
        assert!(msg.contains("backup"), "{msg}");
    }

    #[test]
    fn duplicate_server_address_is_rejected() {
        let src = servers(&[
            r#"{ addr = "127.0.0.1:1", name = "a" }"#,
            r#"{ addr = "127.0.0.1:2" }"#,
            r#"{ addr = "127.0.0.1:1", name = "c" }"#,
        ]);
        let msg = rejected(&src, "listen[0].servers[2].addr", 6);
        assert!(
            msg.contains("'127.0.0.1:1'") && msg.contains("listen[0].servers[0]"),
            "{msg}"
        );
    }

    #[test]
    fn duplicate_server_name_is_rejected() {
        let src = servers(&[
            r#"{ addr = "127.0.0.1:1", name = "a" }"#,
            r#"{ addr = "127.0.0.1:2", name = "a" }"#,
        ]);
        let msg = rejected(&src, "listen[0].servers[1].name", 5);
        assert!(msg.contains("'a'"), "{msg}");
    }

    #[test]
    fn server_name_shadowing_another_server_address_is_rejected() {
        let src = servers(&[
            r#"{ addr = "127.0.0.1:1", name = "127.0.0.1:2" }"#,
            r#"{ addr = "127.0.0.1:2" }"#,
        ]);
        rejected(&src, "listen[0].servers[1].addr", 5);
    }

    #[test]
    fn weight_above_1000_is_rejected() {
        let msg = rejected(
            &servers(&[r#"{ addr = "127.0.0.1:1", weight = 1001 }"#]),
            "listen[0].servers[0].weight",
            4,
        );
        assert!(
            msg.contains("1001") && msg.contains("from 0 to 1000"),
            "{msg}"
        );
        rejected(
            &servers(&[r#"{ addr = "127.0.0.1:1", weight = -1 }"#]),
            "listen[0].servers[0].weight",
            4,
        );
    }

    #[test]
    fn max_conns_of_zero_is_rejected() {
        rejected(
            &servers(&[r#"{ addr = "127.0.0.1:1", max_conns = 0 }"#]),
            "listen[0].servers[0].max_conns",
            4,
        );
    }

    #[test]
    fn rise_or_fall_below_one_is_rejected() {
        rejected(
            &listen_with("health = { rise = 0 }"),
            "listen[0].health.rise",
            4,
        );
        rejected(
            &listen_with("health = { fall = 0 }"),
            "listen[0].health.fall",
            4,
        );
        let src = servers(&[r#"{ addr = "127.0.0.1:1", health = { fall = 0 } }"#]);
        rejected(&src, "listen[0].servers[0].health.fall", 4);
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
    fn unknown_health_kind_is_rejected_with_the_accepted_kinds() {
        let msg = rejected(
            &listen_with("health = { kind = \"icmp\" }"),
            "listen[0].health.kind",
            4,
        );
        assert!(
            msg.contains("'icmp'") && msg.contains("tcp, http, send_expect"),
            "{msg}"
        );
    }

    #[test]
    fn http_expect_status_out_of_range_or_reversed_is_rejected() {
        for bad in [
            "600",
            "99",
            "\"200-600\"",
            "\"abc\"",
            "\"200-\"",
            "\"2000\"",
        ] {
            let src = listen_with(&format!(
                "health = {{ kind = \"http\", expect_status = {bad} }}"
            ));
            let msg = rejected(&src, "listen[0].health.expect_status", 4);
            assert!(msg.contains("100 to 599"), "{msg}");
        }
        let src = listen_with("health = { kind = \"http\", expect_status = \"399-200\" }");
        let msg = rejected(&src, "listen[0].health.expect_status", 4);
        assert!(msg.contains("reversed"), "{msg}");
    }

    #[test]
    fn malformed_http_request_fields_are_rejected() {
        rejected(
            &listen_with("health = { kind = \"http\", method = \"get\" }"),
            "listen[0].health.method",
            4,
        );
        rejected(
            &listen_with("health = { kind = \"http\", path = \"health\" }"),
            "listen[0].health.path",
            4,
        );
        rejected(
            &listen_with("health = { kind = \"http\", path = \"/a b\" }"),
            "listen[0].health.path",
            4,
        );
        rejected(
            &listen_with("health = { kind = \"http\", host = \"a\\r\\nX: y\" }"),
            "listen[0].health.host",
            4,
        );
    }

    #[test]
    fn send_expect_without_send_or_expect_is_rejected() {
        let msg = rejected(
            &listen_with("health = { kind = \"send_expect\", expect = \"+PONG\" }"),
            "listen[0].health.send",
            4,
        );
        assert!(msg.contains("missing"), "{msg}");
        rejected(
            &listen_with("health = { kind = \"send_expect\", send = \"PING\" }"),
            "listen[0].health.expect",
            4,
        );
        rejected(
            &listen_with("health = { kind = \"send_expect\", send = \"\", expect = \"\" }"),
            "listen[0].health.expect",
            4,
        );
        // A server switching to send_expect must bring both keys itself.
        let mut src = servers(&[
            r#"{ addr = "127.0.0.1:1", health = { kind = "send_expect", send = "x" } }"#,
        ]);
        src.push_str("health = { kind = \"tcp\" }\n");
        rejected(&src, "listen[0].servers[0].health.expect", 4);
    }

    #[test]
    fn keys_of_another_health_kind_are_rejected() {
        let msg = rejected(
            &listen_with("health = { path = \"/\" }"),
            "listen[0].health.path",
            4,
        );
        assert!(
            msg.contains("kind = \"http\"") && msg.contains("kind = \"tcp\""),
            "{msg}"
        );
        rejected(
            &listen_with("health = { kind = \"http\", send = \"x\" }"),
            "listen[0].health.send",
            4,
        );
        let mut src = servers(&[
            r#"{ addr = "127.0.0.1:1", health = { kind = "tcp", expect_status = 200 } }"#,
        ]);
        src.push_str("health = { kind = \"http\" }\n");
        rejected(&src, "listen[0].servers[0].health.expect_status", 4);
    }

    #[test]
    fn queue_size_above_one_million_is_rejected() {
        let msg = rejected(
            &listen_with("queue = { size = 1000001 }"),
            "listen[0].queue.size",
            4,
        );
        assert!(msg.contains("1000001"), "{msg}");
        rejected(
            &listen_with("queue = { size = -1 }"),
            "listen[0].queue.size",
            4,
        );
    }

    #[test]
    fn retries_and_max_fails_out_of_range_are_rejected() {
        rejected(&listen_with("retries = 101"), "listen[0].retries", 4);
        rejected(&listen_with("max_fails = -1"), "listen[0].max_fails", 4);
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

    #[test]
    fn empty_paths_and_shared_files_are_rejected() {
        rejected(&master_with("log_file = \"\""), "master.log_file", 2);
        let msg = rejected(
            &master_with("pid_file = \"/tmp/x\"\ncontrol_socket = \"/tmp/x\""),
            "master.control_socket",
            3,
        );
        assert!(msg.contains("master.pid_file"), "{msg}");
    }

    #[test]
    fn empty_user_or_group_is_rejected() {
        rejected(&master_with("user = \"\""), "master.user", 2);
        rejected(&master_with("group = \"a b\""), "master.group", 2);
    }
}
