//! Owns a worker's kernel relay for its `dataplane = "sockmap"` listens:
//! loading it once at start ([`Plane::load`]), and what the worker reports
//! about it. The outcome goes into the listen's shared cell (`dataplane`,
//! on the listen's first server), which `status` reads; the first worker of
//! a generation to report a refusal logs it, so the log says it once per
//! generation, not once per worker or per connection. A refused listen
//! relays in user space (read/write, splice) like `dataplane = "auto"`:
//! refusal never fails a connection.

use super::SockmapRelay;
use crate::bpf::BpfError;
use crate::bpf::relay::Relay;
use crate::config::{Config, Dataplane, ListenConfig, Mode};
use crate::shm::Region;
use crate::worker::session::Session;
use nix::errno::Errno;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

/// `ServerCell::dataplane`: the kernel relays this listen.
pub const REPORT_SOCKMAP: u32 = 1;
/// `ServerCell::dataplane`: refused; the errno is in the bits above 8.
pub const REPORT_REFUSED: u32 = 2;

/// The relay and the worker's epoll fd (to narrow a linked socket's
/// interest to its FIN).
#[derive(Debug)]
pub struct Plane {
    /// The maps and the verdict program.
    pub relay: Relay,
    /// The worker's epoll instance (lives as long as the worker).
    pub epoll: RawFd,
    /// Link every connection at once (the test knob
    /// [`super::LINK_AT_ONCE_ENV`]), not once it earned the link.
    pub link_at_once: bool,
}

impl Plane {
    /// Loads the relay (the kernel may refuse: no CAP_BPF/CAP_NET_ADMIN, no
    /// sockmap, the verifier).
    pub fn load(epoll: RawFd) -> Result<Plane, BpfError> {
        Ok(Plane {
            relay: Relay::load()?,
            epoll,
            link_at_once: std::env::var_os(super::LINK_AT_ONCE_ENV).is_some(),
        })
    }
}

/// Loads the relay when a listen of `config` asks for it, and reports the
/// outcome per such listen (a refusal is logged by the first worker of the
/// generation to see it); None when no listen asks or the kernel refused.
pub fn start(config: &Config, region: &Region, epoll: RawFd) -> Option<Rc<Plane>> {
    let wanted: Vec<usize> = bases(config)
        .filter(|&(l, _)| config.listens[l].dataplane == Dataplane::Sockmap)
        .map(|(_, base)| base)
        .collect();
    if wanted.is_empty() {
        return None;
    }
    let loaded = Plane::load(epoll);
    let outcome = loaded.as_ref().map(|_| ()).map_err(|e| e.errno);
    for (l, base) in bases(config) {
        let listen = &config.listens[l];
        if listen.dataplane == Dataplane::Sockmap
            && report(region, base, outcome)
            && let Err(e) = &loaded
        {
            eprintln!(
                "lbctl worker {}: listen {}: dataplane sockmap refused ({e}): relaying in user space (splice)",
                std::process::id(),
                listen.name
            );
        }
    }
    loaded.ok().map(Rc::new)
}

/// (listen index, global index of its first server) of every listen.
fn bases(config: &Config) -> impl Iterator<Item = (usize, usize)> + '_ {
    config.listens.iter().enumerate().scan(0, |base, (i, l)| {
        let b = *base;
        *base += l.servers.len();
        Some((i, b))
    })
}

/// The session of a new client of `listen` whose socket has `token`: the
/// kernel relay when the listen asks for it and it is loaded.
pub fn session_for(
    plane: &Option<Rc<Plane>>,
    listen: &ListenConfig,
    token: usize,
) -> Option<Session> {
    match plane {
        Some(p)
            if listen.dataplane == Dataplane::Sockmap
                && listen.mode == Mode::Tcp
                && listen.tls.is_none() =>
        {
            Some(Session::Sockmap(Box::new(SockmapRelay::new(
                p.clone(),
                token,
                listen.sockmap_sndbuf,
            ))))
        }
        _ => None,
    }
}

/// Records the outcome for the listen whose first server is `base`; true
/// when this worker is the first to record a refusal (it logs it).
pub fn report(region: &Region, base: usize, outcome: Result<(), Errno>) -> bool {
    if region.servers() <= base {
        return false;
    }
    let code = match outcome {
        Ok(()) => REPORT_SOCKMAP,
        Err(e) => REPORT_REFUSED | ((e as u32) << 8),
    };
    let cell = &region.server(base).dataplane;
    let first = cell.compare_exchange(0, code, Relaxed, Relaxed).is_ok();
    if code == REPORT_SOCKMAP {
        // A success overrides nothing: a refusal seen by another worker stays.
        return false;
    }
    first
        || cell
            .compare_exchange(REPORT_SOCKMAP, code, Relaxed, Relaxed)
            .is_ok()
}

/// The words `status` shows for a listen's data plane: `splice` for
/// `dataplane = "auto"`; for `sockmap`, `sockmap`, or
/// `splice (sockmap refused: EPERM)` where the kernel refused.
pub fn describe(sockmap: bool, code: u32) -> String {
    if !sockmap {
        return "splice".into();
    }
    match code & 0xff {
        REPORT_SOCKMAP => "sockmap".into(),
        REPORT_REFUSED => {
            let errno = Errno::from_raw((code >> 8) as i32);
            format!("splice (sockmap refused: {errno:?})")
        }
        _ => "sockmap (starting)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_reported_once_and_described_with_its_errno() {
        let r = Region::new(2, 1).expect("region");
        assert!(!report(&r, 0, Ok(())));
        assert_eq!(
            describe(true, r.server(0).dataplane.load(Relaxed)),
            "sockmap"
        );
        assert!(report(&r, 0, Err(Errno::EPERM)));
        assert!(!report(&r, 0, Err(Errno::EPERM)));
        assert!(!report(&r, 0, Ok(())));
        let code = r.server(0).dataplane.load(Relaxed);
        assert_eq!(describe(true, code), "splice (sockmap refused: EPERM)");
        assert_eq!(describe(false, code), "splice");
        assert_eq!(describe(true, 0), "sockmap (starting)");
    }
}
