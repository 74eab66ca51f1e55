//! Owns validation of a listen's per-client limits: `max_conns_per_client`
//! (1..=1,000,000 open connections per client address) and `rate = { conns,
//! per }` (1..=1,000,000 new connections per `per`, a positive duration of at
//! most 1h). Both apply in tcp and http mode. A new per-client key is added
//! here (field in `raw/mod.rs` `RawListen`, typed field in `mod.rs`
//! `ClientLimits`).

use super::{Result, Validator};
use crate::config::raw::RawListen;
use crate::config::{ClientLimits, RateLimit};
use std::time::Duration;

/// Upper bound of `max_conns_per_client` and `rate.conns`.
pub const MAX_PER_CLIENT: i64 = 1_000_000;
/// Upper bound of `rate.per`.
const MAX_WINDOW: Duration = Duration::from_secs(3600);

impl Validator<'_> {
    pub(super) fn client_limits(&self, p: &str, l: &RawListen) -> Result<ClientLimits> {
        let max_conns = match &l.max_conns_per_client {
            Some(n) => {
                Some(self.int(&format!("{p}.max_conns_per_client"), n, 1, MAX_PER_CLIENT)? as u32)
            }
            None => None,
        };
        let rate = match &l.rate {
            None => None,
            Some(r) => {
                let key = format!("{p}.rate");
                let raw = r.get_ref();
                let Some(conns) = &raw.conns else {
                    return Err(self.invalid(
                        &format!("{key}.conns"),
                        r,
                        "missing, expected new connections per window such as conns = 100"
                            .to_string(),
                    ));
                };
                let conns = self.int(&format!("{key}.conns"), conns, 1, MAX_PER_CLIENT)? as u32;
                let per = match &raw.per {
                    Some(s) => {
                        let d = self.duration(&format!("{key}.per"), s, false)?;
                        if d > MAX_WINDOW {
                            return Err(self.invalid(
                                &format!("{key}.per"),
                                s,
                                format!("'{}' is longer than 1h", s.get_ref().escape_debug()),
                            ));
                        }
                        d
                    }
                    None => Duration::from_secs(1),
                };
                Some(RateLimit { conns, per })
            }
        };
        Ok(ClientLimits { max_conns, rate })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{listen_with, ok, rejected};
    use crate::config::RateLimit;
    use std::time::Duration;

    #[test]
    fn client_limits_default_to_none_and_parse_both_keys() {
        let c = ok(&listen_with(""));
        assert_eq!(c.listens[0].client_limits.max_conns, None);
        assert_eq!(c.listens[0].client_limits.rate, None);
        let c = ok(&listen_with(
            "max_conns_per_client = 10\nrate = { conns = 100, per = \"2s\" }",
        ));
        let l = &c.listens[0].client_limits;
        assert_eq!(l.max_conns, Some(10));
        assert_eq!(
            l.rate,
            Some(RateLimit {
                conns: 100,
                per: Duration::from_secs(2)
            })
        );
        let c = ok(&listen_with("rate = { conns = 5 }"));
        assert_eq!(
            c.listens[0].client_limits.rate.map(|r| r.per),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn bad_client_limits_are_rejected_with_key_and_line() {
        rejected(
            &listen_with("max_conns_per_client = 0"),
            "listen[0].max_conns_per_client",
            4,
        );
        rejected(
            &listen_with("rate = { per = \"1s\" }"),
            "listen[0].rate.conns",
            4,
        );
        rejected(
            &listen_with("rate = { conns = 1, per = \"0s\" }"),
            "listen[0].rate.per",
            4,
        );
        let msg = rejected(
            &listen_with("rate = { conns = 1, per = \"2h\" }"),
            "listen[0].rate.per",
            4,
        );
        assert!(msg.contains("1h"), "{msg}");
    }
}
