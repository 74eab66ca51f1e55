//! Owns validation of one list of servers (a listen's own `servers` or a named
//! pool's): each server's `addr` (not unspecified, not a listen's own bind),
//! `name`, `weight`, `backup`, `max_conns`, `slow_start` and its `health`
//! (merged over what the list inherits, then checked by `health.rs`); the
//! list's rule (not only backups); and, over every list of the listen, unique
//! addresses and labels. Whether a list may be missing or empty is up to
//! `pools.rs`. A new server key is added here (field in `raw/mod.rs`
//! `RawServer`, typed field in `mod.rs` `ServerConfig`).

use super::health::merge_health;
use super::{ADDR_EXPECTED, Result, Validator};
use crate::config::raw::{RawHealth, RawServer};
use crate::config::{HealthConfig, ServerConfig};
use std::net::SocketAddr;
use toml::Spanned;

/// Upper bound of a server's `weight`.
pub const MAX_WEIGHT: i64 = 1000;

/// What the servers of one list inherit.
pub(super) struct Inherit<'r> {
    /// The raw health table a server's own `health` is merged over (the
    /// listen's, or a pool's already merged over the listen's).
    pub raw_health: &'r RawHealth,
    /// The check of a server without its own `health`.
    pub health: Option<&'r HealthConfig>,
    /// The named pool of the list; `None` for the listen's own servers.
    pub pool: Option<&'r str>,
    /// The pool's `tls` (a server's own replaces it).
    pub tls: Option<&'r std::sync::Arc<crate::config::origin::OriginTls>>,
}

/// A listen's servers so far, flattened over its lists, with the key path of
/// each (`listen[0].servers[1]`, `listen[0].backend[0].servers[0]`) for the
/// duplicate errors.
#[derive(Default)]
pub(super) struct Flat {
    pub servers: Vec<ServerConfig>,
    pub paths: Vec<String>,
}

impl Validator<'_> {
    /// Validates the non-empty list `raw` at `key` and appends it to `flat`.
    pub(super) fn server_list(
        &self,
        key: &str,
        raw: &Spanned<Vec<Spanned<RawServer>>>,
        inherit: &Inherit<'_>,
        binds: &[Option<SocketAddr>],
        flat: &mut Flat,
    ) -> Result<()> {
        let start = flat.servers.len();
        for (j, s) in raw.get_ref().iter().enumerate() {
            let sp = format!("{key}[{j}]");
            let first = self.server(&sp, s, inherit, binds)?;
            let sr = s.get_ref();
            for server in super::resolve::expand(first) {
                // `addr` is present: `server` would have failed without it.
                let addr_span = sr
                    .addr
                    .as_ref()
                    .map(Spanned::span)
                    .unwrap_or_else(|| s.span());
                for (prev, prev_path) in flat.servers.iter().zip(&flat.paths) {
                    if prev.addr == server.addr && prev.dns.is_none() && server.dns.is_none() {
                        return Err(self.invalid_at(
                            &format!("{sp}.addr"),
                            &addr_span,
                            format!(
                                "duplicate server address '{}', already used by {prev_path}",
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
                                "duplicate server name '{}', already used by {prev_path}",
                                server.label()
                            ),
                        ));
                    }
                }
                flat.servers.push(server);
                flat.paths.push(sp.clone());
            }
        }
        if flat.servers[start..].iter().all(|s| s.backup) {
            return Err(self.invalid(
                key,
                raw,
                "every server is a backup, expected at least one server without backup = true"
                    .into(),
            ));
        }
        Ok(())
    }

    fn server(
        &self,
        sp: &str,
        spanned: &Spanned<RawServer>,
        inherit: &Inherit<'_>,
        binds: &[Option<SocketAddr>],
    ) -> Result<ServerConfig> {
        let s = spanned.get_ref();
        let dns = self.dns_spec(sp, spanned)?;
        let addr = match &dns {
            Some((_, placeholder)) => *placeholder,
            None => self.static_addr(sp, spanned, binds)?,
        };
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
                let merged = merge_health(inherit.raw_health, own.get_ref());
                Some(self.health(&format!("{sp}.health"), own, &merged)?)
            }
            None => inherit.health.cloned(),
        };
        Ok(ServerConfig {
            name,
            addr,
            weight,
            backup: s.backup.unwrap_or(false),
            max_conns,
            slow_start,
            health,
            pool: inherit.pool.map(str::to_string),
            send_proxy: self.send_proxy(sp, s)?,
            tls: self.server_tls(
                sp,
                s.tls.as_ref(),
                inherit.tls,
                s.addr.as_ref().map(|a| a.get_ref().as_str()),
            )?,
            dns: dns.map(|(spec, _)| crate::config::DnsSlot {
                spec: std::sync::Arc::new(spec),
                nth: 0,
            }),
        })
    }

    /// The `IP:PORT` of a server without `resolve`.
    fn static_addr(
        &self,
        sp: &str,
        spanned: &Spanned<RawServer>,
        binds: &[Option<SocketAddr>],
    ) -> Result<SocketAddr> {
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
        Ok(addr)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::validate::tests::{ok, rejected, servers};

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
    fn server_without_addr_is_rejected() {
        rejected(
            &servers(&[r#"{ name = "a" }"#]),
            "listen[0].servers[0].addr",
            4,
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
    fn server_pointing_at_a_later_listen_bind_is_rejected() {
        let src = concat!(
            "[[listen]]\nbind = \"127.0.0.1:8080\"\nservers = [{ addr = \"127.0.0.1:9090\" }]\n",
            "[[listen]]\nbind = \"127.0.0.1:9090\"\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
        );
        let msg = rejected(src, "listen[0].servers[0].addr", 3);
        assert!(msg.contains("listen[1].bind"), "{msg}");
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
}
