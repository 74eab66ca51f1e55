//! Owns validation of a server's or a named pool's `tls = { verify, ca,
//! sni }` (TLS origination): `verify` defaults to true and then needs `ca`
//! (no system root store is bundled), a readable PEM file of at least one
//! certificate; `sni` a DNS name. Every rejection names the key path
//! (`listen[0].servers[1].tls.ca`) and the line it was written on. A
//! server's own table replaces its pool's; a server without `sni` sends the
//! host part of its `addr` when that is a name (`config/origin.rs`).

use super::{Result, Validator};
use crate::config::origin::{OriginTls, client_config, default_sni};
use crate::config::raw::RawOriginTls;
use std::sync::Arc;
use toml::Spanned;

impl Validator<'_> {
    /// A `tls` table of a server or pool at key path `p` (`None`: none).
    pub(super) fn origin_tls(
        &self,
        p: &str,
        raw: Option<&Spanned<RawOriginTls>>,
    ) -> Result<Option<Arc<OriginTls>>> {
        let Some(t) = raw else {
            return Ok(None);
        };
        let r = t.get_ref();
        let verify = r.verify.as_ref().is_none_or(|v| *v.get_ref());
        let sni = match &r.sni {
            Some(s) => {
                let name = s.get_ref().trim_end_matches('.').to_ascii_lowercase();
                if name.is_empty() || rustls::pki_types::DnsName::try_from(name.clone()).is_err() {
                    return Err(self.invalid(
                        &format!("{p}.tls.sni"),
                        s,
                        format!("'{}' is not a DNS name", s.get_ref()),
                    ));
                }
                Some(name)
            }
            None => None,
        };
        let (ca_path, roots) = match &r.ca {
            Some(ca) => {
                let key = format!("{p}.tls.ca");
                let path = self.base.join(ca.get_ref());
                let roots = self.pem_certs(&key, ca, &path, "file")?;
                (Some(path), roots)
            }
            None if verify => {
                return Err(self.invalid(
                    &format!("{p}.tls.ca"),
                    t,
                    "missing: verify = true needs ca = \"ca.pem\" (the roots to trust), \
                     or verify = false (insecure)"
                        .to_string(),
                ));
            }
            None => (None, Vec::new()),
        };
        let config = client_config(verify, &roots).map_err(|e| {
            let at = r.ca.as_ref();
            match at {
                Some(ca) => self.invalid(&format!("{p}.tls.ca"), ca, e),
                None => self.invalid(&format!("{p}.tls"), t, e),
            }
        })?;
        Ok(Some(Arc::new(OriginTls {
            verify,
            ca_path,
            roots,
            sni,
            config,
        })))
    }

    /// The effective `tls` of a server: its own, else its pool's, with the
    /// default SNI taken from its `addr` as written.
    pub(super) fn server_tls(
        &self,
        sp: &str,
        own: Option<&Spanned<RawOriginTls>>,
        inherited: Option<&Arc<OriginTls>>,
        addr: Option<&str>,
    ) -> Result<Option<Arc<OriginTls>>> {
        let tls = match self.origin_tls(sp, own)? {
            Some(t) => t,
            None => match inherited {
                Some(t) => t.clone(),
                None => return Ok(None),
            },
        };
        if tls.sni.is_none()
            && let Some(name) = addr.and_then(default_sni)
        {
            let mut t = (*tls).clone();
            t.sni = Some(name);
            return Ok(Some(Arc::new(t)));
        }
        Ok(Some(tls))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{listen_with, rejected};

    #[test]
    fn verify_needs_a_ca_and_a_ca_must_be_readable() {
        rejected(
            &listen_with("").replace(
                "addr = \"127.0.0.1:6001\" }",
                "addr = \"127.0.0.1:6001\", tls = { verify = true } }",
            ),
            "listen[0].servers[0].tls.ca",
            3,
        );
        let shown = rejected(
            &listen_with("").replace(
                "addr = \"127.0.0.1:6001\" }",
                "addr = \"127.0.0.1:6001\", tls = { ca = \"nope.pem\" } }",
            ),
            "listen[0].servers[0].tls.ca",
            3,
        );
        assert!(
            shown.contains("cannot read '/etc/lbctl/nope.pem'"),
            "{shown}"
        );
        rejected(
            &listen_with("").replace(
                "addr = \"127.0.0.1:6001\" }",
                "addr = \"127.0.0.1:6001\", tls = { verify = false, sni = \"a b\" } }",
            ),
            "listen[0].servers[0].tls.sni",
            3,
        );
    }
}
