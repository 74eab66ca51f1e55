//! Owns the HA pair's traffic: [`PeerReply`], the backend in the backend
//! namespace that answers each connection with the address it came from (so
//! the client learns which balancer relayed it), and [`ClientLoop`], the
//! client in the client namespace that opens one new connection to the VIP
//! after another and records each outcome. Both run on threads of the test
//! and stop on drop; the client's loop is bounded in time and count.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::lab::{VIP, enter, in_netns};

/// Where the balancers listen (in their own namespaces, on every address).
pub const LB_PORT: u16 = 8080;
/// Where the backend listens.
pub const BACKEND_PORT: u16 = 8000;

/// A connect to the VIP that has not completed in this time failed (a SYN
/// sent to a node that just gave the VIP up is dropped, not refused).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);
/// Pause between two attempts of the client.
const PAUSE: Duration = Duration::from_millis(20);
/// The client stops by itself after this long, or this many attempts.
const MAX_RUN: Duration = Duration::from_secs(180);
const MAX_ATTEMPTS: usize = 20_000;

/// The reply of [`PeerReply`] to a connection from `ip`.
pub fn reply_from(ip: impl Into<IpAddr>) -> String {
    format!("from {}", ip.into())
}

/// A backend on `ip:BACKEND_PORT` inside `ns` that writes `from <peer ip>\n`
/// to each connection and closes it.
#[derive(Debug)]
pub struct PeerReply {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PeerReply {
    pub fn start(ns: &str, ip: IpAddr) -> PeerReply {
        let addr = SocketAddr::new(ip, BACKEND_PORT);
        let listener = in_netns(ns, || TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("backend bind {addr} in {ns}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("backend listener nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, peer)) => answer(conn, peer),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        PeerReply {
            stop,
            thread: Some(thread),
        }
    }
}

/// Writes the peer's address and closes; a peer gone already is no matter.
fn answer(mut conn: TcpStream, peer: SocketAddr) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = writeln!(conn, "{}", reply_from(peer.ip()));
    let _ = conn.shutdown(Shutdown::Write);
}

impl Drop for PeerReply {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One attempt of the client: when it ended and what it got (the reply, or
/// the error in words).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub done: Instant,
    pub outcome: Result<String, String>,
}

/// The client: new connections to `VIP:LB_PORT`, one after another, from a
/// thread inside the client namespace.
#[derive(Debug)]
pub struct ClientLoop {
    attempts: Arc<Mutex<Vec<Attempt>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ClientLoop {
    pub fn start(ns: &str) -> ClientLoop {
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, flag, ns) = (Arc::clone(&attempts), Arc::clone(&stop), ns.to_string());
        let thread = std::thread::spawn(move || {
            enter(&ns);
            let started = Instant::now();
            let vip = SocketAddr::from((VIP, LB_PORT));
            for _ in 0..MAX_ATTEMPTS {
                if flag.load(Ordering::SeqCst) || started.elapsed() > MAX_RUN {
                    break;
                }
                let outcome = attempt(vip);
                let done = Instant::now();
                if let Ok(mut v) = log.lock() {
                    v.push(Attempt { done, outcome });
                }
                std::thread::sleep(PAUSE);
            }
        });
        ClientLoop {
            attempts,
            stop,
            thread: Some(thread),
        }
    }

    /// Every attempt that ended at or after `since`.
    pub fn since(&self, since: Instant) -> Vec<Attempt> {
        match self.attempts.lock() {
            Ok(v) => v.iter().filter(|a| a.done >= since).cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// When the first connection ending at or after `since` got `reply`.
    pub fn first_reply(&self, since: Instant, reply: &str) -> Option<Instant> {
        self.since(since)
            .into_iter()
            .find(|a| a.outcome.as_deref() == Ok(reply))
            .map(|a| a.done)
    }

    /// The attempts since `since`, outcomes counted in order of appearance
    /// with the time of their first occurrence (for failure messages).
    pub fn summary(&self, since: Instant) -> String {
        let mut rows: Vec<(String, usize, Duration)> = Vec::new();
        for a in self.since(since) {
            let key = match &a.outcome {
                Ok(r) => format!("reply {r:?}"),
                Err(e) => format!("error {e}"),
            };
            match rows.iter_mut().find(|r| r.0 == key) {
                Some(r) => r.1 += 1,
                None => rows.push((key, 1, a.done.saturating_duration_since(since))),
            }
        }
        let lines: Vec<String> = rows
            .iter()
            .map(|(k, n, first)| format!("  {n} x {k} (first at {:.2}s)", first.as_secs_f64()))
            .collect();
        format!("client attempts:\n{}", lines.join("\n"))
    }
}

/// One new connection: connect, read the reply to EOF.
fn attempt(vip: SocketAddr) -> Result<String, String> {
    let mut conn = TcpStream::connect_timeout(&vip, CONNECT_TIMEOUT).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply).map_err(|e| e.to_string())?;
    if reply.is_empty() {
        return Err("closed without a reply".to_string());
    }
    Ok(reply.trim().to_string())
}

impl Drop for ClientLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
