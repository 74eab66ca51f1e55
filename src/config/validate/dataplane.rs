//! Owns validation of a listen's `dataplane`: `"auto"` (the default: user
//! space, read/write or splice) or `"sockmap"` (the kernel relays the bytes;
//! `mode = "tcp"` only). The test knob `LBCTL_FORCE_DATAPLANE=sockmap` in
//! the environment makes every tcp listen that does not name a dataplane use
//! `sockmap`, so the whole suite can run on the kernel data plane; it is
//! for tests, not for operators (a file says what it means). Also owns
//! `sockmap_sndbuf`, which only a `sockmap` listen may set.

use super::{Result, Validator};
use crate::config::raw::RawListen;
use crate::config::{DEFAULT_SOCKMAP_SNDBUF, Dataplane, Mode};

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

impl Validator<'_> {
    /// `sockmap_sndbuf`: 0 in any unit (the kernel's autotuning) or 16KiB to
    /// 256MiB; only where the dataplane is `sockmap`.
    pub(super) fn sockmap_sndbuf(
        &self,
        p: &str,
        l: &RawListen,
        dataplane: Dataplane,
    ) -> Result<usize> {
        let Some(s) = &l.sockmap_sndbuf else {
            return Ok(DEFAULT_SOCKMAP_SNDBUF);
        };
        let key = format!("{p}.sockmap_sndbuf");
        if dataplane != Dataplane::Sockmap {
            return Err(self.invalid(
                &key,
                s,
                "is only for dataplane = \"sockmap\" (the kernel relay's send buffer)".to_string(),
            ));
        }
        // 0 in any unit is the kernel's autotuning; else 16KiB to 256MiB.
        let max = 256 * 1024 * 1024;
        let b = self.size(&key, s, 0, max, "256MiB")?;
        if b != 0 && b < 16 * 1024 {
            return self.size(
                &key,
                s,
                16 * 1024,
                max,
                "256MiB (or 0: the kernel's autotuning)",
            );
        }
        Ok(b)
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

    #[test]
    fn sockmap_sndbuf_defaults_to_4_mib_and_takes_sizes_and_0() {
        let c = ok(&listen_with("dataplane = \"sockmap\""));
        assert_eq!(c.listens[0].sockmap_sndbuf, 4 * 1024 * 1024);
        let c = ok(&listen_with(
            "dataplane = \"sockmap\"\nsockmap_sndbuf = \"8MiB\"",
        ));
        assert_eq!(c.listens[0].sockmap_sndbuf, 8 * 1024 * 1024);
        for zero in ["0", "\"0B\"", "\"0KiB\""] {
            let c = ok(&listen_with(&format!(
                "dataplane = \"sockmap\"\nsockmap_sndbuf = {zero}"
            )));
            assert_eq!(c.listens[0].sockmap_sndbuf, 0, "{zero}");
        }
    }

    #[test]
    fn bad_sockmap_sndbufs_are_rejected_with_key_and_line() {
        let key = "listen[0].sockmap_sndbuf";
        let msg = rejected(
            &listen_with("dataplane = \"sockmap\"\nsockmap_sndbuf = \"1GiB\""),
            key,
            5,
        );
        assert!(msg.contains("KiB"), "{msg}");
        let msg = rejected(
            &listen_with("dataplane = \"sockmap\"\nsockmap_sndbuf = 100"),
            key,
            5,
        );
        assert!(msg.contains("out of range"), "{msg}");
        let msg = rejected(
            &listen_with("dataplane = \"sockmap\"\nsockmap_sndbuf = \"1024MiB\""),
            key,
            5,
        );
        assert!(msg.contains("256MiB"), "{msg}");
        if std::env::var(super::FORCE_ENV).is_err() {
            let msg = rejected(&listen_with("sockmap_sndbuf = \"4MiB\""), key, 4);
            assert!(msg.contains("sockmap"), "{msg}");
        }
    }
}
