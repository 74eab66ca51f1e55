//! Owns validation of the `[[listen]]` sections: at least one, each with its
//! `bind` (no repeated or overlapping binds across listens), `name` (unique,
//! default: the bind text), `mode`, `balance`, `retries`, `timeouts` (whose
//! `header` and `server` are http only, and whose `idle` default depends on
//! the mode), `max_fails`, `fail_timeout` and `queue`, and the rule that a
//! `hash_key` on a header or cookie needs `source_hash`. The listen's `health`
//! goes to `health.rs`, its http settings to `http.rs`, its servers and pools
//! to `pools.rs` (and `server.rs`), its routes to `routes.rs`. A new
//! `[[listen]]` key is added here or in one of those (field in `raw/mod.rs`
//! `RawListen`, typed field in `mod.rs` `ListenConfig`).

use super::pools::Backends;
use super::{ADDR_EXPECTED, MAX_COUNT, Result, Validator};
use crate::config::raw::{RawListen, RawTimeouts};
use crate::config::{BalanceKind, ConfigError, HashKey, ListenConfig, Mode, QueueConfig, Timeouts};
use std::net::SocketAddr;
use std::time::Duration;
use toml::Spanned;

/// Upper bound of `queue.size`.
pub const MAX_QUEUE: i64 = 1_000_000;
/// Upper bound of `retries`.
pub const MAX_RETRIES: i64 = 100;
/// The accepted modes.
pub const MODES: &[&str] = &["tcp", "http"];

impl Validator<'_> {
    pub(super) fn listens(
        &self,
        raw: Option<&Spanned<Vec<Spanned<RawListen>>>>,
    ) -> Result<Vec<ListenConfig>> {
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
            Some(m) if m.get_ref() == "http" => Mode::Http,
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
            Some(b) => self.balance(&format!("{p}.balance"), b)?,
        };
        let retries = self.opt_u32(
            &format!("{p}.retries"),
            l.retries.as_ref(),
            0,
            MAX_RETRIES,
            2,
        )?;
        let timeouts = self.timeouts(&p, l, mode)?;
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
        let http = self.http_config(&p, l, mode)?;
        let Backends { servers, pools } =
            self.backends(&p, spanned, mode, balance, listen_health.as_ref(), binds)?;
        let routes = self.routes(&p, l, mode, &pools)?;
        if let Some(s) = &l.hash_key
            && http.hash_key != HashKey::Client
            && !pools.iter().any(|p| p.balance == BalanceKind::SourceHash)
        {
            return Err(self.invalid(
                &format!("{p}.hash_key"),
                s,
                format!(
                    "'{}' needs balance = \"source_hash\" (on the listen or one of its pools), this listen balances by {}",
                    s.get_ref().escape_debug(),
                    balance.name()
                ),
            ));
        }
        let dataplane = self.dataplane(&p, l, mode)?;
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
            http,
            pools,
            routes,
            client_limits: self.client_limits(&p, l)?,
            access_log: self.access_log(&p, l)?,
            accept_proxy: self.accept_proxy(&p, l)?,
            dataplane,
            sockmap_sndbuf: self.sockmap_sndbuf(&p, l, dataplane)?,
            defer_accept: l.defer_accept.as_ref().is_some_and(|d| *d.get_ref()),
            smart_connect: l.smart_connect.as_ref().is_some_and(|d| *d.get_ref()),
            tls: self.tls(&p, l)?,
        })
    }

    /// A `balance` name.
    pub(super) fn balance(&self, key: &str, b: &Spanned<String>) -> Result<BalanceKind> {
        BalanceKind::from_name(b.get_ref()).ok_or_else(|| {
            self.invalid(
                key,
                b,
                format!(
                    "unknown balance '{}', expected one of: {}",
                    b.get_ref().escape_debug(),
                    BalanceKind::NAMES.join(", ")
                ),
            )
        })
    }

    /// `timeouts = { connect, idle, header, server }`.
    fn timeouts(&self, p: &str, l: &RawListen, mode: Mode) -> Result<Timeouts> {
        let empty = RawTimeouts::default();
        let t = l.timeouts.as_ref().map_or(&empty, Spanned::get_ref);
        for (name, value) in [("header", &t.header), ("server", &t.server)] {
            // With TLS, `header` also bounds the handshake, in either mode.
            let tls_header = name == "header" && l.tls.is_some();
            if let Some(v) = value
                && !tls_header
            {
                self.http_only(&format!("{p}.timeouts.{name}"), v, mode)?;
            }
        }
        let idle = match mode {
            Mode::Tcp => Duration::from_secs(300),
            Mode::Http => Duration::from_secs(60),
        };
        let get = |name: &str, value: &Option<Spanned<String>>, default: Duration| {
            self.opt_duration(&format!("{p}.timeouts.{name}"), value.as_ref(), default)
        };
        Ok(Timeouts {
            connect: get("connect", &t.connect, Duration::from_secs(3))?,
            idle: get("idle", &t.idle, idle)?,
            header: get("header", &t.header, Duration::from_secs(10))?,
            server: get("server", &t.server, Duration::from_secs(30))?,
        })
    }
}

/// Why two binds cannot coexist, if they cannot.
pub(super) fn binds_clash(a: SocketAddr, b: SocketAddr) -> Option<&'static str> {
    if a == b {
        return Some("duplicates");
    }
    let same_family = a.is_ipv4() == b.is_ipv4();
    if a.port() == b.port() && same_family && (a.ip().is_unspecified() || b.ip().is_unspecified()) {
        return Some("overlaps (same port, one is a wildcard address)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::config::validate::tests::{BASE, http_with, listen_with, ok, rejected};
    use std::path::Path;

    #[test]
    fn every_balance_name_is_accepted() {
        for name in BalanceKind::NAMES {
            let c = ok(&listen_with(&format!("balance = \"{name}\"")));
            assert_eq!(c.listens[0].balance.name(), *name);
        }
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
    fn bind_on_port_zero_is_rejected() {
        rejected(
            "[[listen]]\nbind = \"127.0.0.1:0\"\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
            "listen[0].bind",
            2,
        );
    }

    #[test]
    fn unknown_mode_is_rejected_with_the_accepted_modes() {
        let msg = rejected(&listen_with("mode = \"udp\""), "listen[0].mode", 4);
        assert!(
            msg.contains("'udp'") && msg.contains("expected one of: tcp, http"),
            "{msg}"
        );
    }

    #[test]
    fn http_mode_is_accepted_with_its_timeout_defaults() {
        let c = ok(&http_with(""));
        let l = &c.listens[0];
        assert_eq!(l.mode, Mode::Http);
        assert_eq!(
            l.timeouts,
            Timeouts {
                connect: Duration::from_secs(3),
                idle: Duration::from_secs(60),
                header: Duration::from_secs(10),
                server: Duration::from_secs(30),
            }
        );
    }

    #[test]
    fn http_timeouts_are_read() {
        let c = ok(&http_with(
            "timeouts = { connect = \"1s\", idle = \"2m\", header = \"5s\", server = \"1m\" }",
        ));
        let t = c.listens[0].timeouts;
        assert_eq!(
            (t.connect, t.idle, t.header, t.server),
            (
                Duration::from_secs(1),
                Duration::from_secs(120),
                Duration::from_secs(5),
                Duration::from_secs(60)
            )
        );
    }

    #[test]
    fn zero_or_malformed_http_timeouts_are_rejected() {
        let msg = rejected(
            &http_with("timeouts = { header = \"0s\" }"),
            "listen[0].timeouts.header",
            5,
        );
        assert!(msg.contains("is zero"), "{msg}");
        let msg = rejected(
            &http_with("timeouts = { server = \"30\" }"),
            "listen[0].timeouts.server",
            5,
        );
        assert!(msg.contains("ms, s, m, h"), "{msg}");
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
}
