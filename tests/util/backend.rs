//! Owns the loopback backends the balancer forwards to in tests: echo, echo
//! after EOF, fixed reply, hold, sink (all count accepted connections), and a
//! refusing address. Each runs on threads and stops on drop; how a listener
//! stops ([`stop_listener`]) is shared with the scripted backends.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What a backend does with each connection.
#[derive(Debug, Clone)]
enum Kind {
    /// Echo every byte as it arrives; at EOF shut down the write side and close.
    Echo,
    /// Read until EOF, then send everything back and close (needs half-close).
    EchoAfterEof,
    /// Write the reply at once (without reading), shut down writing, then read
    /// whatever the peer sends until EOF and close.
    Fixed(Vec<u8>),
    /// Accept and keep the connection open, reading and discarding, until
    /// [`Backend::release`] or drop.
    Hold,
    /// Read and discard until EOF, then close.
    Sink,
}

/// Live connections, so drop (or `release`) can shut them down and unblock
/// their threads.
type Registry = Arc<Mutex<HashMap<u64, TcpStream>>>;

/// A backend server on `127.0.0.1:<ephemeral>`.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    open: Registry,
    thread: Option<JoinHandle<()>>,
    /// A second descriptor of the listening socket, for
    /// [`Backend::listener_copy`]; closed before the backend stops.
    copy: Option<TcpListener>,
}

impl Backend {
    /// Echoes until EOF, then closes.
    pub fn echo() -> Backend {
        Backend::spawn(Kind::Echo)
    }

    /// Reads until the client's EOF, then replies with everything it read.
    pub fn echo_after_eof() -> Backend {
        Backend::spawn(Kind::EchoAfterEof)
    }

    /// Writes `reply` as soon as it accepts, then closes its write side.
    pub fn fixed(reply: &str) -> Backend {
        Backend::spawn(Kind::Fixed(reply.as_bytes().to_vec()))
    }

    /// Keeps every connection open until [`Backend::release`].
    pub fn hold() -> Backend {
        Backend::spawn(Kind::Hold)
    }

    /// Counts connections; reads and discards until EOF.
    pub fn counting() -> Backend {
        Backend::spawn(Kind::Sink)
    }

    /// Writes `reply` at once, listening on a given address (e.g. one that was
    /// refusing until now).
    pub fn fixed_at(addr: SocketAddr, reply: &str) -> Backend {
        Backend::spawn_at(addr, Kind::Fixed(reply.as_bytes().to_vec()))
    }

    fn spawn(kind: Kind) -> Backend {
        Backend::spawn_at(SocketAddr::from(([127, 0, 0, 1], 0)), kind)
    }

    fn spawn_at(addr: SocketAddr, kind: Kind) -> Backend {
        let listener = TcpListener::bind(addr).expect("bind backend");
        let addr = listener.local_addr().expect("backend local_addr");
        let copy = listener.try_clone().expect("backend listener copy");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let open: Registry = Arc::new(Mutex::new(HashMap::new()));
        let thread = {
            let stop = Arc::clone(&stop);
            let accepted = Arc::clone(&accepted);
            let open = Arc::clone(&open);
            std::thread::spawn(move || accept_loop(listener, kind, stop, accepted, open))
        };
        Backend {
            addr,
            stop,
            accepted,
            open,
            thread: Some(thread),
            copy: Some(copy),
        }
    }

    /// Another descriptor of its listening socket, as a process forked
    /// (and not yet exec'd) while the backend runs holds one: stopping the
    /// backend must not depend on it being closed.
    pub fn listener_copy(&self) -> TcpListener {
        self.copy
            .as_ref()
            .and_then(|l| l.try_clone().ok())
            .expect("backend listener copy")
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        self.open.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Closes every open connection (for `hold`: lets the clients finish).
    pub fn release(&self) {
        if let Ok(map) = self.open.lock() {
            for s in map.values() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.copy = None;
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept; the loop then stops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // After the join: connections taken from the accept queue while
        // stopping are registered by now.
        self.release();
    }
}

/// Stops a listening socket so that, as far as any client can tell, it went
/// away in one instant: every connection the kernel completed, or was
/// completing, is handed to `take` (and served), every later connect is
/// refused, and none is completed and then reset or left half-open.
///
/// Closing the descriptor is not enough: (1) a handshake completed between
/// the last `accept` and the `close` is reset by the close, and (2) the
/// socket outlives our descriptor while another one exists (a process that
/// another test forks holds copies of every descriptor until it execs), so
/// it keeps completing handshakes that are reset later. So:
/// - a socket filter drops every new SYN (the client retransmits it), and
///   only SYNs: the last ACK of a handshake already under way still passes,
///   or the client would think itself connected to a server that never
///   accepts;
/// - once no handshake is under way (no `SYN_RECV` request socket for the
///   address, see [`super::handshakes`]), nothing new can reach the accept
///   queue: it is drained;
/// - `shutdown(SHUT_RD)` then takes the socket itself (every descriptor of
///   it) out of LISTEN, so the retransmitted SYN is refused.
pub fn stop_listener(listener: TcpListener, mut take: impl FnMut(TcpStream)) {
    use socket2::{SockFilter, SockRef};
    // Classic BPF over the TCP header: drop (ret 0) when the flags byte has
    // SYN without ACK, keep the whole packet otherwise.
    let drop_syns = [
        SockFilter::new(0x30, 0, 0, 13),       // ldb [13]: the flags
        SockFilter::new(0x54, 0, 0, 0x12),     // and #(SYN | ACK)
        SockFilter::new(0x15, 0, 1, 0x02),     // jeq #SYN ? next : skip one
        SockFilter::new(0x06, 0, 0, 0),        // ret #0: drop
        SockFilter::new(0x06, 0, 0, u32::MAX), // ret #all: keep
    ];
    let sock = SockRef::from(&listener);
    sock.attach_filter(&drop_syns)
        .expect("attach a SYN-dropping socket filter to a stopping backend");
    listener
        .set_nonblocking(true)
        .expect("make a stopping backend's listener non-blocking");
    let mut drain = |listener: &TcpListener| {
        loop {
            match listener.accept() {
                Ok((stream, _)) => take(stream),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    };
    let addr = listener.local_addr().expect("stopping backend local_addr");
    // A handshake whose client vanished is given up on after a while.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while super::handshakes::under_way(addr) > 0 && std::time::Instant::now() < deadline {
        drain(&listener);
        std::thread::sleep(Duration::from_millis(1));
    }
    drain(&listener);
    let _ = sock.shutdown(Shutdown::Read);
}

fn accept_loop(
    listener: TcpListener,
    kind: Kind,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    open: Registry,
) {
    let mut next_id: u64 = 0;
    let mut take = |mut stream: TcpStream| {
        let _ = stream.set_nonblocking(false);
        accepted.fetch_add(1, Ordering::SeqCst);
        // A fixed reply goes out before the connection is registered, so
        // `release` (on drop) can never cut a reply short.
        if let Kind::Fixed(reply) = &kind {
            let _ = stream.write_all(reply);
            let _ = stream.shutdown(Shutdown::Write);
        }
        let id = next_id;
        next_id += 1;
        if let (Ok(clone), Ok(mut map)) = (stream.try_clone(), open.lock()) {
            map.insert(id, clone);
        }
        let kind = kind.clone();
        let open = Arc::clone(&open);
        std::thread::spawn(move || {
            serve(stream, &kind);
            if let Ok(mut map) = open.lock() {
                map.remove(&id);
            }
        });
    };
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => take(stream),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    stop_listener(listener, take);
}

fn serve(mut s: TcpStream, kind: &Kind) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
    let mut buf = vec![0u8; 64 * 1024];
    match kind {
        Kind::Echo => loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = s.shutdown(Shutdown::Write);
                    return;
                }
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        },
        Kind::EchoAfterEof => {
            let mut all = Vec::new();
            if s.read_to_end(&mut all).is_err() {
                return;
            }
            let _ = s.write_all(&all);
            let _ = s.shutdown(Shutdown::Write);
        }
        Kind::Fixed(_) => {
            // The reply was written at accept.
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
        }
        Kind::Hold | Kind::Sink => {
            let _ = s.set_read_timeout(None);
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
        }
    }
}

/// A loopback address with nothing listening (connections are refused).
pub fn refusing_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind for refusing addr");
    let addr = l.local_addr().expect("local_addr");
    drop(l);
    addr
}
