//! Owns the raw serde view of the tables only `mode = "http"` uses: `limits`
//! (with [`RawSize`], a byte count or a size string), the connection pool,
//! named server pools ([`RawBackend`]) and routes ([`RawRoute`]). Like the rest
//! of `raw`, every key is optional and unknown keys are rejected.
//!
//! One key has two shapes: a listen's `pool` is a table (`pool = { max_idle,
//! idle_timeout }`, the keep-alive connections to servers, also spelled
//! `idle_pool`) or an array of tables (`[[listen.pool]]`, named server pools,
//! also spelled `[[listen.backend]]`); TOML cannot give one key both shapes in
//! one listen. [`RawPool`] reads either. It is an untagged enum written by
//! hand: serde's `#[serde(untagged)]` buffers the value, which loses the
//! [`Spanned`] positions and replaces every error inside by "did not match any
//! variant".

use super::{RawHealth, RawServer};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use std::fmt;
use toml::Spanned;

/// `limits = { header_bytes, headers, uri_bytes }` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawLimits {
    /// `header_bytes = "16KiB"`.
    pub header_bytes: Option<Spanned<RawSize>>,
    /// `headers = 100`.
    pub headers: Option<Spanned<i64>>,
    /// `uri_bytes = "8KiB"`.
    pub uri_bytes: Option<Spanned<RawSize>>,
}

/// A listen's `pool` as written: see the module docs.
#[derive(Debug, Clone)]
pub enum RawPool {
    /// `pool = { max_idle, idle_timeout }`.
    Conn(RawConnPool),
    /// `[[listen.pool]]`: named server pools.
    Named(Vec<Spanned<RawBackend>>),
}

impl<'de> Deserialize<'de> for RawPool {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PoolVisitor;

        impl<'de> Visitor<'de> for PoolVisitor {
            type Value = RawPool;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table such as pool = { max_idle = 64 } or [[listen.pool]] sections")
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawPool, A::Error> {
                RawConnPool::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawPool::Conn)
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<RawPool, A::Error> {
                Vec::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(RawPool::Named)
            }
        }

        deserializer.deserialize_any(PoolVisitor)
    }
}

/// `pool = { max_idle, idle_timeout }` (or `idle_pool`) as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawConnPool {
    /// `max_idle = 64`.
    pub max_idle: Option<Spanned<i64>>,
    /// `idle_timeout = "30s"`.
    pub idle_timeout: Option<Spanned<String>>,
}

/// One `[[listen.backend]]` (or `[[listen.pool]]`) as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawBackend {
    /// `name = "api"`.
    pub name: Option<Spanned<String>>,
    /// `balance = "round_robin"`.
    pub balance: Option<Spanned<String>>,
    /// `servers = [ {...}, ... ]`.
    pub servers: Option<Spanned<Vec<Spanned<RawServer>>>>,
    /// `health = {...}`: merged over the listen's.
    pub health: Option<Spanned<RawHealth>>,
    /// `tls = { verify, ca, sni }`: the default of its servers.
    pub tls: Option<Spanned<super::RawOriginTls>>,
}

/// One `[[listen.route]]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawRoute {
    /// `host = "api.example.com"` or `"*.example.com"`.
    pub host: Option<Spanned<String>>,
    /// `path_prefix = "/v1"`.
    pub path_prefix: Option<Spanned<String>>,
    /// `pool = "api"`.
    pub pool: Option<Spanned<String>>,
}

/// A size as written: a byte count or a string with a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawSize {
    /// `header_bytes = 16384`.
    Bytes(i64),
    /// `header_bytes = "16KiB"`, not yet checked.
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        super::int_or_text::int_or_text(
            deserializer,
            "a number of bytes such as 16384 or a size string such as \"16KiB\"",
            RawSize::Bytes,
            RawSize::Text,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;
    use crate::config::raw::{RawListen, parse};

    fn listen(src: &str) -> RawListen {
        let raw = parse(src).unwrap_or_else(|e| panic!("valid: {e}"));
        raw.listen.expect("listen").get_ref()[0].get_ref().clone()
    }

    fn syntax_error(src: &str) -> (Option<String>, Option<usize>, String) {
        match parse(src) {
            Err(ConfigError::Syntax { key, line, message }) => (key, line, message),
            Err(other) => panic!("expected a syntax error, got {other}"),
            Ok(raw) => panic!("expected a syntax error, got {raw:?}"),
        }
    }

    #[test]
    fn every_http_key_is_accepted() {
        let l = listen(
            r#"
[[listen]]
mode = "http"
timeouts = { connect = "3s", idle = "60s", header = "10s", server = "30s" }
limits = { header_bytes = "16KiB", headers = 100, uri_bytes = 8192 }
forwarded = ["x-forwarded-for", "x-forwarded-proto", "forwarded"]
idle_pool = { max_idle = 64, idle_timeout = "30s" }
hash_key = "header:X-User"

[[listen.pool]]
name = "api"
balance = "round_robin"
servers = [{ addr = "10.0.0.21:7001" }]
health = { kind = "http", path = "/health" }

[[listen.route]]
host = "api.example.com"
path_prefix = "/v1"
pool = "api"
"#,
        );
        let limits = l.limits.expect("limits").into_inner();
        assert_eq!(
            limits.header_bytes.map(Spanned::into_inner),
            Some(RawSize::Text("16KiB".into()))
        );
        assert_eq!(
            limits.uri_bytes.map(Spanned::into_inner),
            Some(RawSize::Bytes(8192))
        );
        assert_eq!(l.forwarded.expect("forwarded").get_ref().len(), 3);
        match l.pool.expect("pool").into_inner() {
            RawPool::Named(pools) => assert_eq!(
                pools[0]
                    .get_ref()
                    .name
                    .as_ref()
                    .map(|n| n.get_ref().as_str()),
                Some("api")
            ),
            other => panic!("expected named pools, got {other:?}"),
        }
        assert_eq!(l.route.expect("route").get_ref().len(), 1);
        let t = l.timeouts.expect("timeouts").into_inner();
        assert!(t.header.is_some() && t.server.is_some());
    }

    #[test]
    fn pool_as_a_table_is_the_connection_pool() {
        for src in [
            "[[listen]]\npool = { max_idle = 3 }\n",
            "[[listen]]\n[listen.pool]\nmax_idle = 3\n",
        ] {
            match listen(src).pool.map(Spanned::into_inner) {
                Some(RawPool::Conn(c)) => {
                    assert_eq!(c.max_idle.map(Spanned::into_inner), Some(3))
                }
                other => panic!("expected a connection pool, got {other:?}"),
            }
        }
    }

    #[test]
    fn errors_inside_either_pool_shape_are_named_with_their_line() {
        let (key, line, message) = syntax_error("[[listen]]\npool = { max_idl = 3 }\n");
        assert_eq!(key.as_deref(), Some("listen[0].pool.max_idl"));
        assert_eq!(line, Some(2));
        assert!(message.contains("unknown field `max_idl`"), "{message}");
        let (key, line, message) =
            syntax_error("[[listen]]\n[[listen.pool]]\nname = \"a\"\nservrs = []\n");
        assert_eq!(key.as_deref(), Some("listen[0].pool[0].servrs"));
        assert_eq!(line, Some(4));
        assert!(message.contains("unknown field `servrs`"), "{message}");
        let (key, _, message) = syntax_error("[[listen]]\npool = 3\n");
        assert_eq!(key.as_deref(), Some("listen[0].pool"));
        assert!(message.contains("[[listen.pool]]"), "{message}");
    }

    #[test]
    fn size_of_the_wrong_type_is_a_syntax_error() {
        let (key, line, message) = syntax_error("[[listen]]\nlimits = { header_bytes = true }\n");
        assert_eq!(key.as_deref(), Some("listen[0].limits.header_bytes"));
        assert_eq!(line, Some(2));
        assert!(message.contains("\"16KiB\""), "{message}");
    }

    #[test]
    fn unknown_route_key_is_named() {
        let (key, line, _) = syntax_error("[[listen]]\n[[listen.route]]\nhots = \"a\"\n");
        assert_eq!(key.as_deref(), Some("listen[0].route[0].hots"));
        assert_eq!(line, Some(3));
    }
}
