//! Owns the listening sockets: per bind address, one `SO_REUSEPORT` socket per
//! worker slot, bound by the master and held for its whole life (across
//! reloads and respawns), so no connection waiting in an accept queue is ever
//! reset by a worker change. A generation with N workers gives worker k every
//! socket j of an address with j % N == k, so sockets made for a larger
//! generation keep being served (and never closed) when `workers` shrinks.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Accept backlog of every listening socket.
pub const BACKLOG: i32 = 4096;

/// All listening sockets of the master.
#[derive(Debug, Default)]
pub struct Listeners {
    by_addr: HashMap<SocketAddr, Vec<TcpListener>>,
}

/// Binds one non-blocking, close-on-exec, SO_REUSEPORT listening socket.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_cloexec(true)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux,
    // which saves the workers a setsockopt per connection.
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Fails with EADDRINUSE when another process listens on `addr`, even with
/// SO_REUSEPORT (which would otherwise let a second balancer silently share
/// the port): a plain bind, without SO_REUSEPORT, is refused then.
fn probe_free(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_cloexec(true)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())
}

impl Listeners {
    /// No sockets.
    pub fn new() -> Listeners {
        Listeners::default()
    }

    /// Makes sure `addr` has at least `n` sockets; returns how many were
    /// newly bound (so a failed reload can undo exactly those).
    pub fn ensure(&mut self, addr: SocketAddr, n: usize) -> io::Result<usize> {
        // Probe only a port the master holds nothing on: its own SO_REUSEPORT
        // sockets on an overlapping address (0.0.0.0:P next to [::]:P, or a
        // listen moving from 0.0.0.0:P to 127.0.0.1:P) would fail the probe.
        if !self.by_addr.keys().any(|a| a.port() == addr.port()) {
            probe_free(addr)?;
        }
        let socks = self.by_addr.entry(addr).or_default();
        let mut added = 0;
        while socks.len() < n {
            match bind(addr) {
                Ok(l) => {
                    socks.push(l);
                    added += 1;
                }
                Err(e) => {
                    for _ in 0..added {
                        socks.pop();
                    }
                    if socks.is_empty() {
                        self.by_addr.remove(&addr);
                    }
                    return Err(e);
                }
            }
        }
        Ok(added)
    }

    /// Closes the last `n` sockets of `addr` (undo of `ensure`).
    pub fn undo(&mut self, addr: SocketAddr, n: usize) {
        if let Some(socks) = self.by_addr.get_mut(&addr) {
            for _ in 0..n {
                socks.pop();
            }
            if socks.is_empty() {
                self.by_addr.remove(&addr);
            }
        }
    }

    /// The sockets worker `slot` of a generation with `workers` workers
    /// accepts on.
    pub fn for_worker(&self, addr: SocketAddr, slot: usize, workers: usize) -> Vec<&TcpListener> {
        self.by_addr
            .get(&addr)
            .map(|socks| {
                socks
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| j % workers.max(1) == slot)
                    .map(|(_, l)| l)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Closes every socket of addresses not in `keep`.
    pub fn retain(&mut self, keep: &[SocketAddr]) {
        self.by_addr.retain(|addr, _| keep.contains(addr));
    }

    /// Every address with its sockets' fds, in slot order (handed to a new
    /// master on binary upgrade).
    pub fn fds(&self) -> Vec<(SocketAddr, Vec<std::os::fd::RawFd>)> {
        use std::os::fd::AsRawFd;
        self.by_addr
            .iter()
            .map(|(a, socks)| (*a, socks.iter().map(|l| l.as_raw_fd()).collect()))
            .collect()
    }

    /// Takes over sockets inherited from a previous master.
    pub fn adopt(&mut self, addr: SocketAddr, socks: Vec<TcpListener>) {
        for l in &socks {
            // A master of an older version may not have set it.
            let _ = socket2::SockRef::from(l).set_tcp_nodelay(true);
        }
        self.by_addr.entry(addr).or_default().extend(socks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_process_on_the_port_is_refused_but_our_own_overlap_is_not() {
        let other = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken = other.local_addr().expect("addr");
        let mut l = Listeners::new();
        assert!(l.ensure(taken, 1).is_err(), "must not share a port");
        drop(other);
        // A listen moving from the wildcard to a specific address of the
        // same port, while the wildcard sockets are still held.
        let wild: SocketAddr = format!("0.0.0.0:{}", taken.port()).parse().expect("addr");
        l.ensure(wild, 2).expect("wildcard");
        l.ensure(taken, 2)
            .expect("specific next to our own wildcard");
    }

    #[test]
    fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let l = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = l.local_addr().expect("addr");
        let _c = std::net::TcpStream::connect(addr).expect("connect");
        l.set_nonblocking(false).expect("blocking");
        let (a, _) = l.accept().expect("accept");
        assert!(a.nodelay().expect("getsockopt"));
    }

    #[test]
    fn listeners_share_a_port_and_split_sockets_among_workers() {
        let mut l = Listeners::new();
        let probe = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = probe.local_addr().expect("addr");
        drop(probe);
        assert_eq!(l.ensure(addr, 4).expect("bind 4"), 4);
        assert_eq!(l.ensure(addr, 2).expect("no-op"), 0);
        assert_eq!(l.for_worker(addr, 0, 4).len(), 1);
        assert_eq!(l.for_worker(addr, 0, 2).len(), 2);
        assert_eq!(l.for_worker(addr, 1, 3).len(), 1);
        l.undo(addr, 4);
        assert!(l.for_worker(addr, 0, 1).is_empty());
    }
}
