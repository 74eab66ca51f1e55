//! Owns the tests' certificates: a throwaway CA and leaf certificates made
//! with rcgen at test time and written as PEM files into the test's temp dir
//! (no key is ever committed).

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, date_time_ymd};
use std::path::{Path, PathBuf};

/// A test CA: its PEM path (for `curl --cacert`) and its issuer.
pub struct Ca {
    pub pem: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf written to disk: the certificate and key files, and its DER.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: Vec<u8>,
}

impl Ca {
    /// A new CA written as `ca.pem` in `dir`.
    pub fn new(dir: &Path) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "lbctl test CA");
        let cert = params.self_signed(&key).expect("CA cert");
        let pem = dir.join("ca.pem");
        std::fs::write(&pem, cert.pem()).expect("write CA");
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `names`, written as `<file>.pem` and `<file>.key`.
    pub fn leaf(&self, dir: &Path, file: &str, names: &[&str]) -> Leaf {
        self.leaf_with(dir, file, names, |_| {})
    }

    /// A leaf that expired in 2020.
    pub fn expired_leaf(&self, dir: &Path, file: &str, names: &[&str]) -> Leaf {
        self.leaf_with(dir, file, names, |p| {
            p.not_before = date_time_ymd(2019, 1, 1);
            p.not_after = date_time_ymd(2020, 1, 1);
        })
    }

    fn leaf_with(
        &self,
        dir: &Path,
        file: &str,
        names: &[&str],
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, file);
        edit(&mut params);
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        let (c, k) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}.key")),
        );
        write_atomic(&c, cert.pem().as_bytes());
        write_atomic(&k, key.serialize_pem().as_bytes());
        Leaf {
            cert: c,
            key: k,
            der: cert.der().to_vec(),
        }
    }
}

/// Writes through a temp file and a rename (as certbot's symlink swap:
/// a reader never sees half a file).
pub fn write_atomic(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// The `tls = {...}` line of a listen serving `leaves` (the first is the
/// default).
pub fn tls_line(leaves: &[&Leaf]) -> String {
    let certs: Vec<String> = leaves
        .iter()
        .map(|l| {
            format!(
                "{{ cert = \"{}\", key = \"{}\" }}",
                l.cert.display(),
                l.key.display()
            )
        })
        .collect();
    format!("tls = {{ certs = [ {} ] }}", certs.join(", "))
}
