//! Owns validation of a listen's `mode = "http"` settings: `limits` (sizes in
//! bytes or with a unit, see `config/size.rs`), `forwarded`
//! ([`FORWARDED_HEADERS`]), the connection pool `pool = {...}` (or
//! `idle_pool`) and `hash_key`, into an [`HttpConfig`]; and the rule shared by
//! every http key: set in a listen that is not `mode = "http"`, it is rejected
//! ([`Validator::http_only`]). A new http key of a listen is added here (field
//! in `raw/http.rs` or `raw/mod.rs` `RawListen`, typed field in `mod.rs`
//! `HttpConfig`). Named pools are in `pools.rs`, routes in `routes.rs`.

use super::{Result, Validator};
use crate::config::raw::{RawConnPool, RawLimits, RawListen, RawPool, RawSize, line_of_span};
use crate::config::{ConnPool, Forwarded, HashKey, HttpConfig, HttpLimits, Mode, size};
use toml::Spanned;

/// The accepted `forwarded` header names (compared case-insensitively).
pub const FORWARDED_HEADERS: &[&str] = &["x-forwarded-for", "x-forwarded-proto", "forwarded"];
/// Bounds of `limits.header_bytes`.
pub const HEADER_BYTES: (usize, usize) = (1024, 1024 * 1024);
/// Upper bound of `limits.headers`.
pub const MAX_HEADERS: i64 = 1000;
/// Lower bound of `limits.uri_bytes` (the upper one is `header_bytes`).
pub const MIN_URI_BYTES: usize = 16;
/// Upper bound of `pool.max_idle`.
pub const MAX_IDLE_CONNS: i64 = 10_000;

const HASH_KEY_EXPECTED: &str = "expected \"client\", \"header:NAME\" such as \"header:X-User\", or \"cookie:NAME\" such as \"cookie:sid\"";

impl Validator<'_> {
    /// Rejects `key`, written at `at`, unless the listen is `mode = "http"`.
    pub(super) fn http_only<T>(&self, key: &str, at: &Spanned<T>, mode: Mode) -> Result<()> {
        if mode == Mode::Http {
            return Ok(());
        }
        let name = key.rsplit('.').next().unwrap_or(key);
        Err(self.invalid(
            key,
            at,
            format!("'{name}' is allowed only with mode = \"http\", this listen is mode = \"tcp\""),
        ))
    }

    /// `limits`, `forwarded`, `pool`/`idle_pool` (as a table) and `hash_key`.
    pub(super) fn http_config(&self, p: &str, l: &RawListen, mode: Mode) -> Result<HttpConfig> {
        let limits = match &l.limits {
            Some(t) => {
                self.http_only(&format!("{p}.limits"), t, mode)?;
                self.limits(&format!("{p}.limits"), t.get_ref())?
            }
            None => HttpLimits::default(),
        };
        let forwarded = match &l.forwarded {
            Some(list) => {
                self.http_only(&format!("{p}.forwarded"), list, mode)?;
                self.forwarded(&format!("{p}.forwarded"), list)?
            }
            None => Forwarded::default(),
        };
        let pool = self.conn_pool(p, l, mode)?;
        let hash_key = match &l.hash_key {
            Some(s) => {
                let key = format!("{p}.hash_key");
                let hash_key = self.hash_key(&key, s)?;
                if hash_key != HashKey::Client {
                    self.http_only(&key, s, mode)?;
                }
                hash_key
            }
            None => HashKey::Client,
        };
        Ok(HttpConfig {
            limits,
            forwarded,
            pool,
            hash_key,
        })
    }

    fn limits(&self, key: &str, t: &RawLimits) -> Result<HttpLimits> {
        let d = HttpLimits::default();
        let (min, max) = HEADER_BYTES;
        let header_bytes = match &t.header_bytes {
            Some(s) => self.size(&format!("{key}.header_bytes"), s, min, max, &fmt_size(max))?,
            None => d.header_bytes,
        };
        let headers = match &t.headers {
            Some(n) => self.int(&format!("{key}.headers"), n, 1, MAX_HEADERS)? as usize,
            None => d.headers,
        };
        let uri_bytes = match &t.uri_bytes {
            Some(s) => self.size(
                &format!("{key}.uri_bytes"),
                s,
                MIN_URI_BYTES,
                header_bytes,
                &format!("header_bytes ({})", fmt_size(header_bytes)),
            )?,
            None => d.uri_bytes.min(header_bytes),
        };
        Ok(HttpLimits {
            header_bytes,
            headers,
            uri_bytes,
        })
    }

    /// A size in `min..=max`; `max_text` is how the error names the maximum.
    pub(super) fn size(
        &self,
        key: &str,
        s: &Spanned<RawSize>,
        min: usize,
        max: usize,
        max_text: &str,
    ) -> Result<usize> {
        let (bytes, shown) = match s.get_ref() {
            RawSize::Bytes(n) => (u64::try_from(*n).ok(), n.to_string()),
            RawSize::Text(t) => {
                let b = size::parse(t).map_err(|e| self.invalid(key, s, e.to_string()))?;
                (Some(b), format!("'{t}' ({b} bytes)"))
            }
        };
        match bytes.and_then(|b| usize::try_from(b).ok()) {
            Some(b) if (min..=max).contains(&b) => Ok(b),
            _ => Err(self.invalid(
                key,
                s,
                format!(
                    "{shown} is out of range, expected a size from {} to {max_text}",
                    fmt_size(min)
                ),
            )),
        }
    }

    fn forwarded(&self, key: &str, list: &Spanned<Vec<Spanned<String>>>) -> Result<Forwarded> {
        let mut f = Forwarded {
            xff: false,
            xfp: false,
            rfc7239: false,
        };
        for (i, name) in list.get_ref().iter().enumerate() {
            let k = format!("{key}[{i}]");
            let slot = match name.get_ref().to_ascii_lowercase().as_str() {
                "x-forwarded-for" => &mut f.xff,
                "x-forwarded-proto" => &mut f.xfp,
                "forwarded" => &mut f.rfc7239,
                _ => {
                    return Err(self.invalid(
                        &k,
                        name,
                        format!(
                            "unknown forwarded header '{}', expected any of: {} ([] for none)",
                            name.get_ref().escape_debug(),
                            FORWARDED_HEADERS.join(", ")
                        ),
                    ));
                }
            };
            if *slot {
                return Err(self.invalid(
                    &k,
                    name,
                    format!("'{}' is listed twice", name.get_ref().escape_debug()),
                ));
            }
            *slot = true;
        }
        Ok(f)
    }

    /// `pool = {...}` or `idle_pool = {...}`; `pool` as an array is a list of
    /// named pools (`pools.rs`).
    fn conn_pool(&self, p: &str, l: &RawListen, mode: Mode) -> Result<ConnPool> {
        let as_table = l.pool.as_ref().and_then(|s| match s.get_ref() {
            RawPool::Conn(c) => Some((s, c)),
            RawPool::Named(_) => None,
        });
        let table: Option<(String, &RawConnPool)> = match (as_table, &l.idle_pool) {
            (Some((pool, _)), Some(idle)) => {
                return Err(self.invalid(
                    &format!("{p}.idle_pool"),
                    idle,
                    format!(
                        "both pool (line {}) and idle_pool are given, they are one table by two names: keep one",
                        line_of_span(self.src, &pool.span())
                    ),
                ));
            }
            (Some((pool, c)), None) => {
                self.http_only(&format!("{p}.pool"), pool, mode)?;
                Some((format!("{p}.pool"), c))
            }
            (None, Some(idle)) => {
                self.http_only(&format!("{p}.idle_pool"), idle, mode)?;
                Some((format!("{p}.idle_pool"), idle.get_ref()))
            }
            (None, None) => None,
        };
        let d = ConnPool::default();
        let Some((key, t)) = table else {
            return Ok(d);
        };
        Ok(ConnPool {
            max_idle: match &t.max_idle {
                Some(n) => self.int(&format!("{key}.max_idle"), n, 0, MAX_IDLE_CONNS)? as usize,
                None => d.max_idle,
            },
            idle_timeout: self.opt_duration(
                &format!("{key}.idle_timeout"),
                t.idle_timeout.as_ref(),
                d.idle_timeout,
            )?,
        })
    }

    fn hash_key(&self, key: &str, s: &Spanned<String>) -> Result<HashKey> {
        let text = s.get_ref();
        if text == "client" {
            return Ok(HashKey::Client);
        }
        let (kind, name) = match text.split_once(':') {
            Some((kind @ ("header" | "cookie"), name)) => (kind, name),
            _ => {
                return Err(self.invalid(
                    key,
                    s,
                    format!(
                        "unknown hash_key '{}', {HASH_KEY_EXPECTED}",
                        text.escape_debug()
                    ),
                ));
            }
        };
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(self.invalid(
                key,
                s,
                format!(
                    "invalid {kind} name '{}' in '{}', expected a name of letters, digits and !#$%&'*+-.^_`|~; {HASH_KEY_EXPECTED}",
                    name.escape_debug(),
                    text.escape_debug()
                ),
            ));
        }
        Ok(match kind {
            "header" => HashKey::Header(name.to_ascii_lowercase()),
            _ => HashKey::Cookie(name.to_string()),
        })
    }
}

/// A `tchar` of RFC 9110 (header names and cookie names are tokens).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn fmt_size(bytes: usize) -> String {
    size::format(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::tests::{http_with, listen_with, ok, rejected};
    use std::time::Duration;

    #[test]
    fn http_defaults_apply_when_no_key_is_set() {
        let c = ok(&http_with(""));
        assert_eq!(c.listens[0].http, HttpConfig::default());
        let h = &c.listens[0].http;
        assert_eq!(
            (h.limits.header_bytes, h.limits.headers, h.limits.uri_bytes),
            (16384, 100, 8192)
        );
        assert_eq!(
            (h.forwarded.xff, h.forwarded.xfp, h.forwarded.rfc7239),
            (true, true, false)
        );
        assert_eq!(
            (h.pool.max_idle, h.pool.idle_timeout),
            (64, Duration::from_secs(30))
        );
        assert_eq!(h.hash_key, HashKey::Client);
        // And the same defaults in mode = "tcp".
        assert_eq!(ok(&listen_with("")).listens[0].http, HttpConfig::default());
    }

    #[test]
    fn limits_accept_integers_and_every_size_unit() {
        let c = ok(&http_with(
            "limits = { header_bytes = \"32KiB\", headers = 1000, uri_bytes = 16 }",
        ));
        let l = c.listens[0].http.limits;
        assert_eq!((l.header_bytes, l.headers, l.uri_bytes), (32768, 1000, 16));
        for (text, bytes) in [
            ("2048", 2048),
            ("\"1024B\"", 1024),
            ("\"2K\"", 2048),
            ("\"2KB\"", 2000),
            ("\"1M\"", 1 << 20),
            ("\"1MiB\"", 1 << 20),
            ("\"1MB\"", 1_000_000),
        ] {
            let c = ok(&http_with(&format!("limits = {{ header_bytes = {text} }}")));
            assert_eq!(c.listens[0].http.limits.header_bytes, bytes, "{text}");
        }
    }

    #[test]
    fn default_uri_bytes_shrinks_to_a_smaller_header_bytes() {
        let c = ok(&http_with("limits = { header_bytes = \"4KiB\" }"));
        assert_eq!(c.listens[0].http.limits.uri_bytes, 4096);
    }

    #[test]
    fn header_bytes_out_of_range_is_rejected() {
        let key = "listen[0].limits.header_bytes";
        let msg = rejected(&http_with("limits = { header_bytes = 1023 }"), key, 5);
        assert!(msg.contains("1023 is out of range"), "{msg}");
        assert!(msg.contains("from 1KiB to 1MiB"), "{msg}");
        let msg = rejected(&http_with("limits = { header_bytes = \"2MiB\" }"), key, 5);
        assert!(msg.contains("'2MiB' (2097152 bytes)"), "{msg}");
        rejected(&http_with("limits = { header_bytes = -1 }"), key, 5);
    }

    #[test]
    fn malformed_size_is_rejected_with_the_accepted_units() {
        let msg = rejected(
            &http_with("limits = { header_bytes = \"16kb\" }"),
            "listen[0].limits.header_bytes",
            5,
        );
        assert!(
            msg.contains("'16kb'") && msg.contains("B, KiB, MiB"),
            "{msg}"
        );
    }

    #[test]
    fn headers_out_of_range_is_rejected() {
        let key = "listen[0].limits.headers";
        rejected(&http_with("limits = { headers = 0 }"), key, 5);
        let msg = rejected(&http_with("limits = { headers = 1001 }"), key, 5);
        assert!(msg.contains("from 1 to 1000"), "{msg}");
    }

    #[test]
    fn uri_bytes_above_header_bytes_or_below_16_is_rejected() {
        let key = "listen[0].limits.uri_bytes";
        let msg = rejected(
            &http_with("limits = { header_bytes = \"4KiB\", uri_bytes = \"8KiB\" }"),
            key,
            5,
        );
        assert!(msg.contains("to header_bytes (4KiB)"), "{msg}");
        let msg = rejected(&http_with("limits = { uri_bytes = 15 }"), key, 5);
        assert!(msg.contains("from 16B"), "{msg}");
    }

    #[test]
    fn forwarded_takes_any_case_and_an_empty_list_means_none() {
        let c = ok(&http_with(
            "forwarded = [\"X-Forwarded-For\", \"FORWARDED\", \"x-forwarded-proto\"]",
        ));
        let f = c.listens[0].http.forwarded;
        assert_eq!((f.xff, f.xfp, f.rfc7239), (true, true, true));
        let c = ok(&http_with("forwarded = [\"forwarded\"]"));
        let f = c.listens[0].http.forwarded;
        assert_eq!((f.xff, f.xfp, f.rfc7239), (false, false, true));
        let c = ok(&http_with("forwarded = []"));
        let f = c.listens[0].http.forwarded;
        assert_eq!((f.xff, f.xfp, f.rfc7239), (false, false, false));
    }

    #[test]
    fn unknown_forwarded_header_is_rejected_with_the_three_names() {
        let msg = rejected(
            &http_with("forwarded = [\"x-forwarded-for\", \"x-real-ip\"]"),
            "listen[0].forwarded[1]",
            5,
        );
        assert!(msg.contains("'x-real-ip'"), "{msg}");
        assert!(
            msg.contains("x-forwarded-for, x-forwarded-proto, forwarded"),
            "{msg}"
        );
    }

    #[test]
    fn forwarded_header_listed_twice_is_rejected() {
        let msg = rejected(
            &http_with("forwarded = [\"forwarded\", \"Forwarded\"]"),
            "listen[0].forwarded[1]",
            5,
        );
        assert!(msg.contains("twice"), "{msg}");
    }

    #[test]
    fn connection_pool_is_read_as_pool_or_idle_pool() {
        for name in ["pool", "idle_pool"] {
            let c = ok(&http_with(&format!(
                "{name} = {{ max_idle = 0, idle_timeout = \"2m\" }}"
            )));
            let p = c.listens[0].http.pool;
            assert_eq!((p.max_idle, p.idle_timeout), (0, Duration::from_secs(120)));
        }
        let c = ok(&http_with("[listen.pool]\nmax_idle = 10000"));
        assert_eq!(c.listens[0].http.pool.max_idle, 10000);
    }

    #[test]
    fn pool_and_idle_pool_together_are_rejected() {
        let msg = rejected(
            &http_with("pool = { max_idle = 1 }\nidle_pool = { max_idle = 2 }"),
            "listen[0].idle_pool",
            6,
        );
        assert!(
            msg.contains("pool (line 5)") && msg.contains("keep one"),
            "{msg}"
        );
    }

    #[test]
    fn connection_pool_values_out_of_range_are_rejected() {
        rejected(
            &http_with("pool = { max_idle = 10001 }"),
            "listen[0].pool.max_idle",
            5,
        );
        rejected(
            &http_with("idle_pool = { max_idle = -1 }"),
            "listen[0].idle_pool.max_idle",
            5,
        );
        let msg = rejected(
            &http_with("pool = { idle_timeout = \"0s\" }"),
            "listen[0].pool.idle_timeout",
            5,
        );
        assert!(msg.contains("is zero"), "{msg}");
    }

    #[test]
    fn hash_key_reads_client_header_and_cookie() {
        let sh = "balance = \"source_hash\"\n";
        let cases = [
            ("client", HashKey::Client),
            ("header:X-User", HashKey::Header("x-user".into())),
            ("cookie:Session_ID", HashKey::Cookie("Session_ID".into())),
        ];
        for (text, want) in cases {
            let c = ok(&http_with(&format!("{sh}hash_key = \"{text}\"")));
            assert_eq!(c.listens[0].http.hash_key, want, "{text}");
        }
        // "client" is the default in tcp mode too, so it may be written there.
        let c = ok(&listen_with("hash_key = \"client\""));
        assert_eq!(c.listens[0].http.hash_key, HashKey::Client);
    }

    #[test]
    fn unknown_hash_key_is_rejected_with_the_accepted_forms() {
        let sh = "balance = \"source_hash\"\n";
        for text in ["ip", "query:id", "Header:x"] {
            let msg = rejected(
                &http_with(&format!("{sh}hash_key = \"{text}\"")),
                "listen[0].hash_key",
                6,
            );
            assert!(msg.contains(&format!("unknown hash_key '{text}'")), "{msg}");
            assert!(
                msg.contains("\"header:NAME\"") && msg.contains("\"cookie:NAME\""),
                "{msg}"
            );
        }
    }

    #[test]
    fn hash_key_with_an_empty_or_invalid_name_is_rejected() {
        let sh = "balance = \"source_hash\"\n";
        for text in [
            "header:",
            "cookie:",
            "header:X User",
            "cookie:a=b",
            "header:x:y",
        ] {
            let msg = rejected(
                &http_with(&format!("{sh}hash_key = \"{text}\"")),
                "listen[0].hash_key",
                6,
            );
            assert!(msg.contains("invalid"), "{msg}");
        }
    }

    #[test]
    fn hash_key_on_a_header_or_cookie_needs_source_hash() {
        let msg = rejected(
            &http_with("hash_key = \"header:X-User\""),
            "listen[0].hash_key",
            5,
        );
        assert!(msg.contains("balance = \"source_hash\""), "{msg}");
        assert!(msg.contains("round_robin"), "{msg}");
    }

    #[test]
    fn http_keys_in_a_tcp_listen_are_rejected() {
        let cases = [
            ("limits = { headers = 10 }", "listen[0].limits"),
            ("forwarded = []", "listen[0].forwarded"),
            ("pool = { max_idle = 1 }", "listen[0].pool"),
            ("idle_pool = { max_idle = 1 }", "listen[0].idle_pool"),
            ("hash_key = \"cookie:sid\"", "listen[0].hash_key"),
            (
                "timeouts = { header = \"5s\" }",
                "listen[0].timeouts.header",
            ),
            (
                "timeouts = { server = \"5s\" }",
                "listen[0].timeouts.server",
            ),
        ];
        for (line, key) in cases {
            let msg = rejected(&listen_with(line), key, 4);
            assert!(
                msg.contains("only with mode = \"http\", this listen is mode = \"tcp\""),
                "{msg}"
            );
        }
    }
}
