//! Owns the classification of socket errors shared by the worker and the
//! health checker: which errors are this host's own shortage (descriptors,
//! memory, local ports) rather than a peer's failure.

use std::io;

/// Errors that mean this process ran short of resources, not that the server failed.
/// Out of descriptors, kernel memory or local ports: a problem of this host,
/// not of a peer (never counted against a backend, by checks or workers).
pub fn is_local_shortage(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            nix::libc::EMFILE
                | nix::libc::ENFILE
                | nix::libc::ENOBUFS
                | nix::libc::ENOMEM
                | nix::libc::EADDRNOTAVAIL
                | nix::libc::EADDRINUSE
        )
    )
}
