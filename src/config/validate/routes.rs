//! Owns validation of a listen's `[[listen.route]]` sections (`mode = "http"`
//! only): each route's `host` (a host name or `*.` and a domain, no port),
//! `path_prefix` (starts with `/`), at least one of the two, and `pool` (the
//! name of one of the listen's pools, `"default"` included), in file order.
//! A route that repeats an earlier one's host and prefix could never match
//! and is rejected. A new route key is added here (field in `raw/http.rs`
//! `RawRoute`, typed field in `mod.rs` `RouteConfig`).

use super::pools::DEFAULT_POOL;
use super::{Result, Validator};
use crate::config::raw::RawListen;
use crate::config::{HostMatch, Mode, PoolConfig, RouteConfig};
use std::net::Ipv6Addr;
use toml::Spanned;

impl Validator<'_> {
    pub(super) fn routes(
        &self,
        p: &str,
        l: &RawListen,
        mode: Mode,
        pools: &[PoolConfig],
    ) -> Result<Vec<RouteConfig>> {
        let Some(raw) = &l.route else {
            return Ok(Vec::new());
        };
        self.http_only(&format!("{p}.route"), raw, mode)?;
        let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
        let mut out: Vec<RouteConfig> = Vec::with_capacity(raw.get_ref().len());
        for (i, spanned) in raw.get_ref().iter().enumerate() {
            let rp = format!("{p}.route[{i}]");
            let r = spanned.get_ref();
            let host = match &r.host {
                Some(h) => Some(self.host_match(&format!("{rp}.host"), h)?),
                None => None,
            };
            let path_prefix = match &r.path_prefix {
                Some(s) => Some(self.path_prefix(&format!("{rp}.path_prefix"), s)?),
                None => None,
            };
            if host.is_none() && path_prefix.is_none() {
                return Err(self.invalid(
                    &rp,
                    spanned,
                    "neither host nor path_prefix is set, expected at least one, such as host = \"api.example.com\" or path_prefix = \"/v1\"".into(),
                ));
            }
            let key = format!("{rp}.pool");
            let expected = format!("expected one of this listen's pools: {}", names.join(", "));
            let Some(raw_pool) = &r.pool else {
                return Err(self.invalid(&key, spanned, format!("missing, {expected}")));
            };
            let Some(pool) = names.iter().position(|n| *n == raw_pool.get_ref()) else {
                return Err(self.invalid(
                    &key,
                    raw_pool,
                    format!(
                        "unknown pool '{}', {expected}",
                        raw_pool.get_ref().escape_debug()
                    ),
                ));
            };
            if pools[pool].servers.is_empty() {
                return Err(self.invalid(
                    &key,
                    raw_pool,
                    format!(
                        "pool '{DEFAULT_POOL}' has no servers: this listen's own servers are empty"
                    ),
                ));
            }
            let route = RouteConfig {
                host,
                path_prefix,
                pool,
            };
            if let Some(k) = out
                .iter()
                .position(|o| o.host == route.host && o.path_prefix == route.path_prefix)
            {
                return Err(self.invalid(
                    &rp,
                    spanned,
                    format!(
                        "same host and path_prefix as {p}.route[{k}], which always matches first"
                    ),
                ));
            }
            out.push(route);
        }
        Ok(out)
    }

    fn host_match(&self, key: &str, s: &Spanned<String>) -> Result<HostMatch> {
        let lower = s.get_ref().to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid = is_host_name(name) || (!wildcard && is_ipv6_literal(name));
        if !valid {
            return Err(self.invalid(
                key,
                s,
                format!(
                    "invalid host '{}', expected a host name without a port such as \"api.example.com\", or \"*.example.com\" for its subdomains",
                    s.get_ref().escape_debug()
                ),
            ));
        }
        Ok(if wildcard {
            HostMatch::Suffix(format!(".{name}"))
        } else {
            HostMatch::Exact(name.to_string())
        })
    }

    fn path_prefix(&self, key: &str, s: &Spanned<String>) -> Result<String> {
        let text = s.get_ref();
        let valid = text.starts_with('/')
            && text
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b'?' && b != b'#');
        if !valid {
            return Err(self.invalid(
                key,
                s,
                format!(
                    "invalid path_prefix '{}', expected a path starting with '/' without spaces, '?' or '#', such as \"/v1\"",
                    text.escape_debug()
                ),
            ));
        }
        Ok(text.clone())
    }
}

/// Dot-separated labels of letters, digits, `-` and `_` (an IPv4 address is
/// one too).
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `[::1]`: an IPv6 address in brackets, as a Host header writes it.
fn is_ipv6_literal(name: &str) -> bool {
    name.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .is_some_and(|inner| inner.parse::<Ipv6Addr>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::tests::{http_with, listen_with, ok, rejected};

    const API: &str =
        "[[listen.backend]]\nname = \"api\"\nservers = [{ addr = \"127.0.0.1:7001\" }]\n";

    /// An http listen with pool `api` (lines 1-7), then `extra` from line 8.
    fn with_api(extra: &str) -> String {
        http_with(&format!("{API}{extra}"))
    }

    #[test]
    fn routes_keep_their_order_and_resolve_pool_names() {
        let c = ok(&with_api(concat!(
            "[[listen.route]]\nhost = \"API.Example.com\"\npath_prefix = \"/v1\"\npool = \"api\"\n",
            "[[listen.route]]\nhost = \"*.Example.com\"\npool = \"default\"\n",
            "[[listen.route]]\npath_prefix = \"/static/\"\npool = \"api\"\n",
            "[[listen.route]]\nhost = \"[::1]\"\npool = \"api\"\n",
        )));
        let r = &c.listens[0].routes;
        assert_eq!(
            r[0],
            RouteConfig {
                host: Some(HostMatch::Exact("api.example.com".into())),
                path_prefix: Some("/v1".into()),
                pool: 1
            }
        );
        assert_eq!(
            r[1],
            RouteConfig {
                host: Some(HostMatch::Suffix(".example.com".into())),
                path_prefix: None,
                pool: 0
            }
        );
        assert_eq!(
            (r[2].host.as_ref(), r[2].path_prefix.as_deref()),
            (None, Some("/static/"))
        );
        assert_eq!(r[3].host, Some(HostMatch::Exact("[::1]".into())));
        assert!(ok(&listen_with("")).listens[0].routes.is_empty());
    }

    #[test]
    fn route_without_host_or_path_prefix_is_rejected() {
        let msg = rejected(
            &with_api("[[listen.route]]\npool = \"api\""),
            "listen[0].route[0]",
            8,
        );
        assert!(msg.contains("at least one"), "{msg}");
    }

    #[test]
    fn route_to_a_missing_or_unknown_pool_is_rejected_with_the_pool_names() {
        let msg = rejected(
            &with_api("[[listen.route]]\nhost = \"a.com\""),
            "listen[0].route[0].pool",
            8,
        );
        assert!(
            msg.contains("missing") && msg.contains("default, api"),
            "{msg}"
        );
        let msg = rejected(
            &with_api("[[listen.route]]\nhost = \"a.com\"\npool = \"web\""),
            "listen[0].route[0].pool",
            10,
        );
        assert!(
            msg.contains("unknown pool 'web'") && msg.contains("default, api"),
            "{msg}"
        );
    }

    #[test]
    fn route_to_an_empty_default_pool_is_rejected() {
        let src = format!(
            "[[listen]]\nbind = \"127.0.0.1:8080\"\nmode = \"http\"\n{API}[[listen.route]]\nhost = \"a.com\"\npool = \"default\"\n"
        );
        let msg = rejected(&src, "listen[0].route[0].pool", 9);
        assert!(msg.contains("no servers"), "{msg}");
    }

    #[test]
    fn invalid_hosts_are_rejected() {
        for host in [
            "",
            "a.com:80",
            "*",
            "*.",
            "a..com",
            "a b.com",
            "*.*.a.com",
            "http://a.com",
            "[::1",
        ] {
            let msg = rejected(
                &with_api(&format!(
                    "[[listen.route]]\nhost = \"{host}\"\npool = \"api\""
                )),
                "listen[0].route[0].host",
                9,
            );
            assert!(msg.contains("*.example.com"), "{msg}");
        }
    }

    #[test]
    fn invalid_path_prefixes_are_rejected() {
        for prefix in ["", "v1", "/a b", "/a?b", "/a#b"] {
            let msg = rejected(
                &with_api(&format!(
                    "[[listen.route]]\npath_prefix = \"{prefix}\"\npool = \"api\""
                )),
                "listen[0].route[0].path_prefix",
                9,
            );
            assert!(msg.contains("starting with '/'"), "{msg}");
        }
    }

    #[test]
    fn repeated_route_is_rejected() {
        let r = "[[listen.route]]\nhost = \"a.com\"\npool = \"api\"\n";
        let msg = rejected(&with_api(&format!("{r}{r}")), "listen[0].route[1]", 11);
        assert!(msg.contains("listen[0].route[0]"), "{msg}");
    }

    #[test]
    fn routes_in_a_tcp_listen_are_rejected() {
        let msg = rejected(
            &listen_with("[[listen.route]]\nhost = \"a.com\"\npool = \"default\""),
            "listen[0].route",
            4,
        );
        assert!(msg.contains("only with mode = \"http\""), "{msg}");
    }
}
