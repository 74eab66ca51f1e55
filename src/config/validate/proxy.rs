//! Owns validation of the PROXY protocol keys: a listen's `accept_proxy =
//! true | false` with its `timeouts.proxy` (a positive duration of at most
//! 1m, default 5s, rejected without `accept_proxy = true`), and a server's
//! `send_proxy = "v1" | "v2"`. Both apply in tcp and http mode. The raw
//! fields are in `raw/mod.rs` (`RawListen::accept_proxy`,
//! `RawTimeouts::proxy`, `RawServer::send_proxy`), the typed ones in
//! `mod.rs` (`ListenConfig::accept_proxy`, `ServerConfig::send_proxy`).

use super::{Result, Validator};
use crate::config::AcceptProxy;
use crate::config::raw::{RawListen, RawServer};
use crate::proxy_protocol::Version;
use std::time::Duration;

/// Default of `timeouts.proxy`.
pub const DEFAULT_PROXY_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound of `timeouts.proxy`.
const MAX_PROXY_TIMEOUT: Duration = Duration::from_secs(60);

impl Validator<'_> {
    /// `accept_proxy` and `timeouts.proxy` of the listen at `p`.
    pub(super) fn accept_proxy(&self, p: &str, l: &RawListen) -> Result<Option<AcceptProxy>> {
        let on = l.accept_proxy.as_ref().is_some_and(|b| *b.get_ref());
        let raw_timeout = l.timeouts.as_ref().and_then(|t| t.get_ref().proxy.as_ref());
        let key = format!("{p}.timeouts.proxy");
        let Some(raw) = raw_timeout else {
            return Ok(on.then_some(AcceptProxy {
                timeout: DEFAULT_PROXY_TIMEOUT,
            }));
        };
        if !on {
            return Err(self.invalid(
                &key,
                raw,
                "is the time for a PROXY header, expected accept_proxy = true in this listen"
                    .to_string(),
            ));
        }
        let timeout = self.duration(&key, raw, false)?;
        if timeout > MAX_PROXY_TIMEOUT {
            return Err(self.invalid(
                &key,
                raw,
                format!("'{}' is longer than 1m", raw.get_ref().escape_debug()),
            ));
        }
        Ok(Some(AcceptProxy { timeout }))
    }

    /// `send_proxy` of the server at `sp`.
    pub(super) fn send_proxy(&self, sp: &str, s: &RawServer) -> Result<Option<Version>> {
        let Some(raw) = &s.send_proxy else {
            return Ok(None);
        };
        Version::from_name(raw.get_ref()).map(Some).ok_or_else(|| {
            self.invalid(
                &format!("{sp}.send_proxy"),
                raw,
                format!(
                    "unknown PROXY protocol version '{}', expected one of: {}",
                    raw.get_ref().escape_debug(),
                    Version::NAMES.join(", ")
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{http_with, listen_with, ok, rejected, servers};
    use crate::config::AcceptProxy;
    use crate::proxy_protocol::Version;
    use std::time::Duration;

    #[test]
    fn proxy_keys_default_to_off() {
        let c = ok(&listen_with(""));
        assert_eq!(c.listens[0].accept_proxy, None);
        assert_eq!(c.listens[0].servers[0].send_proxy, None);
        let c = ok(&listen_with("accept_proxy = false"));
        assert_eq!(c.listens[0].accept_proxy, None);
    }

    #[test]
    fn accept_proxy_takes_its_timeout_in_tcp_and_http_mode() {
        let c = ok(&listen_with("accept_proxy = true"));
        assert_eq!(
            c.listens[0].accept_proxy,
            Some(AcceptProxy {
                timeout: Duration::from_secs(5)
            })
        );
        let c = ok(&http_with(
            "accept_proxy = true\ntimeouts = { proxy = \"250ms\", header = \"2s\" }",
        ));
        assert_eq!(
            c.listens[0].accept_proxy.map(|a| a.timeout),
            Some(Duration::from_millis(250))
        );
    }

    #[test]
    fn bad_proxy_timeouts_are_rejected_with_key_and_line() {
        let msg = rejected(
            &listen_with("timeouts = { proxy = \"1s\" }"),
            "listen[0].timeouts.proxy",
            4,
        );
        assert!(msg.contains("accept_proxy = true"), "{msg}");
        rejected(
            &listen_with("accept_proxy = true\ntimeouts = { proxy = \"0s\" }"),
            "listen[0].timeouts.proxy",
            5,
        );
        let msg = rejected(
            &listen_with("accept_proxy = true\ntimeouts = { proxy = \"2m\" }"),
            "listen[0].timeouts.proxy",
            5,
        );
        assert!(msg.contains("1m"), "{msg}");
    }

    #[test]
    fn send_proxy_names_its_version() {
        let c = ok(&servers(&[
            r#"{ addr = "127.0.0.1:1", send_proxy = "v1" }"#,
            r#"{ addr = "127.0.0.1:2", send_proxy = "v2" }"#,
            r#"{ addr = "127.0.0.1:3" }"#,
        ]));
        let s = &c.listens[0].servers;
        assert_eq!(s[0].send_proxy, Some(Version::V1));
        assert_eq!(s[1].send_proxy, Some(Version::V2));
        assert_eq!(s[2].send_proxy, None);
    }

    #[test]
    fn bad_send_proxy_is_rejected_with_key_and_line() {
        let msg = rejected(
            &servers(&[
                r#"{ addr = "127.0.0.1:1" }"#,
                r#"{ addr = "127.0.0.1:2", send_proxy = "v3" }"#,
            ]),
            "listen[0].servers[1].send_proxy",
            5,
        );
        assert!(msg.contains("'v3'") && msg.contains("v1, v2"), "{msg}");
        let err = crate::config::parse(
            &servers(&[r#"{ addr = "127.0.0.1:1", send_proxy = true }"#]),
            std::path::Path::new("/"),
        )
        .expect_err("a boolean is not a version");
        let shown = err.to_string();
        assert!(
            shown.contains("listen[0].servers[0].send_proxy") && shown.contains("line 4"),
            "{shown}"
        );
    }

    #[test]
    fn accept_proxy_must_be_a_boolean() {
        let err = crate::config::parse(
            &listen_with("accept_proxy = \"yes\""),
            std::path::Path::new("/"),
        )
        .expect_err("a string is not a boolean");
        let shown = err.to_string();
        assert!(
            shown.contains("listen[0].accept_proxy") && shown.contains("line 4"),
            "{shown}"
        );
    }
}
