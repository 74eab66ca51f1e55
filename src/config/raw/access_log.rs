//! Owns the raw serde view of a listen's `access_log = { path, format }`
//! table (validated in `validate/access_log.rs`).

use serde::Deserialize;
use toml::Spanned;

/// `access_log = { path = "...", format = "json" | "text" }` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawAccessLog {
    /// `path = "/var/log/lbctl/web.access.log"`.
    pub path: Option<Spanned<String>>,
    /// `format = "text"` (default) or `"json"`.
    pub format: Option<Spanned<String>>,
}
