//! Owns how a TLS listen's rustls `ServerConfig` is built from its loaded
//! certificates (in the worker, from memory: no disk): the ring provider,
//! TLS 1.2 and 1.3 with rustls's default cipher suites, ALPN `http/1.1` in
//! `mode = "http"`, and [`SniResolver`], which picks the certificate by the
//! client's SNI name — an exact DNS name of a certificate first, then a
//! wildcard (`*.example.com` covers one label), else the first certificate;
//! session tickets from `tickets.rs`, shared by the generation's workers.

use crate::config::tls::TlsListen;
use crate::config::{ListenConfig, Mode};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

/// Certificates by name: exact names, wildcard suffixes, the default.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` is stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    /// The resolver over `tls.certs`; `None` when there is none. When two
    /// certificates carry one name, the first in the file wins.
    pub fn new(tls: &TlsListen) -> Option<SniResolver> {
        let default = tls.certs.first()?.key.clone();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for c in &tls.certs {
            for n in &c.names {
                match n.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_string()),
                    None => exact.entry(n.clone()),
                }
                .or_insert_with(|| c.key.clone());
            }
        }
        Some(SniResolver {
            exact,
            wildcard,
            default,
        })
    }

    /// The certificate for `name` (as the client sent it in SNI).
    pub fn pick(&self, name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = name else {
            return &self.default;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return k;
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(k) = self.wildcard.get(parent)
        {
            return k;
        }
        &self.default
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()).clone())
    }
}

/// The rustls config of a listen with `tls`; `None` for a plain listen.
pub fn server_config(listen: &ListenConfig) -> Result<Option<Arc<ServerConfig>>, rustls::Error> {
    let Some(tls) = &listen.tls else {
        return Ok(None);
    };
    let Some(resolver) = SniResolver::new(tls) else {
        return Ok(None);
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    // Tickets sealed under the generation's key: any worker resumes them.
    if let Some(t) = super::tickets::SharedTicketer::new(&tls.ticket_key.0) {
        config.ticketer = Arc::new(t);
    }
    if listen.mode == Mode::Http {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    Ok(Some(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tls::{TicketKey, TlsCert};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    fn cert(names: &[&str]) -> TlsCert {
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        let c = params.self_signed(&key).expect("cert");
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = rustls::crypto::ring::default_provider();
        let ck =
            CertifiedKey::from_der(vec![CertificateDer::from(c.der().to_vec())], der, &provider)
                .expect("certified");
        TlsCert {
            cert_path: names[0].into(),
            key_path: names[0].into(),
            names: names.iter().map(|n| n.to_string()).collect(),
            not_after: 0,
            key: Arc::new(ck),
        }
    }

    #[test]
    fn sni_prefers_exact_names_then_wildcards_then_the_first_certificate() {
        let tls = TlsListen {
            certs: vec![
                cert(&["a.test"]),
                cert(&["*.b.test"]),
                cert(&["x.b.test", "a.test"]),
            ],
            ticket_key: TicketKey::generate(),
        };
        let r = SniResolver::new(&tls).expect("resolver");
        let is = |name: Option<&str>, i: usize| Arc::ptr_eq(r.pick(name), &tls.certs[i].key);
        assert!(
            is(Some("a.test"), 0),
            "the first of two certificates with a name wins"
        );
        assert!(
            is(Some("A.Test."), 0),
            "case and a trailing dot do not matter"
        );
        assert!(is(Some("www.b.test"), 1));
        assert!(is(Some("x.b.test"), 2), "an exact name beats a wildcard");
        assert!(
            is(Some("deep.www.b.test"), 0),
            "a wildcard covers one label only"
        );
        assert!(is(Some("b.test"), 0));
        assert!(is(None, 0));
    }
}
