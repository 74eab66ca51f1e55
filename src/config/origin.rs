//! Owns the typed TLS origination settings of a server (`tls = { verify,
//! ca, sni }` on a server or a named pool): whether and how the server's
//! certificate is verified, the name sent in SNI, and the rustls client
//! config built from them when the config was validated. The `ca` file is
//! read once, by the master, at load and at each reload; workers and the
//! health checker inherit the built config and never touch the disk.

use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// A server's `tls` table.
#[derive(Clone)]
pub struct OriginTls {
    /// `verify = true` (the default): the server's chain must lead to `ca`
    /// and name the server (`sni`, else its address). `false`: anything is
    /// accepted (insecure: encryption without authentication).
    pub verify: bool,
    /// `ca`: the PEM file of the trusted roots (resolved against the
    /// config's directory); required with `verify = true`.
    pub ca_path: Option<PathBuf>,
    /// The roots read from `ca` (compared on reload).
    pub roots: Vec<CertificateDer<'static>>,
    /// `sni`: the name sent (and verified); default: the host part of the
    /// server's `addr` when it is a name; `None`: no SNI, the address is
    /// verified instead.
    pub sni: Option<String>,
    /// The rustls client config (ring provider; TLS 1.2 and 1.3).
    pub config: Arc<ClientConfig>,
}

impl OriginTls {
    /// The name to hand rustls for a connection to `ip`: `sni` when set
    /// (sent, and the certificate must carry it), else the address (not
    /// sent; verified against the certificate's IP names).
    pub fn server_name(&self, ip: IpAddr) -> ServerName<'static> {
        self.sni
            .as_deref()
            .and_then(|n| ServerName::try_from(n.to_string()).ok())
            .unwrap_or(ServerName::IpAddress(ip.into()))
    }

    /// A new client-side TLS state for a connection to `ip`.
    pub fn connect(&self, ip: IpAddr) -> std::io::Result<rustls::ClientConnection> {
        rustls::ClientConnection::new(self.config.clone(), self.server_name(ip))
            .map_err(std::io::Error::other)
    }
}

impl PartialEq for OriginTls {
    fn eq(&self, other: &OriginTls) -> bool {
        self.verify == other.verify
            && self.ca_path == other.ca_path
            && self.roots == other.roots
            && self.sni == other.sni
    }
}

impl std::fmt::Debug for OriginTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginTls")
            .field("verify", &self.verify)
            .field("ca_path", &self.ca_path)
            .field("sni", &self.sni)
            .finish_non_exhaustive()
    }
}

/// Accepts any certificate (`verify = false`): the handshake's signatures
/// are still checked, so the session is encrypted, but whoever answers at
/// the address is trusted.
#[derive(Debug)]
pub struct NoVerify(pub Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Builds the client config: verified against `roots`, or not at all.
pub fn client_config(
    verify: bool,
    roots: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = if verify {
        let mut store = rustls::RootCertStore::empty();
        for c in roots {
            store.add(c.clone()).map_err(|e| e.to_string())?;
        }
        builder.with_root_certificates(store).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The default SNI of a server written as `addr`: its host part when that
/// is a DNS name (not an IP address, not an SRV name).
pub fn default_sni(addr: &str) -> Option<String> {
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h,
        None => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.starts_with('_') || host.parse::<IpAddr>().is_ok() {
        return None;
    }
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::default_sni;

    #[test]
    fn the_default_sni_is_the_host_part_of_a_named_addr() {
        assert_eq!(
            default_sni("api.example.com:443").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(default_sni("10.0.0.1:443"), None);
        assert_eq!(default_sni("[::1]:443"), None);
        assert_eq!(default_sni("_https._tcp.example.com"), None);
    }
}
