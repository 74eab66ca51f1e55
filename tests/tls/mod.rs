//! Owns the TLS tests: termination with SNI (curl with `--cacert` and
//! `--resolve`, two names, two certificates), protocol versions (`openssl
//! s_client -tls1_2` / `-tls1_3`), `X-Forwarded-Proto: https`, TCP-mode
//! offload, a stalled handshake closed by the timeout while another client
//! is served (terminate.rs); bad certificates refused by `check` and by
//! `reload`, a renewed certificate picked up by `reload` (certs.rs).
//! Origination to servers over TLS: https and re-encrypted tcp, SNI, a
//! wrong CA failed over, health checks with the handshake (originate.rs,
//! against tls_backend.rs).
//! Certificates are made at test time (pki.rs), never committed.

mod certs;
mod client;
mod originate;
mod pki;
mod terminate;
mod tls_backend;

use crate::util::Conf;
use std::process::{Command, Output, Stdio};

/// Runs a command (curl, openssl) with stdin closed; `None` when the tool
/// is missing (the caller skips, as `.ci/run` installs both).
pub fn tool(program: &str, args: &[&str]) -> Option<Output> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
}

/// A one-worker-or-more config with TLS on the first listen.
pub fn with_tls(conf: Conf, line: &str) -> Conf {
    conf.listen(|l| l.line(line))
}
