//! Owns validation of a listen's `tls = { certs = [ { cert, key }, ... ] }`:
//! at least one certificate; each `cert` file a readable PEM chain whose
//! leaf parses and has not expired, each `key` file a readable PEM private
//! key that rustls (ring) can load and that matches the leaf's public key.
//! Every rejection names the key path (`listen[0].tls.certs[1].key`), the
//! file and the line the value was written on, so `lbctl check` and a
//! refused `reload` say which file to fix. Also allows `timeouts.header` in
//! `mode = "tcp"` when TLS is on: it bounds the handshake.

use super::{Result, Validator};
use crate::config::raw::{RawCert, RawListen};
use crate::config::tls::{TicketKey, TlsCert, TlsListen};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::Arc;
use toml::Spanned;
use x509_parser::extensions::GeneralName;

/// Certificates per listen at most.
pub const MAX_CERTS: usize = 1000;

impl Validator<'_> {
    /// The listen's `tls` table, `None` when there is none.
    pub(super) fn tls(&self, p: &str, l: &RawListen) -> Result<Option<Arc<TlsListen>>> {
        let Some(t) = &l.tls else {
            return Ok(None);
        };
        let key = format!("{p}.tls.certs");
        let Some(certs) = &t.get_ref().certs else {
            return Err(self.invalid(
                &key,
                t,
                "missing, expected certs = [ { cert = \"site.pem\", key = \"site.key\" } ]"
                    .to_string(),
            ));
        };
        if certs.get_ref().is_empty() || certs.get_ref().len() > MAX_CERTS {
            return Err(self.invalid(
                &key,
                certs,
                format!("expected 1 to {MAX_CERTS} {{ cert, key }} tables"),
            ));
        }
        let mut out = Vec::with_capacity(certs.get_ref().len());
        for (i, c) in certs.get_ref().iter().enumerate() {
            out.push(self.tls_cert(&format!("{key}[{i}]"), c)?);
        }
        Ok(Some(Arc::new(TlsListen {
            certs: out,
            ticket_key: TicketKey::generate(),
        })))
    }

    fn tls_cert(&self, p: &str, c: &Spanned<RawCert>) -> Result<TlsCert> {
        let raw = c.get_ref();
        let (Some(cert), Some(key)) = (&raw.cert, &raw.key) else {
            let missing = if raw.cert.is_none() { "cert" } else { "key" };
            return Err(self.invalid(
                &format!("{p}.{missing}"),
                c,
                "missing, expected { cert = \"site.pem\", key = \"site.key\" }".to_string(),
            ));
        };
        let (ck, kk) = (format!("{p}.cert"), format!("{p}.key"));
        let cert_path = self.base.join(cert.get_ref());
        let key_path = self.base.join(key.get_ref());
        let chain = self.pem_certs(&ck, cert, &cert_path, "chain")?;
        let key_pem = self.read(&kk, key, &key_path)?;
        let shown = |path: &PathBuf| path.display().to_string();
        let leaf = &chain[0]; // pem_certs returns at least one
        let (names, not_after, not_after_text) = leaf_facts(leaf).map_err(|e| {
            self.invalid(
                &ck,
                cert,
                format!(
                    "'{}': the certificate does not parse: {e}",
                    shown(&cert_path)
                ),
            )
        })?;
        if not_after < now_unix() {
            return Err(self.invalid(
                &ck,
                cert,
                format!(
                    "'{}' expired on {not_after_text}; renew it",
                    shown(&cert_path)
                ),
            ));
        }
        let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            self.invalid(
                &kk,
                key,
                format!("'{}' is not a PEM private key: {e}", shown(&key_path)),
            )
        })?;
        let provider = rustls::crypto::ring::default_provider();
        let certified = CertifiedKey::from_der(chain, private, &provider).map_err(|e| {
            let why = match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "'{}' does not match the certificate '{}' (another key pair)",
                    shown(&key_path),
                    shown(&cert_path)
                ),
                other => format!("'{}' cannot be used: {other}", shown(&key_path)),
            };
            self.invalid(&kk, key, why)
        })?;
        Ok(TlsCert {
            cert_path,
            key_path,
            names,
            not_after,
            key: Arc::new(certified),
        })
    }

    /// The certificates of the PEM file at `path` (at least one), read for
    /// the key `key` written at `at` (`what`: "chain", "file", for the
    /// message). Shared by a listen's `cert` and a server's `ca`.
    pub(super) fn pem_certs(
        &self,
        key: &str,
        at: &Spanned<String>,
        path: &PathBuf,
        what: &str,
    ) -> Result<Vec<CertificateDer<'static>>> {
        let pem = self.read(key, at, path)?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| {
                self.invalid(
                    key,
                    at,
                    format!("'{}' is not a PEM certificate {what}: {e}", path.display()),
                )
            })?;
        if certs.is_empty() {
            return Err(self.invalid(
                key,
                at,
                format!("'{}' holds no CERTIFICATE block", path.display()),
            ));
        }
        Ok(certs)
    }

    /// A file's bytes, or the error naming it.
    fn read(&self, key: &str, at: &Spanned<String>, path: &PathBuf) -> Result<Vec<u8>> {
        std::fs::read(path)
            .map_err(|e| self.invalid(key, at, format!("cannot read '{}': {e}", path.display())))
    }
}

/// The leaf's DNS names (subjectAltName, else the CN), lower-cased, its
/// notAfter (Unix seconds) and that date as text.
fn leaf_facts(
    leaf: &CertificateDer<'_>,
) -> std::result::Result<(Vec<String>, i64, String), String> {
    let (_, x) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| e.to_string())?;
    let validity = x.validity();
    let mut names = Vec::new();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for g in &san.value.general_names {
            if let GeneralName::DNSName(n) = g {
                names.push(n.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty()
        && let Some(cn) = x.subject().iter_common_name().next()
        && let Ok(cn) = cn.as_str()
    {
        names.push(cn.to_ascii_lowercase());
    }
    Ok((
        names,
        validity.not_after.timestamp(),
        validity.not_after.to_string(),
    ))
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{http_with, listen_with, rejected};

    #[test]
    fn a_tls_table_needs_a_non_empty_certs_list_of_cert_and_key() {
        rejected(&listen_with("tls = {}"), "listen[0].tls.certs", 4);
        rejected(
            &listen_with("tls = { certs = [] }"),
            "listen[0].tls.certs",
            4,
        );
        rejected(
            &listen_with("tls = { certs = [ { cert = \"a.pem\" } ] }"),
            "listen[0].tls.certs[0].key",
            4,
        );
    }

    #[test]
    fn unreadable_files_are_named_with_their_resolved_path() {
        let shown = rejected(
            &http_with("tls = { certs = [ { cert = \"nope.pem\", key = \"nope.key\" } ] }"),
            "listen[0].tls.certs[0].cert",
            5,
        );
        assert!(
            shown.contains("cannot read '/etc/lbctl/nope.pem'"),
            "{shown}"
        );
    }

    #[test]
    fn timeouts_header_needs_http_or_tls() {
        rejected(
            &listen_with("timeouts = { header = \"1s\" }"),
            "listen[0].timeouts.header",
            4,
        );
        // With tls the header timeout bounds the handshake: the certs are
        // what is rejected here, not the timeout.
        rejected(
            &listen_with(
                "timeouts = { header = \"1s\" }\ntls = { certs = [ { cert = \"x\", key = \"y\" } ] }",
            ),
            "listen[0].tls.certs[0].cert",
            5,
        );
    }
}
