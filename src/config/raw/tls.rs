//! Owns the raw serde view of a listen's `tls = { certs = [ { cert, key },
//! ... ] }` table (TLS termination). Like the rest of `raw`, every key is
//! optional and unknown keys are rejected; `validate/tls.rs` reads the files.

use serde::Deserialize;
use toml::Spanned;

/// A listen's `tls = {...}` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawTls {
    /// `certs = [ { cert = "site.pem", key = "site.key" }, ... ]`.
    pub certs: Option<Spanned<Vec<Spanned<RawCert>>>>,
}

/// One `{ cert, key }` of `tls.certs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawCert {
    /// `cert = "site.pem"`: the PEM certificate chain, leaf first.
    pub cert: Option<Spanned<String>>,
    /// `key = "site.key"`: the PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<Spanned<String>>,
}
