//! Owns `defer_accept` and `smart_connect` (listen keys). `defer_accept`:
//! TCP_DEFER_ACCEPT on the worker's listening sockets, so the kernel hands
//! a connection over only once the client's first bytes are in (or after
//! 1 s without them), and the connect to a server made with those bytes
//! waiting asks the kernel to hold the handshake's last ACK back
//! (TCP_QUICKACK off before connect) so that the bytes, forwarded as soon
//! as the connect completes, carry it: one segment less to the server and
//! one wake-up less for it (accept and request at once). HAProxy's
//! `defer-accept` and `tcp-smart-connect`, nginx's `deferred`.
//!
//! With `defer_accept` alone the ACK is held only when the client's bytes
//! are already readable: a server that speaks first would otherwise wait
//! for the kernel's delayed-ACK timer (about 200 ms) before its accept
//! returns.
//! `smart_connect` holds it on every connect, accepting that wait for
//! server-first protocols: without the deferred accept the connect starts
//! as soon as the client's handshake is done, alongside its first bytes,
//! instead of after them, and the ACK still goes with them ([`HoldAck`]).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use mio::net::TcpStream;
use nix::libc;
use socket2::{Domain, Protocol, Socket, Type};

/// How long the kernel waits for a client's first bytes (seconds, the
/// TCP_DEFER_ACCEPT value; it rounds up to its SYN-ACK retransmits).
const WAIT_SECS: libc::c_int = 1;

/// Sets (`on`) or clears TCP_DEFER_ACCEPT on a listening socket. The
/// sockets are shared with the other workers and kept across reloads, so a
/// generation sets its config's value either way.
pub fn set_listener(l: &impl AsRawFd, on: bool) -> io::Result<()> {
    let secs: libc::c_int = if on { WAIT_SECS } else { 0 };
    // SAFETY: `secs` is a live c_int and its size is passed; the fd is a
    // socket this process holds.
    let r = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// When a listen's connects hold the handshake's last ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldAck {
    /// Never (the default).
    Never,
    /// When the client's bytes are already in (`defer_accept`).
    WithBytes,
    /// Always (`smart_connect`).
    Always,
}

impl HoldAck {
    /// The listen's rule.
    pub fn of(listen: &crate::config::ListenConfig) -> HoldAck {
        if listen.smart_connect {
            HoldAck::Always
        } else if listen.defer_accept {
            HoldAck::WithBytes
        } else {
            HoldAck::Never
        }
    }

    /// Whether this connect, for the client socket `client`, holds it.
    pub fn now(self, client: RawFd) -> bool {
        match self {
            HoldAck::Never => false,
            HoldAck::WithBytes => bytes_waiting(client),
            HoldAck::Always => true,
        }
    }
}

/// True when the client's first bytes wait in its socket (SIOCINQ): only
/// then does `defer_accept` hold the handshake's last ACK for them.
pub fn bytes_waiting(client: RawFd) -> bool {
    super::sockmap::probe::unread(client).is_ok_and(|n| n > 0)
}

/// A nonblocking connect to `addr` (in progress when it returns); with
/// `hold_ack` the handshake's last ACK waits for the first bytes written.
pub fn connect(addr: SocketAddr, hold_ack: bool) -> io::Result<TcpStream> {
    if !hold_ack {
        return TcpStream::connect(addr);
    }
    let ty = Type::STREAM.nonblocking().cloexec();
    let socket = Socket::new(Domain::for_address(addr), ty, Some(Protocol::TCP))?;
    socket.set_tcp_quickack(false)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn the_listener_option_is_set_and_cleared() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let get = || {
            let mut v: libc::c_int = -1;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: `v` and `len` are live locals of the sizes given.
            let r = unsafe {
                libc::getsockopt(
                    l.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_DEFER_ACCEPT,
                    (&mut v as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            assert_eq!(r, 0, "getsockopt");
            v
        };
        set_listener(&l, true).expect("set");
        assert!(get() > 0, "set");
        set_listener(&l, false).expect("clear");
        assert_eq!(get(), 0, "cleared");
    }

    #[test]
    fn waiting_bytes_are_seen() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (mut s, _) = l.accept().expect("accept");
        assert!(!bytes_waiting(s.as_raw_fd()), "nothing sent yet");
        c.write_all(b"hi").expect("write");
        // Loopback: the bytes are a moment away.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !bytes_waiting(s.as_raw_fd()) {
            assert!(
                std::time::Instant::now() < deadline,
                "the bytes never showed"
            );
            std::thread::yield_now();
        }
        let mut b = [0u8; 2];
        s.read_exact(&mut b).expect("read");
        assert!(!bytes_waiting(s.as_raw_fd()), "all read");
    }

    #[test]
    fn a_held_ack_connect_carries_its_first_bytes() {
        use std::os::fd::{FromRawFd, IntoRawFd};
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let held = connect(l.local_addr().expect("addr"), true).expect("connect");
        // SAFETY: the fd is taken from `held`, which gives it up.
        let mut c = unsafe { std::net::TcpStream::from_raw_fd(held.into_raw_fd()) };
        c.set_nonblocking(false).expect("blocking");
        c.write_all(b"hello").expect("write"); // waits for the connect
        let (mut s, _) = l.accept().expect("accept");
        let mut b = [0u8; 5];
        s.read_exact(&mut b).expect("read");
        assert_eq!(&b, b"hello");
    }
}
