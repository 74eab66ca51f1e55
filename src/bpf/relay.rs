//! Owns the kernel relay: two sockhash maps and the sk_skb stream-verdict
//! program that moves each linked socket's incoming bytes to its peer's
//! egress, so they never reach user space.
//!
//! - `peers` (no program): a socket under its *peer's* socket cookie. The
//!   verdict program looks itself up here: `peers[cookie(self)]` is the
//!   socket its bytes go to.
//! - `relay` (the verdict program attached, no stream parser: since Linux
//!   5.x a verdict alone runs on every skb read from the receive queue): a
//!   socket under its own cookie; being in it is what turns the redirect on.
//!
//! The program (16 instructions) is: drop a zero-length skb (a bare FIN,
//! which would otherwise reach the peer's send path as a zero-length send
//! and break its psock with EPIPE), else
//! `return bpf_sk_redirect_hash(skb, &peers, &cookie(skb), 0)` (egress).
//!
//! [`Relay::link`] puts both sockets in `peers` before either enters
//! `relay`, so the first byte redirected always finds its peer; bytes that
//! came in before the link wait in the receive queue and are pushed through
//! the verdict by [`kick`] (setting `SO_RCVLOWAT` runs the socket's
//! data-ready callback). A socket leaves both maps when it is closed (the
//! kernel's `sock_map_close`), so closing the connection's fds is the
//! removal.

use super::asm::{self, Insn, R0, R1, R2, R3, R4, R6, R10};
use super::{BpfError, map_create, map_delete, map_update_fd, prog_attach, prog_load};
use nix::errno::Errno;
use nix::libc;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

const HELPER_GET_SOCKET_COOKIE: i32 = 46;
const HELPER_SK_REDIRECT_HASH: i32 = 72;
const SK_DROP: i32 = 0;

/// Sockets each map can hold (two per relayed connection).
pub const MAX_SOCKETS: u32 = 1 << 16;

/// The verdict program; `peers` is the fd of the peers map.
pub fn verdict_program(peers: RawFd) -> Vec<Insn> {
    let [ld0, ld1] = asm::ld_map_fd(R2, peers);
    vec![
        asm::mov64_reg(R6, R1),
        asm::ldx_w(R0, R6, 0), // skb->len
        asm::jeq_imm(R0, 0, 11),
        asm::mov64_reg(R1, R6),
        asm::call(HELPER_GET_SOCKET_COOKIE),
        asm::stx_dw(R10, -8, R0),
        asm::mov64_reg(R1, R6),
        ld0,
        ld1,
        asm::mov64_reg(R3, R10),
        asm::add64_imm(R3, -8),
        asm::mov64_imm(R4, 0),
        asm::call(HELPER_SK_REDIRECT_HASH),
        asm::exit(),
        asm::mov64_imm(R0, SK_DROP),
        asm::exit(),
    ]
}

/// The loaded maps and program of one worker.
#[derive(Debug)]
pub struct Relay {
    peers: OwnedFd,
    relay: OwnedFd,
    _prog: OwnedFd,
}

/// Why two sockets could not be linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// Nothing changed: the connection goes on in user space.
    Refused(Errno),
    /// The second socket was refused after the first one's verdict ran (it
    /// was half-closed in between): the first one's verdict is off again,
    /// but bytes it redirected may still be on their way into the second
    /// socket. Once they are there ([`super::relay`] users compare the
    /// counters), [`Relay::unlink`] undoes the rest.
    Partial(Errno, u64, u64),
}

impl Relay {
    /// Creates the maps, loads the program and attaches it; any refusal
    /// (no CAP_BPF/CAP_NET_ADMIN, no sockmap, the verifier) is returned
    /// and nothing is left behind.
    pub fn load() -> Result<Relay, BpfError> {
        let peers = map_create(MAP_TYPE, 8, 8, MAX_SOCKETS, "lbctl_peers")?;
        let relay = map_create(MAP_TYPE, 8, 8, MAX_SOCKETS, "lbctl_relay")?;
        let insns = verdict_program(peers.as_raw_fd());
        let prog = prog_load(super::PROG_TYPE_SK_SKB, &insns, "lbctl_verdict")?;
        prog_attach(&relay, &prog, super::ATTACH_SK_SKB_STREAM_VERDICT)?;
        Ok(Relay {
            peers,
            relay,
            _prog: prog,
        })
    }

    /// Links two connected TCP sockets both ways; returns their cookies.
    pub fn link(&self, a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> Result<(u64, u64), LinkError> {
        let ca = cookie(a).map_err(LinkError::Refused)?;
        let cb = cookie(b).map_err(LinkError::Refused)?;
        let (a, b) = (a.as_raw_fd(), b.as_raw_fd());
        let (ka, kb) = (ca.to_ne_bytes(), cb.to_ne_bytes());
        map_update_fd(&self.peers, &ka, b).map_err(LinkError::Refused)?;
        if let Err(e) = map_update_fd(&self.peers, &kb, a) {
            let _ = map_delete(&self.peers, &ka);
            return Err(LinkError::Refused(e));
        }
        if let Err(e) = map_update_fd(&self.relay, &ka, a) {
            let _ = map_delete(&self.peers, &ka);
            let _ = map_delete(&self.peers, &kb);
            return Err(LinkError::Refused(e));
        }
        if let Err(e) = map_update_fd(&self.relay, &kb, b) {
            // Stops a's verdict; its bytes already redirected stay queued
            // for b, which is still in `peers`.
            let _ = map_delete(&self.relay, &ka);
            return Err(LinkError::Partial(e, ca, cb));
        }
        Ok((ca, cb))
    }

    /// Takes two sockets of a [`LinkError::Partial`] link out of `peers`
    /// (call it once every redirected byte reached its socket).
    pub fn unlink(&self, ca: u64, cb: u64) {
        let _ = map_delete(&self.peers, &ca.to_ne_bytes());
        let _ = map_delete(&self.peers, &cb.to_ne_bytes());
    }

    /// The first key left in the peers map (tests: empty after close).
    pub fn any_peer(&self) -> Result<Option<u64>, Errno> {
        super::map_first_key_u64(&self.peers)
    }
}

const MAP_TYPE: u32 = super::MAP_TYPE_SOCKHASH;

/// The socket's cookie (`SO_COOKIE`, via socket2): unique for the
/// socket's life.
fn cookie(fd: BorrowedFd<'_>) -> Result<u64, Errno> {
    socket2::SockRef::from(&fd)
        .cookie()
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// Runs the socket's data-ready callback now (via `SO_RCVLOWAT`), so bytes
/// that were already queued when it was linked go through the verdict.
pub fn kick(fd: RawFd) -> Result<(), Errno> {
    let one: libc::c_int = 1;
    // SAFETY: `one` is a live c_int and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

#[cfg(test)]
mod tests;
