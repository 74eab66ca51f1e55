//! Owns the loopback backends the balancer forwards to in tests: echo, echo
//! after EOF, fixed reply, hold, sink (all count accepted connections), and a
//! refusing address. Each runs on threads and stops on drop.

use std::collections::HashMap;
use std::io::{Read, Write};
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
        }
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
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        self.release();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    kind: Kind,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    open: Registry,
) {
    let mut next_id: u64 = 0;
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = conn else { continue };
        accepted.fetch_add(1, Ordering::SeqCst);
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
    }
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
        Kind::Fixed(reply) => {
            if s.write_all(reply).is_err() {
                return;
            }
            let _ = s.shutdown(Shutdown::Write);
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
