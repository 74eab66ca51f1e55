//! The few socket calls both loops share: the listener, a backend socket, addresses.

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::RawFd;

/// -1 from a libc call becomes the thread's errno.
pub fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

pub fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

pub const SOCKADDR_LEN: libc::socklen_t =
    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;

/// A TCP socket; `nonblocking` for the epoll loop (io_uring wants blocking ones: it parks a
/// request itself, and an O_NONBLOCK socket would hand it -EAGAIN instead).
pub fn tcp_socket(nonblocking: bool) -> io::Result<RawFd> {
    let mut ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    if nonblocking {
        ty |= libc::SOCK_NONBLOCK;
    }
    // SAFETY: socket(2) takes no pointers.
    check(unsafe { libc::socket(libc::AF_INET, ty, 0) })
}

/// An int-valued socket option.
pub fn set_opt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    check(rc).map(drop)
}

/// The listening socket, SO_REUSEADDR, backlog 1024, blocking (the epoll loop sets its own
/// accepts nonblocking with accept4 and polls the listener). RELAY_DEFER_ACCEPT=1 adds
/// TCP_DEFER_ACCEPT (1 s).
pub fn listen(addr: SocketAddrV4) -> io::Result<RawFd> {
    let fd = tcp_socket(false)?;
    set_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if std::env::var_os("RELAY_DEFER_ACCEPT").is_some_and(|v| v == "1") {
        set_opt(fd, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, 1)?;
    }
    let sa = sockaddr(addr);
    // SAFETY: sa is a live sockaddr_in of SOCKADDR_LEN bytes; fd is ours.
    unsafe {
        check(libc::bind(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            SOCKADDR_LEN,
        ))?;
        check(libc::listen(fd, 1024))?;
    }
    Ok(fd)
}

pub fn close(fd: RawFd) {
    // SAFETY: the caller owns fd and forgets it after this.
    unsafe { libc::close(fd) };
}
