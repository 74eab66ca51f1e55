//! Owns the typed TLS settings of a listen (`tls = { certs = [...] }`):
//! each certificate as loaded when the config was validated — the chain and
//! key ready for rustls (the key checked against the certificate), the DNS
//! names SNI picks it by, and its expiry for `status` and `/metrics`. The
//! files are read once, by the master, at load and at each reload; workers
//! inherit the loaded certificates at fork and never touch the disk.

use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::Arc;

/// A listen's `tls` table.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsListen {
    /// `certs`, in file order; the first one is the default (a client
    /// without SNI, or naming no certificate's name, gets it).
    pub certs: Vec<TlsCert>,
    /// The session ticket key of this generation: drawn by the master when
    /// the config is loaded, inherited by every worker at fork.
    pub ticket_key: TicketKey,
}

/// A 32-byte session ticket key. Not part of what the file says: two
/// configs compare equal whatever their keys, and it is never printed.
#[derive(Clone)]
pub struct TicketKey(pub [u8; 32]);

impl TicketKey {
    /// A fresh random key.
    pub fn generate() -> TicketKey {
        let mut k = [0u8; 32];
        rand::fill(&mut k);
        TicketKey(k)
    }
}

impl PartialEq for TicketKey {
    fn eq(&self, _: &TicketKey) -> bool {
        true
    }
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKey(..)")
    }
}

/// One certificate of `tls.certs`.
#[derive(Debug, Clone)]
pub struct TlsCert {
    /// `cert`: the PEM chain file (resolved against the config's directory).
    pub cert_path: PathBuf,
    /// `key`: the PEM private key file.
    pub key_path: PathBuf,
    /// The DNS names of the leaf (subjectAltName, else the subject's CN),
    /// lower-cased; `*.example.com` is a wildcard for one label.
    pub names: Vec<String>,
    /// The leaf's notAfter, seconds since the Unix epoch.
    pub not_after: i64,
    /// The chain and signing key for rustls.
    pub key: Arc<CertifiedKey>,
}

impl TlsCert {
    /// The name `status` and `/metrics` show: the first DNS name, else the
    /// certificate file's path.
    pub fn label(&self) -> String {
        match self.names.first() {
            Some(n) => n.clone(),
            None => self.cert_path.display().to_string(),
        }
    }
}

impl PartialEq for TlsCert {
    fn eq(&self, other: &TlsCert) -> bool {
        self.cert_path == other.cert_path
            && self.key_path == other.key_path
            && self.names == other.names
            && self.not_after == other.not_after
            && self.key.cert == other.key.cert
    }
}

/// The `status` rows of a listen's certificates (expiry counted from now).
pub fn cert_rows(tls: Option<&TlsListen>) -> Vec<crate::stats::CertRow> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    tls.map_or(&[][..], |t| &t.certs[..])
        .iter()
        .map(|c| crate::stats::CertRow {
            name: c.label(),
            names: c.names.clone(),
            cert: c.cert_path.display().to_string(),
            not_after: c.not_after,
            expires_in_secs: c.not_after - now,
        })
        .collect()
}
