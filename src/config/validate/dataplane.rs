//! Owns validation of a listen's `dataplane`: `"auto"` (the default: user
//! space, read/write or splice) or `"sockmap"` (the kernel relays the bytes;
//! `mode = "tcp"` only). The test knob `LBCTL_FORCE_DATAPLANE=sockmap` in
//! the environment makes every tcp listen that does not name a dataplane use
//! `sockmap`, so the whole suite can run on the kernel data plane; it is
//! for tests, not for operators (a file says what it means).

use super::{Result, Validator};
use crate::config::raw::RawListen;
use crate::config::{Dataplane, Mode};

/// The accepted values.
pub const DATAPLANES: &[&str] = &["auto", "sockmap"];

/// The environment variable that forces `sockmap` (tests).
pub const FORCE_ENV: &str = "LBCTL_FORCE_DATAPLANE";

/// True when one of the listen's own servers has `tls` (origination).
fn servers_tls(l: &RawListen) -> bool {
    l.servers
        .as_ref()
        .is_some_and(|s| s.get_ref().iter().any(|s| s.get_ref().tls.is_some()))
}

impl Validator<'_> {
    pub(super) fn dataplane(&self, p: &str, l: &RawListen, mode: Mode) -> Result<Dataplane> {
        let Some(d) = &l.dataplane else {
            let forced = std::env::var(FORCE_ENV).is_ok_and(|v| v == "sockmap");
            return Ok(
                if forced && mode == Mode::Tcp && l.tls.is_none() && !servers_tls(l) {
                    Dataplane::Sockmap
                } else {
                    Dataplane::Auto
                },
            );
        };
        let key = format!("{p}.dataplane");
        match d.get_ref().as_str() {
            "auto" => Ok(Dataplane::Auto),
            "sockmap" if mode == Mode::Tcp && l.tls.is_some() => Err(self.invalid(
                &key,
                d,
                "\"sockmap\" cannot be used with tls (the worker decrypts every byte)".to_string(),
            )),
            "sockmap" if mode == Mode::Tcp && servers_tls(l) => Err(self.invalid(
                &key,
                d,
                "\"sockmap\" cannot be used with servers' tls (the worker encrypts every byte)"
                    .to_string(),
            )),
            "sockmap" if mode == Mode::Tcp => Ok(Dataplane::Sockmap),
            "sockmap" => Err(self.invalid(
                &key,
                d,
                "\"sockmap\" needs mode = \"tcp\" (an http listen parses every byte)".to_string(),
            )),
            other => Err(self.invalid(
                &key,
                d,
                format!(
                    "unknown dataplane '{}', expected one of: {}",
                    other.escape_debug(),
                    DATAPLANES.join(", ")
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{listen_with, ok, rejected};
    use crate::config::Dataplane;

    #[test]
    fn dataplane_defaults_to_auto_and_accepts_sockmap_in_tcp_mode() {
        if std::env::var(super::FORCE_ENV).is_err() {
            assert_eq!(ok(&listen_with("")).listens[0].dataplane, Dataplane::Auto);
        }
        let c = ok(&listen_with("dataplane = \"sockmap\""));
        assert_eq!(c.listens[0].dataplane, Dataplane::Sockmap);
        let c = ok(&listen_with("dataplane = \"auto\""));
        assert_eq!(c.listens[0].dataplane, Dataplane::Auto);
    }

    #[test]
    fn bad_dataplanes_are_rejected_with_key_and_line() {
        let msg = rejected(
            &listen_with("dataplane = \"xdp\""),
            "listen[0].dataplane",
            4,
        );
        assert!(msg.contains("auto, sockmap"), "{msg}");
        let msg = rejected(
            &listen_with("mode = \"http\"\ndataplane = \"sockmap\""),
            "listen[0].dataplane",
            5,
        );
        assert!(msg.contains("tcp"), "{msg}");
    }

    #[test]
    fn sockmap_is_refused_with_tls_on_the_same_listen() {
        let msg = rejected(
            &listen_with(
                "dataplane = \"sockmap\"\ntls = { certs = [ { cert = \"a.pem\", key = \"a.key\" } ] }",
            ),
            "listen[0].dataplane",
            4,
        );
        assert!(msg.contains("tls"), "{msg}");
    }
}
