//! Owns what the kernel data plane asks a socket instead of reading it:
//! `TCP_INFO` (state, bytes acked, bytes received), the receive and send
//! queue lengths (`SIOCINQ`, `SIOCOUTQ`), and the epoll interest that
//! leaves only the peer's FIN and errors to wake the worker, the send
//! buffer it raises at the link ([`raise_sndbuf`]) and whether urgent data
//! is pending ([`urgent_pending`]), which holds the link. (`unread` also tells
//! `defer_accept`'s connect whether the client's bytes wait.)
//!
//! Byte accounting from these, per socket:
//! - *consumed* (bytes taken from its receive queue, by user space or by
//!   the verdict program) = `bytes_received - inq - fin`, where `fin` is 1
//!   once the peer's FIN arrived (the kernel counts the FIN's sequence
//!   number in `bytes_received`; measured, Linux 6.18);
//! - *entered* (bytes written into its send queue) = `bytes_acked + outq`
//!   while its own FIN is not sent.
//!
//! Each figure is read with `TCP_INFO` first and the queue length second,
//! so a packet in between can only make it smaller, never larger: a check
//! "every byte consumed from A entered B" that holds on these figures
//! holds for the kernel's. The bases these figures are counted from, read
//! at the link, must not be low either: [`settled`] reads until no packet
//! moved them.

use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// `TCP_CLOSE_WAIT`, `TCP_LAST_ACK`, `TCP_CLOSING`, `TCP_TIME_WAIT`,
/// `TCP_CLOSE`: the peer's FIN arrived (or the socket is closed).
const FIN_STATES: [u8; 5] = [8, 9, 11, 6, 7];

/// The prefix of `struct tcp_info` (linux/tcp.h) up to `tcpi_bytes_received`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct TcpInfo {
    state: u8,
    _small: [u8; 7],
    _u32s: [u32; 24],
    _pacing: [u64; 2],
    bytes_acked: u64,
    bytes_received: u64,
}

/// What `TCP_INFO` says about one socket.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// The peer's FIN has arrived (or the socket is closed).
    pub fin: bool,
    /// `tcpi_bytes_acked`.
    pub acked: u64,
    /// `tcpi_bytes_received`.
    pub received: u64,
}

impl Info {
    /// Bytes taken from the receive queue, `inq` (`SIOCINQ`) still in it:
    /// `tcpi_bytes_received` counts the peer's FIN as a byte.
    fn consumed(&self, inq: u64) -> u64 {
        self.received.saturating_sub(inq + u64::from(self.fin))
    }
}

/// `TCP_INFO` of `fd`.
pub fn info(fd: RawFd) -> Result<Info, Errno> {
    let mut ti = TcpInfo::default();
    let mut len = std::mem::size_of::<TcpInfo>() as libc::socklen_t;
    // SAFETY: `ti` is a live #[repr(C)] local of `len` bytes; the kernel
    // writes at most `len` bytes and updates `len`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut ti as *mut TcpInfo).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    if (len as usize) < std::mem::size_of::<TcpInfo>() {
        return Err(Errno::ENOPROTOOPT);
    }
    Ok(Info {
        fin: FIN_STATES.contains(&ti.state),
        acked: ti.bytes_acked,
        received: ti.bytes_received,
    })
}

/// `SIOCINQ` (`inq`) or `SIOCOUTQ` of `fd`.
fn queue(fd: RawFd, inq: bool) -> Result<u64, Errno> {
    let mut n: libc::c_int = 0;
    let p = &mut n as *mut libc::c_int;
    // SAFETY: SIOCINQ/SIOCOUTQ write one c_int into the live local `n`.
    let r = unsafe {
        if inq {
            libc::ioctl(fd, libc::FIONREAD, p)
        } else {
            libc::ioctl(fd, libc::TIOCOUTQ, p)
        }
    };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// Bytes waiting in `fd`'s receive queue (`SIOCINQ`).
pub fn unread(fd: RawFd) -> Result<u64, Errno> {
    queue(fd, true)
}

/// What [`consumed`] reads of a socket.
#[derive(Debug, Clone, Copy)]
pub struct Consumed {
    /// Bytes taken from its receive queue so far.
    pub bytes: u64,
    /// Its peer's FIN has arrived.
    pub fin: bool,
    /// Bytes still in its receive queue (`SIOCINQ`).
    pub inq: u64,
    /// Bytes of its own the peer has acknowledged (`tcpi_bytes_acked`),
    /// which move as the peer takes what was sent to it.
    pub acked: u64,
}

/// Bytes taken from `fd`'s receive queue so far, and the rest of
/// [`Consumed`].
pub fn consumed(fd: RawFd) -> Result<Consumed, Errno> {
    let i = info(fd)?;
    let inq = queue(fd, true)?;
    Ok(Consumed {
        bytes: i.consumed(inq),
        fin: i.fin,
        inq,
        acked: i.acked,
    })
}

/// Bytes written into `fd`'s send queue so far (before its own FIN).
pub fn entered(fd: RawFd) -> Result<u64, Errno> {
    let i = info(fd)?;
    let outq = queue(fd, false)?;
    Ok(i.acked + outq)
}

/// [`entered`] of `fd` read the other way round (`SIOCOUTQ`, then
/// `TCP_INFO`): an ACK in between counts its bytes twice, so the figure can
/// come out high, never low. For deciding that bytes are still owed to
/// `fd`, where too low would be the harmful error. Also the bytes queued
/// (`SIOCOUTQ`), for [`has_room`].
pub fn entered_or_more(fd: BorrowedFd<'_>) -> Result<(u64, u64), Errno> {
    let outq = queue(fd.as_raw_fd(), false)?;
    let i = info(fd.as_raw_fd())?;
    Ok((i.acked + outq, outq))
}

/// Whether `fd`'s send queue, holding `outq` bytes, has room: under a
/// quarter of its send buffer. The kernel's psock worker sends to a socket
/// only while it is writable (its write memory, bytes and overhead, under
/// half the send buffer), so bytes waiting for a socket with room wait for
/// the kernel, not for the peer to read.
pub fn has_room(fd: BorrowedFd<'_>, outq: u64) -> Result<bool, Errno> {
    let sndbuf = getsockopt(&fd, sockopt::SndBuf)?;
    Ok(outq < (sndbuf / 4) as u64)
}

/// How many times a settled figure is read before the link gives up.
const SETTLE_TRIES: usize = 8;

/// [`consumed`] and [`entered`] of `fd` as bases at the link: read
/// `TCP_INFO`, `SIOCINQ`, `SIOCOUTQ`, then `TCP_INFO` again until no packet
/// moved the counters in between. A plain reading can come out low (bytes
/// that arrive between its two calls are queued but not yet in
/// `bytes_received`; an ACK between them takes bytes off the send queue
/// before `bytes_acked` shows them): fine for a current figure, but a low
/// entered base would let a FIN go before the bytes it must follow, and a
/// low consumed base hold it for bytes that never come. Before the link the
/// worker is the socket's only reader and writer, so only packets move
/// these figures. EAGAIN when packets kept moving them.
pub fn settled(fd: RawFd) -> Result<(u64, u64), Errno> {
    for _ in 0..SETTLE_TRIES {
        let i = info(fd)?;
        let inq = queue(fd, true)?;
        let outq = queue(fd, false)?;
        if info(fd)? == i {
            return Ok((i.consumed(inq), i.acked + outq));
        }
    }
    Err(Errno::EAGAIN)
}

/// Makes `fd`'s registration in `epoll` (under `token`) wake only for the
/// peer's FIN (EPOLLRDHUP), errors and hang-ups (always on): the data-ready
/// wake-ups the kernel relay raises for every redirected skb no longer
/// reach the worker.
pub fn watch_fin_only(epoll: RawFd, fd: RawFd, token: usize) -> Result<(), Errno> {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLRDHUP | libc::EPOLLET) as u32,
        u64: token as u64,
    };
    // SAFETY: `ev` is a live epoll_event; EPOLL_CTL_MOD only reads it.
    let r = unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_MOD, fd, &mut ev) };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Raises `fd`'s send buffer to `bytes` (`sockmap_sndbuf`, as SO_SNDBUF
/// takes it: the kernel doubles it) where it is below; never lowers it, and
/// 0 leaves it alone. SO_SNDBUFFORCE only (CAP_NET_ADMIN, which the relay
/// needs anyway): plain SO_SNDBUF is capped by `net.core.wmem_max` (208 KiB
/// on a stock kernel), below what autotuning gives a loopback socket, and
/// would lock the buffer there. Best effort: a socket that keeps its buffer
/// is still relayed.
///
/// Why at the link: when a redirected skb finds the destination's send
/// buffer full, the kernel's psock worker retries on a 1-jiffy timer (4 ms
/// at HZ=250) rather than on the ACK that frees room, so a bulk transfer
/// through a buffer sized by autotuning stalls every few milliseconds.
pub fn raise_sndbuf(fd: BorrowedFd<'_>, bytes: usize) {
    if bytes == 0 {
        return;
    }
    let current = getsockopt(&fd, sockopt::SndBuf).unwrap_or(0);
    if current >= bytes.saturating_mul(2) {
        return;
    }
    let _ = setsockopt(&fd, sockopt::SndBufForce, &bytes);
}

/// True when urgent data (TCP `MSG_OOB`) is pending on `fd`, announced or
/// arrived and not yet read past. While it is, `SIOCINQ` stops at the
/// urgent mark, so the byte figures would be off: the link waits until user
/// space has read past it. (`recv(MSG_OOB | MSG_PEEK)` says EINVAL when
/// there is none.)
pub fn urgent_pending(fd: RawFd) -> bool {
    use nix::sys::socket::{MsgFlags, recv};
    let mut byte = [0u8; 1];
    let flags = MsgFlags::MSG_OOB | MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    matches!(recv(fd, &mut byte, flags), Ok(_) | Err(Errno::EAGAIN))
}

#[cfg(test)]
mod tests {
    use super::{entered_or_more, has_room, raise_sndbuf, urgent_pending};
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsFd, AsRawFd};

    fn sndbuf(s: &TcpStream) -> usize {
        getsockopt(&s.as_fd(), sockopt::SndBuf).expect("SO_SNDBUF")
    }

    #[test]
    fn raise_sndbuf_raises_to_the_floor_and_never_lowers() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let s = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        // Whatever autotuning gave it, start from a known size (past
        // wmem_max, as the relay sets it); without CAP_NET_ADMIN there is
        // nothing to test.
        let start = 512 * 1024;
        if setsockopt(&s.as_fd(), sockopt::SndBufForce, &start).is_err() {
            eprintln!("no CAP_NET_ADMIN: SO_SNDBUFFORCE refused, skipped");
            return;
        }
        assert_eq!(sndbuf(&s), 2 * start);
        let floor = 3 * 1024 * 1024;
        raise_sndbuf(s.as_fd(), floor);
        assert_eq!(sndbuf(&s), 2 * floor, "raised past wmem_max");
        // Above the floor already, or 0: left as it is.
        raise_sndbuf(s.as_fd(), 256 * 1024);
        assert_eq!(sndbuf(&s), 2 * floor);
        raise_sndbuf(s.as_fd(), 0);
        assert_eq!(sndbuf(&s), 2 * floor);
    }

    #[test]
    fn urgent_data_is_pending_until_read_past() {
        use std::io::{Read, Write};
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (mut s, _) = l.accept().expect("accept");
        assert!(!urgent_pending(s.as_raw_fd()), "nothing sent yet");
        c.write_all(b"abc").expect("write");
        let sent = nix::sys::socket::send(c.as_raw_fd(), b"!", nix::sys::socket::MsgFlags::MSG_OOB)
            .expect("send MSG_OOB");
        assert_eq!(sent, 1);
        c.write_all(b"def").expect("write");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !urgent_pending(s.as_raw_fd()) {
            assert!(
                std::time::Instant::now() < deadline,
                "urgent data never seen"
            );
            std::thread::yield_now();
        }
        // A plain read skips the urgent byte; once past its mark, none is
        // pending.
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        while got.len() < 6 {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "EOF before the bytes");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"abcdef");
        assert!(!urgent_pending(s.as_raw_fd()), "read past the mark");
    }

    #[test]
    fn a_send_queue_a_peer_does_not_read_has_no_room_and_an_empty_one_has() {
        use std::io::Write;
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (_quiet, _) = l.accept().expect("accept");
        // (`tcpi_bytes_acked` may count the SYN: a base, as at the link.)
        let (base, outq) = entered_or_more(c.as_fd()).expect("entered");
        assert_eq!(outq, 0);
        assert!(has_room(c.as_fd(), outq).expect("room"), "nothing queued");
        // The peer never reads: write until the send buffer is full.
        c.set_nonblocking(true).expect("nonblocking");
        let chunk = [7u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match c.write(&chunk) {
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        let (entered, outq) = entered_or_more(c.as_fd()).expect("entered");
        assert_eq!(entered - base, written, "every byte written entered");
        assert!(outq > 0, "bytes wait for the peer");
        assert!(
            !has_room(c.as_fd(), outq).expect("room"),
            "{outq} bytes queued of a {}-byte send buffer: full",
            sndbuf(&c)
        );
    }
}
