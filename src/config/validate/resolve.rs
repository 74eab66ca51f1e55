//! Owns validation of servers found by DNS: a server's `resolve` (at least
//! [`MIN_RESOLVE`]) and `max` (1..=[`MAX_SLOTS`], default [`DEFAULT_SLOTS`]),
//! its `addr` read as `NAME:PORT` (A/AAAA) or `_service._proto.NAME` (SRV),
//! and the top-level `[resolver]` (`nameservers`, `timeout`). Nothing here
//! asks DNS: `lbctl check` validates the syntax only, so a file checks the
//! same on a machine that cannot reach the nameservers.

use super::{Result, Validator};
use crate::config::raw::{RawResolver, RawServer};
use crate::config::{DnsSlot, DnsSpec, Lookup, ResolverConfig, ServerConfig};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use toml::Spanned;

/// Shortest `resolve` interval accepted.
pub const MIN_RESOLVE: Duration = Duration::from_secs(1);
/// Slots of an entry without `max`.
pub const DEFAULT_SLOTS: usize = 8;
/// Upper bound of `max`.
pub const MAX_SLOTS: i64 = 256;
/// Default `[resolver] timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Nameservers in `[resolver] nameservers` at most.
pub const MAX_NAMESERVERS: usize = 8;

const NAME_EXPECTED: &str = "expected NAME:PORT such as \"api.internal:8080\" or an SRV \
                             name such as \"_http._tcp.api.internal\"";

impl Validator<'_> {
    /// `[resolver]`; defaults when the section is absent.
    pub(super) fn resolver(&self, raw: Option<&Spanned<RawResolver>>) -> Result<ResolverConfig> {
        let Some(raw) = raw else {
            return Ok(ResolverConfig {
                nameservers: Vec::new(),
                timeout: DEFAULT_TIMEOUT,
            });
        };
        let r = raw.get_ref();
        let timeout = self.opt_duration("resolver.timeout", r.timeout.as_ref(), DEFAULT_TIMEOUT)?;
        let mut nameservers = Vec::new();
        if let Some(list) = &r.nameservers {
            if list.get_ref().len() > MAX_NAMESERVERS {
                return Err(self.invalid(
                    "resolver.nameservers",
                    list,
                    format!("more than {MAX_NAMESERVERS} nameservers"),
                ));
            }
            for (i, ns) in list.get_ref().iter().enumerate() {
                let key = format!("resolver.nameservers[{i}]");
                let text = ns.get_ref();
                let addr = match (text.parse::<SocketAddr>(), text.parse::<IpAddr>()) {
                    (Ok(a), _) if a.port() != 0 => a,
                    (_, Ok(ip)) => SocketAddr::new(ip, 53),
                    _ => {
                        return Err(self.invalid(
                            &key,
                            ns,
                            format!(
                                "invalid nameserver '{}', expected IP or IP:PORT such as \
                                 \"127.0.0.1:5353\"",
                                text.escape_debug()
                            ),
                        ));
                    }
                };
                if addr.ip().is_unspecified() {
                    return Err(self.invalid(
                        &key,
                        ns,
                        format!("'{addr}' is an unspecified address"),
                    ));
                }
                nameservers.push(addr);
            }
        }
        Ok(ResolverConfig {
            nameservers,
            timeout,
        })
    }

    /// The DNS entry of server `sp`, or `None` without `resolve`; also the
    /// placeholder address its slots carry (never connected to).
    pub(super) fn dns_spec(
        &self,
        sp: &str,
        spanned: &Spanned<RawServer>,
    ) -> Result<Option<(DnsSpec, SocketAddr)>> {
        let s = spanned.get_ref();
        let Some(every) = &s.resolve else {
            if let Some(max) = &s.max {
                return Err(self.invalid(
                    &format!("{sp}.max"),
                    max,
                    "max is the slot count of a server with resolve, and this one has none".into(),
                ));
            }
            return Ok(None);
        };
        let key = format!("{sp}.resolve");
        let every_d = self.duration(&key, every, false)?;
        if every_d < MIN_RESOLVE {
            return Err(self.invalid(
                &key,
                every,
                format!(
                    "'{}' is below the minimum of 1s between two lookups",
                    every.get_ref().escape_debug()
                ),
            ));
        }
        let max = match &s.max {
            Some(n) => self.int(&format!("{sp}.max"), n, 1, MAX_SLOTS)? as usize,
            None => DEFAULT_SLOTS,
        };
        let addr_key = format!("{sp}.addr");
        let Some(raw_addr) = &s.addr else {
            return Err(self.invalid(&addr_key, spanned, format!("missing, {NAME_EXPECTED}")));
        };
        let text = raw_addr.get_ref().trim();
        let bad = |why: &str| {
            self.invalid(
                &addr_key,
                raw_addr,
                format!("'{}' {why}, {NAME_EXPECTED}", text.escape_debug()),
            )
        };
        if text.parse::<SocketAddr>().is_ok() {
            return Err(bad(
                "is an IP address, which resolve has nothing to look up in",
            ));
        }
        let (lookup, port) = if text.starts_with('_') {
            let name = normalise(text).ok_or_else(|| bad("is no valid DNS name"))?;
            let labels: Vec<&str> = name.split('.').collect();
            if labels.len() < 3 || !labels[1].starts_with('_') {
                return Err(bad("is no SRV name (_service._proto.name)"));
            }
            (Lookup::Srv { name }, 0)
        } else {
            let Some((host, port)) = text.rsplit_once(':') else {
                return Err(bad("has no port"));
            };
            let port: u16 = match port.parse() {
                Ok(p) if p != 0 => p,
                _ => return Err(bad("has no valid port (1-65535)")),
            };
            let name = normalise(host).ok_or_else(|| bad("is no valid DNS name"))?;
            (Lookup::Host { name, port }, port)
        };
        let placeholder = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port);
        Ok(Some((
            DnsSpec {
                lookup,
                every: every_d,
                max,
            },
            placeholder,
        )))
    }
}

/// The servers one validated entry stands for: itself, or its `max` slots
/// (named `LABEL#n`, LABEL its `name`, else its `addr` as written).
pub(super) fn expand(server: ServerConfig) -> Vec<ServerConfig> {
    let Some(dns) = server.dns.clone() else {
        return vec![server];
    };
    let base = server
        .name
        .clone()
        .unwrap_or_else(|| dns.spec.lookup.text());
    (0..dns.spec.max)
        .map(|nth| ServerConfig {
            name: Some(format!("{base}#{}", nth + 1)),
            dns: Some(DnsSlot {
                spec: dns.spec.clone(),
                nth,
            }),
            ..server.clone()
        })
        .collect()
}

/// `name` lower case without its final dot, if it is a DNS name: labels of
/// 1..=63 letters, digits, `-` and `_`, 253 characters at most.
fn normalise(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then_some(name)
}

#[cfg(test)]
mod tests {
    use crate::config::Lookup;
    use crate::config::validate::tests::{ok, rejected, servers};

    #[test]
    fn a_resolved_name_expands_into_max_empty_slots() {
        let c = ok(&servers(&[
            r#"{ addr = "127.0.0.1:1" }"#,
            r#"{ addr = "API.internal.:8080", resolve = "10s", max = 3 }"#,
        ]));
        let s = &c.listens[0].servers;
        assert_eq!(s.len(), 4);
        let dns = s[1].dns.as_ref().expect("a dns slot");
        assert_eq!(
            dns.spec.lookup,
            Lookup::Host {
                name: "api.internal".into(),
                port: 8080
            }
        );
        assert_eq!(s[3].dns.as_ref().map(|d| d.nth), Some(2));
        assert_eq!(s[3].label(), "api.internal:8080#3");
        assert!(c.resolver.nameservers.is_empty());
    }

    #[test]
    fn an_srv_name_needs_no_port_and_resolver_nameservers_take_one() {
        let src = format!(
            "[resolver]\nnameservers = [\"127.0.0.1:5353\", \"::1\"]\n{}",
            servers(&[r#"{ addr = "_http._tcp.api.internal", resolve = "5s", name = "api" }"#])
        );
        let c = ok(&src);
        let s = &c.listens[0].servers;
        assert_eq!(s.len(), 8, "default max");
        assert_eq!(s[0].label(), "api#1");
        assert_eq!(
            c.resolver.nameservers,
            vec![
                "127.0.0.1:5353".parse().expect("addr"),
                "[::1]:53".parse().expect("addr")
            ]
        );
    }

    #[test]
    fn bad_resolve_entries_name_their_key() {
        let one = |s: &str| servers(&[s]);
        rejected(
            &one(r#"{ addr = "api:80", resolve = "100ms" }"#),
            "listen[0].servers[0].resolve",
            4,
        );
        rejected(
            &one(r#"{ addr = "api", resolve = "10s" }"#),
            "listen[0].servers[0].addr",
            4,
        );
        rejected(
            &one(r#"{ addr = "api:0", resolve = "10s" }"#),
            "listen[0].servers[0].addr",
            4,
        );
        rejected(
            &one(r#"{ addr = "a..b:80", resolve = "10s" }"#),
            "listen[0].servers[0].addr",
            4,
        );
        rejected(
            &one(r#"{ addr = "127.0.0.1:80", resolve = "10s" }"#),
            "listen[0].servers[0].addr",
            4,
        );
        rejected(
            &one(r#"{ addr = "_http.api", resolve = "10s" }"#),
            "listen[0].servers[0].addr",
            4,
        );
        rejected(
            &one(r#"{ addr = "api:80", resolve = "10s", max = 0 }"#),
            "listen[0].servers[0].max",
            4,
        );
        rejected(
            &one(r#"{ addr = "127.0.0.1:80", max = 2 }"#),
            "listen[0].servers[0].max",
            4,
        );
        let src = format!(
            "[resolver]\nnameservers = [\"x\"]\n{}",
            one(r#"{ addr = "127.0.0.1:1" }"#)
        );
        rejected(&src, "resolver.nameservers[0]", 2);
    }
}
