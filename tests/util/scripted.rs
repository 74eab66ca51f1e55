//! Owns the scripted loopback backends of the high-availability tests: a
//! fixed reply that can be killed cleanly mid-load, an HTTP server with a
//! chosen status, a line protocol that answers one line (`+PONG` / `-ERR`), a
//! silent server that accepts and never answers, and a greeter that names
//! itself and then echoes (to hold a connection open and tell servers apart).
//!
//! "Killing" one ([`Scripted::kill`] or drop) models a server process that goes
//! away between requests, in one instant as far as clients can tell (see
//! [`stop_listener`]): every connection the kernel completed is still
//! served, later connects are refused, none is completed and then reset. So
//! the only failures a client of the balancer can see are the connect
//! refusals the balancer is supposed to retry.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::backend::stop_listener;

/// Most bytes read while waiting for a request terminator.
const MAX_REQUEST: usize = 16 * 1024;

/// What a scripted backend does with each connection.
#[derive(Debug, Clone)]
enum Script {
    /// Write the reply at once, shut down writing, read until EOF.
    Fixed(Vec<u8>),
    /// Read until `until` (or EOF / 5s), write the reply, close.
    AnswerAfter { until: Vec<u8>, reply: Vec<u8> },
    /// Read and discard until EOF (or release); never write.
    Silent,
    /// Write the greeting, then echo until EOF (or release).
    Greeter(Vec<u8>),
}

impl Script {
    /// Connections that stay open until the peer closes (shut down on drop).
    fn holds(&self) -> bool {
        matches!(self, Script::Silent | Script::Greeter(_))
    }
}

type Registry = Arc<Mutex<HashMap<u64, TcpStream>>>;

/// A scripted backend on a loopback address; stops on [`Scripted::kill`] or drop.
#[derive(Debug)]
pub struct Scripted {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    open: Registry,
    thread: Option<JoinHandle<()>>,
    /// A second descriptor of the listening socket, for
    /// [`Scripted::listener_copy`]; closed before the backend stops.
    copy: Option<TcpListener>,
}

impl Scripted {
    /// Replies `reply` as soon as it accepts (like `Backend::fixed`), and can be
    /// killed under load without resetting a connection it already has.
    pub fn fixed(reply: &str) -> Scripted {
        Scripted::spawn(any_port(), Script::Fixed(reply.as_bytes().to_vec()))
    }

    /// [`Scripted::fixed`] on a given address (a server restarted where it was).
    pub fn fixed_at(addr: SocketAddr, reply: &str) -> Scripted {
        Scripted::spawn(addr, Script::Fixed(reply.as_bytes().to_vec()))
    }

    /// An HTTP server: reads the request head, answers
    /// `HTTP/1.0 <status>` with `body`, closes. `status` is e.g. `"503 Service Unavailable"`.
    pub fn http(status: &str, body: &str) -> Scripted {
        let reply = format!(
            "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        Scripted::spawn(
            any_port(),
            Script::AnswerAfter {
                until: b"\r\n\r\n".to_vec(),
                reply: reply.into_bytes(),
            },
        )
    }

    /// A line protocol: reads one line, answers `reply`, closes (e.g.
    /// `"+PONG\r\n"` or `"-ERR unknown command\r\n"`).
    pub fn line_reply(reply: &str) -> Scripted {
        Scripted::spawn(
            any_port(),
            Script::AnswerAfter {
                until: b"\n".to_vec(),
                reply: reply.as_bytes().to_vec(),
            },
        )
    }

    /// Accepts and reads, never writes: a hung server.
    pub fn silent() -> Scripted {
        Scripted::spawn(any_port(), Script::Silent)
    }

    /// Writes `name` and a newline at once, then echoes until EOF.
    pub fn greeter(name: &str) -> Scripted {
        Scripted::spawn(
            any_port(),
            Script::Greeter(format!("{name}\n").into_bytes()),
        )
    }

    fn spawn(addr: SocketAddr, script: Script) -> Scripted {
        let listener = TcpListener::bind(addr).expect("bind scripted backend");
        let addr = listener.local_addr().expect("scripted backend local_addr");
        let copy = listener
            .try_clone()
            .expect("scripted backend listener copy");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let open: Registry = Arc::new(Mutex::new(HashMap::new()));
        let thread = {
            let ctx = Ctx {
                stop: Arc::clone(&stop),
                accepted: Arc::clone(&accepted),
                closed: Arc::clone(&closed),
                open: Arc::clone(&open),
                script,
                next_id: 0,
            };
            std::thread::spawn(move || accept_loop(listener, ctx))
        };
        Scripted {
            addr,
            stop,
            accepted,
            closed,
            open,
            thread: Some(thread),
            copy: Some(copy),
        }
    }

    /// Another descriptor of its listening socket, as a process forked
    /// (and not yet exec'd) while the backend runs holds one: a kill must
    /// not depend on it being closed.
    pub fn listener_copy(&self) -> TcpListener {
        self.copy
            .as_ref()
            .and_then(|l| l.try_clone().ok())
            .expect("scripted backend listener copy")
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections finished so far (the peer closed, or the script did).
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }

    /// Connections accepted and not finished yet.
    pub fn open_connections(&self) -> usize {
        self.accepted().saturating_sub(self.closed())
    }

    /// Stops listening; later connects are refused. Connections already
    /// completed by the kernel are still served, and none is reset.
    pub fn kill(mut self) {
        self.stop_listening();
    }

    fn stop_listening(&mut self) {
        self.copy = None;
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept; the loop then stops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = thread.join();
    }

    /// Shuts down every connection that is held open (silent, greeter).
    pub fn release(&self) {
        if let Ok(map) = self.open.lock() {
            for s in map.values() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop_listening();
        self.release();
    }
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

struct Ctx {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    open: Registry,
    script: Script,
    next_id: u64,
}

impl Ctx {
    /// Serves one accepted connection on its own thread.
    fn take(&mut self, stream: TcpStream) {
        let _ = stream.set_nonblocking(false);
        self.accepted.fetch_add(1, Ordering::SeqCst);
        let id = self.next_id;
        self.next_id += 1;
        if self.script.holds()
            && let (Ok(clone), Ok(mut map)) = (stream.try_clone(), self.open.lock())
        {
            map.insert(id, clone);
        }
        let script = self.script.clone();
        let open = Arc::clone(&self.open);
        let closed = Arc::clone(&self.closed);
        std::thread::spawn(move || {
            serve(stream, &script);
            if let Ok(mut map) = open.lock() {
                map.remove(&id);
            }
            closed.fetch_add(1, Ordering::SeqCst);
        });
    }
}

fn accept_loop(listener: TcpListener, mut ctx: Ctx) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => ctx.take(stream),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
        if ctx.stop.load(Ordering::SeqCst) {
            break;
        }
    }
    // Serve what the kernel already accepted; refuse everything after.
    stop_listener(listener, |stream| ctx.take(stream));
}

fn serve(mut s: TcpStream, script: &Script) {
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf = vec![0u8; 16 * 1024];
    match script {
        Script::Fixed(reply) => {
            if s.write_all(reply).is_err() {
                return;
            }
            let _ = s.shutdown(Shutdown::Write);
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            drain(&mut s, &mut buf);
        }
        Script::AnswerAfter { until, reply } => {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut got = Vec::new();
            while !contains(&got, until) && got.len() < MAX_REQUEST {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(reply);
            let _ = s.shutdown(Shutdown::Write);
            // Read what is left so the close sends FIN, not RST.
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            drain(&mut s, &mut buf);
        }
        Script::Silent => {
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            drain(&mut s, &mut buf);
        }
        Script::Greeter(greeting) => {
            if s.write_all(greeting).is_err() {
                return;
            }
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = s.shutdown(Shutdown::Write);
        }
    }
}

fn drain(s: &mut TcpStream, buf: &mut [u8]) {
    while let Ok(n) = s.read(buf) {
        if n == 0 {
            break;
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Connects to a greeter (directly or through the balancer) and returns the
/// connection with the greeter's name already read from it.
pub fn greet(addr: SocketAddr) -> std::io::Result<(TcpStream, String)> {
    let mut s = crate::util::connect(addr)?;
    let mut name = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte)? {
            0 => {
                return Err(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!(
                        "closed before a greeting; got {:?}",
                        String::from_utf8_lossy(&name)
                    ),
                ));
            }
            _ if byte[0] == b'\n' => break,
            _ => name.push(byte[0]),
        }
        if name.len() > 256 {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                "greeting too long",
            ));
        }
    }
    let name =
        String::from_utf8(name).map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))?;
    Ok((s, name))
}

/// The name of the greeter one fresh connection reaches (the connection is closed).
pub fn whoami(addr: SocketAddr) -> std::io::Result<String> {
    greet(addr).map(|(_, name)| name)
}
