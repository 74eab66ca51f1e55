//! Owns validation of `health` tables, the listen's and each server's: the
//! `kind` ([`HEALTH_KINDS`]), the common keys (`interval`, `timeout`, `rise`,
//! `fall`), the `http` keys (`method`, `path`, `host`, `expect_status`,
//! `expect_body`) and the `send_expect` keys (`send`, `expect`), the rejection
//! of another kind's keys, and the merge of a server's table over its listen's.
//! A new health key is added here (field in `raw.rs` `RawHealth`, a line in
//! `merge_health`, the kind's key list and `health_key_span` if it belongs to
//! one kind, typed field in `mod.rs` `HealthConfig`, `HttpCheck` or
//! `HealthKind`).

use super::{MAX_COUNT, Result, Validator};
use crate::config::raw::{RawHealth, RawStatus};
use crate::config::{HealthConfig, HealthKind, HttpCheck};
use std::time::Duration;
use toml::Spanned;

/// The accepted health kinds, in the order the docs list them.
pub const HEALTH_KINDS: &[&str] = &["tcp", "http", "send_expect"];
const HTTP_KEYS: &[&str] = &["method", "path", "host", "expect_status", "expect_body"];
const SEND_EXPECT_KEYS: &[&str] = &["send", "expect"];

impl Validator<'_> {
    /// Validates one (possibly merged) health table; `table` locates errors
    /// about missing keys.
    pub(super) fn health<T>(
        &self,
        p: &str,
        table: &Spanned<T>,
        h: &RawHealth,
    ) -> Result<HealthConfig> {
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
pub(super) fn merge_health(base: &RawHealth, over: &RawHealth) -> RawHealth {
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
    use crate::config::validate::tests::{listen_with, ok, rejected, servers};

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
}
