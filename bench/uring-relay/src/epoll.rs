//! The epoll loop: edge-triggered, nonblocking sockets, one syscall per step (accept4,
//! socket, connect, read, write, shutdown, close), as lbctl's worker relays small exchanges.

use crate::sys::{self, check};
use std::io;
use std::net::SocketAddrV4;
use std::os::fd::RawFd;

const LISTENER: u64 = u64::MAX;
const BUF: usize = 16 * 1024;

/// One direction: bytes read from `from` not yet written to the peer.
struct Dir {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    shut: bool,
    fin_seen: bool, // EPOLLRDHUP on `from`: its FIN is queued behind the bytes still unread
}

struct Conn {
    fds: [RawFd; 2], // client, server
    connected: bool,
    dirs: [Dir; 2], // client->server, server->client
}

enum Step {
    Open,
    Done,
    Failed,
}

pub fn run(listener: RawFd, backends: &[SocketAddrV4]) -> io::Result<()> {
    // SAFETY: epoll_create1 takes no pointers.
    let ep = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: fcntl(2) with integer arguments only.
    check(unsafe { libc::fcntl(listener, libc::F_SETFL, libc::O_NONBLOCK) })?;
    add(ep, listener, libc::EPOLLIN as u32, LISTENER)?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut next_backend = 0usize;
    let mut pool: Vec<Vec<u8>> = Vec::new(); // the buffers of closed connections, reused
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    loop {
        // SAFETY: events is a live buffer of events.len() entries.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in &events[..n as usize] {
            let (token, flags) = (ev.u64, ev.events);
            if token == LISTENER {
                accept_all(
                    ep,
                    listener,
                    backends,
                    &mut next_backend,
                    &mut conns,
                    &mut free,
                    &mut pool,
                );
                continue;
            }
            let slot = (token >> 1) as usize;
            let Some(conn) = conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if token & 1 == 1 && !conn.connected && flags & libc::EPOLLOUT as u32 != 0 {
                if so_error(conn.fds[1]) != 0 {
                    finish(&mut conns, &mut free, &mut pool, slot);
                    continue;
                }
                conn.connected = true;
            }
            if flags & libc::EPOLLRDHUP as u32 != 0 {
                conn.dirs[(token & 1) as usize].fin_seen = true;
            }
            if !conn.connected {
                continue;
            }
            match pump(conn) {
                Step::Open => {}
                Step::Done | Step::Failed => finish(&mut conns, &mut free, &mut pool, slot),
            }
        }
    }
}

fn accept_all(
    ep: RawFd,
    listener: RawFd,
    backends: &[SocketAddrV4],
    next: &mut usize,
    conns: &mut Vec<Option<Conn>>,
    free: &mut Vec<usize>,
    pool: &mut Vec<Vec<u8>>,
) {
    loop {
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: null address pointers ask accept4 for no peer address.
        let c =
            unsafe { libc::accept4(listener, std::ptr::null_mut(), std::ptr::null_mut(), flags) };
        if c < 0 {
            return; // EAGAIN (drained) or a transient error: wait for the next readiness
        }
        let backend = backends[*next % backends.len()];
        *next += 1;
        let Ok(s) = sys::tcp_socket(true) else {
            sys::close(c);
            continue;
        };
        let mut dir = || Dir {
            buf: pool.pop().unwrap_or_else(|| vec![0; BUF]),
            start: 0,
            end: 0,
            eof: false,
            shut: false,
            fin_seen: false,
        };
        let mut dirs = [dir(), dir()];
        if smart_connect() {
            // The client's first bytes, when they are already here: then the handshake's
            // last ACK can wait for them (TCP_QUICKACK 0 before connect) and go with them.
            // SAFETY: the buffer is live and BUF bytes long.
            let n = unsafe { libc::read(c, dirs[0].buf.as_mut_ptr().cast(), BUF) };
            if n > 0 {
                dirs[0].end = n as usize;
                let _ = sys::set_opt(s, libc::IPPROTO_TCP, libc::TCP_QUICKACK, 0);
            }
        }
        let sa = sys::sockaddr(backend);
        // SAFETY: sa is a live sockaddr_in of SOCKADDR_LEN bytes.
        let rc = unsafe {
            libc::connect(
                s,
                (&sa as *const libc::sockaddr_in).cast(),
                sys::SOCKADDR_LEN,
            )
        };
        if rc < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS) {
            sys::close(c);
            sys::close(s);
            pool.extend(dirs.map(|d| d.buf));
            continue;
        }
        let slot = free.pop().unwrap_or_else(|| {
            conns.push(None);
            conns.len() - 1
        });
        let interest = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        if add(ep, c, interest, (slot as u64) << 1).is_err()
            || add(ep, s, interest, ((slot as u64) << 1) | 1).is_err()
        {
            sys::close(c);
            sys::close(s);
            free.push(slot);
            pool.extend(dirs.map(|d| d.buf));
            continue;
        }
        conns[slot] = Some(Conn {
            fds: [c, s],
            connected: false,
            dirs,
        });
    }
}

/// Moves what can move in both directions until every socket would block.
fn pump(conn: &mut Conn) -> Step {
    for d in 0..2 {
        let (from, to) = (conn.fds[d], conn.fds[1 - d]);
        let dir = &mut conn.dirs[d];
        loop {
            if dir.start < dir.end {
                let pending = &dir.buf[dir.start..dir.end];
                // SAFETY: pending is a live slice of the buffer.
                // With the source's FIN already here (RELAY_FIN_MERGE=1), MSG_MORE holds a
                // short last segment back for the shutdown that follows: one data+FIN segment.
                let more = if dir.fin_seen && fin_merge() {
                    libc::MSG_MORE
                } else {
                    0
                };
                let n = unsafe {
                    libc::send(
                        to,
                        pending.as_ptr().cast(),
                        pending.len(),
                        more | libc::MSG_NOSIGNAL,
                    )
                };
                if n < 0 {
                    if would_block() {
                        break;
                    }
                    return Step::Failed;
                }
                dir.start += n as usize;
                continue;
            }
            if dir.eof {
                if !dir.shut {
                    // SAFETY: shutdown(2) takes no pointers.
                    unsafe { libc::shutdown(to, libc::SHUT_WR) };
                    dir.shut = true;
                }
                break;
            }
            // SAFETY: the buffer is live and BUF bytes long.
            let n = unsafe { libc::read(from, dir.buf.as_mut_ptr().cast(), BUF) };
            if n < 0 {
                if would_block() {
                    break;
                }
                return Step::Failed;
            }
            if n == 0 {
                dir.eof = true;
            }
            (dir.start, dir.end) = (0, n as usize);
        }
    }
    if conn.dirs.iter().all(|d| d.shut) {
        Step::Done
    } else {
        Step::Open
    }
}

fn finish(conns: &mut [Option<Conn>], free: &mut Vec<usize>, pool: &mut Vec<Vec<u8>>, slot: usize) {
    if let Some(conn) = conns[slot].take() {
        sys::close(conn.fds[0]); // close also takes the fd out of the epoll set
        sys::close(conn.fds[1]);
        free.push(slot);
        pool.extend(conn.dirs.map(|d| d.buf));
    }
}

fn add(ep: RawFd, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: ev is a live epoll_event.
    check(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(drop)
}

fn so_error(fd: RawFd) -> libc::c_int {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: err and len are live locals of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 { libc::EBADF } else { err }
}

/// RELAY_SMART_CONNECT=1: read the client before connecting and, with bytes in hand, let
/// them carry the handshake's last ACK (an experiment: HAProxy's `option tcp-smart-connect`).
fn smart_connect() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("RELAY_SMART_CONNECT").is_some_and(|v| v == "1"))
}

fn fin_merge() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("RELAY_FIN_MERGE").is_some_and(|v| v == "1"))
}

fn would_block() -> bool {
    io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN)
}
