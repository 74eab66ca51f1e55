//! Owns the raw serde view of a server's (or a named pool's) `tls = {
//! verify, ca, sni }` table (TLS origination). Every key is optional and
//! unknown keys are rejected; `validate/origin.rs` reads the `ca` file.

use serde::Deserialize;
use toml::Spanned;

/// A server's `tls = {...}` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawOriginTls {
    /// `verify = true`: check the server's certificate (default true).
    pub verify: Option<Spanned<bool>>,
    /// `ca = "ca.pem"`: the trusted roots, PEM.
    pub ca: Option<Spanned<String>>,
    /// `sni = "api.internal"`: the name sent and verified.
    pub sni: Option<Spanned<String>>,
}
