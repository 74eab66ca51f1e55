//! Owns the reusable client load of the zero-downtime tests ([`Load`]):
//! threads opening short connections in a loop against a fixed-reply listen
//! (each full reply checked), and long-lived connections streaming
//! pseudo-random bytes through an echo listen (every byte checked). Every
//! failed connection is recorded with its error; the load is bounded in
//! count and time, and stops (joining every thread) on [`Load::stop`] or drop.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{connect, pseudo_random_bytes, wait_until};

/// What load to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Where short connections go (a listen over fixed-reply backends).
    pub short_addr: Option<SocketAddr>,
    /// Threads opening short connections.
    pub short_threads: usize,
    /// Connections each short thread opens at once before reading their
    /// replies (1: one at a time; more: bursts that sit in accept queues).
    pub short_batch: usize,
    /// Replies a short connection may receive (the whole reply, exactly).
    pub replies: Vec<String>,
    /// Bound on the connections of one short thread.
    pub max_short_per_thread: usize,
    /// Where long-lived connections go (a listen over echo backends).
    pub long_addr: Option<SocketAddr>,
    /// Long-lived connections (opened before [`Load::start`] returns).
    pub long_conns: usize,
    /// Bytes per echo round trip of a long-lived connection.
    pub chunk: usize,
    /// Pause between two round trips of a long-lived connection (pacing, so
    /// the streams do not eat the CPU the balancer needs).
    pub pace: Duration,
    /// The load stops by itself after this long.
    pub max_duration: Duration,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            short_addr: None,
            short_threads: 0,
            short_batch: 1,
            replies: Vec::new(),
            max_short_per_thread: 200_000,
            long_addr: None,
            long_conns: 0,
            chunk: 8 * 1024,
            pace: Duration::from_millis(2),
            max_duration: Duration::from_secs(60),
        }
    }
}

impl LoadConfig {
    /// `threads` threads of short connections to `addr`, each reply one of
    /// `replies`.
    pub fn short(mut self, addr: SocketAddr, threads: usize, replies: &[&str]) -> LoadConfig {
        self.short_addr = Some(addr);
        self.short_threads = threads;
        self.replies = replies.iter().map(|r| r.to_string()).collect();
        self
    }

    /// Short threads open `n` connections at a time.
    pub fn batch(mut self, n: usize) -> LoadConfig {
        self.short_batch = n.max(1);
        self
    }

    /// `conns` long-lived echo streams to `addr`.
    pub fn long(mut self, addr: SocketAddr, conns: usize) -> LoadConfig {
        self.long_addr = Some(addr);
        self.long_conns = conns;
        self
    }

    /// Accepts one more short reply (e.g. a server added by a reload).
    pub fn reply(mut self, r: &str) -> LoadConfig {
        self.replies.push(r.to_string());
        self
    }
}

/// Which part of the load failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A short connection.
    Short,
    /// A long-lived connection.
    Long,
}

/// One failed connection.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Short or long.
    pub side: Side,
    /// Short: thread index; long: connection index.
    pub index: usize,
    /// Short: connection number in its thread; long: round trips done.
    pub seq: u64,
    /// The client's local address, when it connected.
    pub local: Option<SocketAddr>,
    /// What went wrong.
    pub error: String,
    /// When, since the load started.
    pub at: Duration,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = match self.side {
            Side::Short => "short thread",
            Side::Long => "long conn",
        };
        write!(
            f,
            "{side} {} #{} (local {}) at {:?}: {}",
            self.index,
            self.seq,
            self.local
                .map_or_else(|| "-".to_string(), |a| a.to_string()),
            self.at,
            self.error
        )
    }
}

#[derive(Debug)]
struct Shared {
    started: Instant,
    short_ok: AtomicU64,
    /// Short connections per accepted reply (same order as `replies`).
    per_reply: Vec<AtomicU64>,
    long_bytes: AtomicU64,
    /// Round trips per long connection.
    long_rounds: Vec<AtomicU64>,
    /// Set once a long connection has failed (it stops).
    long_dead: Vec<AtomicBool>,
    failures: Mutex<Vec<Failure>>,
}

impl Shared {
    fn fail(&self, side: Side, index: usize, seq: u64, local: Option<SocketAddr>, error: String) {
        let f = Failure {
            side,
            index,
            seq,
            local,
            error,
            at: self.started.elapsed(),
        };
        if let Ok(mut v) = self.failures.lock() {
            v.push(f);
        }
    }
}

/// A running load (see the module doc).
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    replies: Vec<String>,
    long_locals: Vec<SocketAddr>,
    has_short: bool,
    threads: Vec<JoinHandle<()>>,
}

/// What a load did, once stopped.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Short connections that got their full reply.
    pub short_ok: u64,
    /// Round trips of each long-lived connection.
    pub long_rounds: Vec<u64>,
    /// Bytes echoed and checked on long-lived connections.
    pub long_bytes: u64,
    /// Every failed connection.
    pub failures: Vec<Failure>,
}

impl LoadReport {
    /// Failures of one side.
    pub fn failures_of(&self, side: Side) -> Vec<&Failure> {
        self.failures.iter().filter(|f| f.side == side).collect()
    }

    /// One line of counts plus the first failures, for messages.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} short ok, long round trips {:?} ({} bytes checked), {} failures",
            self.short_ok,
            self.long_rounds,
            self.long_bytes,
            self.failures.len()
        );
        for f in self.failures.iter().take(10) {
            s.push_str(&format!("\n  {f}"));
        }
        if self.failures.len() > 10 {
            s.push_str(&format!("\n  ... {} more", self.failures.len() - 10));
        }
        s
    }

    /// Panics (with the failures) unless nothing failed, and unless there
    /// was traffic: some short connections and every long connection moved.
    #[track_caller]
    pub fn assert_no_failures(&self, what: &str) {
        assert!(
            self.failures.is_empty(),
            "{what}: {} connections failed under load: {}",
            self.failures.len(),
            self.describe()
        );
        assert!(
            self.long_rounds.iter().all(|&r| r > 0),
            "{what}: a long-lived connection never completed a round trip: {}",
            self.describe()
        );
    }
}

impl Load {
    /// Connects the long-lived streams (panics if one cannot connect), then
    /// starts every thread.
    #[track_caller]
    pub fn start(cfg: LoadConfig) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            started: Instant::now(),
            short_ok: AtomicU64::new(0),
            per_reply: cfg.replies.iter().map(|_| AtomicU64::new(0)).collect(),
            long_bytes: AtomicU64::new(0),
            long_rounds: (0..cfg.long_conns).map(|_| AtomicU64::new(0)).collect(),
            long_dead: (0..cfg.long_conns)
                .map(|_| AtomicBool::new(false))
                .collect(),
            failures: Mutex::new(Vec::new()),
        });
        let deadline = Instant::now() + cfg.max_duration;
        let mut threads = Vec::new();
        let mut long_locals = Vec::new();
        if let Some(addr) = cfg.long_addr {
            for k in 0..cfg.long_conns {
                let s = match connect(addr) {
                    Ok(s) => s,
                    Err(e) => panic!("long-lived connection {k} to {addr}: {e}"),
                };
                let local = s
                    .local_addr()
                    .expect("local_addr of a long-lived connection");
                long_locals.push(local);
                let (stop, shared, cfg) = (Arc::clone(&stop), Arc::clone(&shared), cfg.clone());
                threads.push(std::thread::spawn(move || {
                    long_loop(k, s, local, &cfg, &stop, &shared, deadline);
                }));
            }
        }
        if let Some(addr) = cfg.short_addr {
            for t in 0..cfg.short_threads {
                let (stop, shared, cfg) = (Arc::clone(&stop), Arc::clone(&shared), cfg.clone());
                threads.push(std::thread::spawn(move || {
                    short_loop(t, addr, &cfg, &stop, &shared, deadline);
                }));
            }
        }
        Load {
            stop,
            shared,
            replies: cfg.replies.clone(),
            long_locals,
            has_short: cfg.short_addr.is_some() && cfg.short_threads > 0,
            threads,
        }
    }

    /// Short connections that succeeded so far.
    pub fn short_ok(&self) -> u64 {
        self.shared.short_ok.load(Ordering::SeqCst)
    }

    /// Round trips of each long-lived connection so far.
    pub fn long_rounds(&self) -> Vec<u64> {
        self.shared
            .long_rounds
            .iter()
            .map(|r| r.load(Ordering::SeqCst))
            .collect()
    }

    /// The local address of each long-lived connection (its `client` in
    /// `lbctl connections`).
    pub fn long_locals(&self) -> &[SocketAddr] {
        &self.long_locals
    }

    /// Short connections that got `reply` so far.
    pub fn reply_count(&self, reply: &str) -> u64 {
        self.replies
            .iter()
            .position(|r| r == reply)
            .map_or(0, |i| self.shared.per_reply[i].load(Ordering::SeqCst))
    }

    /// Failures so far.
    pub fn failures(&self) -> Vec<Failure> {
        self.shared
            .failures
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Waits until `short` more short connections succeeded (when there
    /// are short threads) and every long-lived connection still alive did
    /// two more round trips.
    pub fn wait_progress(&self, short: u64, timeout: Duration) -> bool {
        let short_target = self.short_ok() + if self.has_short { short } else { 0 };
        let long_target: Vec<u64> = self.long_rounds().iter().map(|r| r + 2).collect();
        wait_until(timeout, || {
            let rounds = self.long_rounds();
            self.short_ok() >= short_target
                && rounds
                    .iter()
                    .zip(&long_target)
                    .enumerate()
                    .all(|(k, (r, t))| r >= t || self.shared.long_dead[k].load(Ordering::SeqCst))
        })
    }

    /// Stops every thread (long-lived connections close cleanly) and reports.
    pub fn stop(mut self) -> LoadReport {
        self.halt();
        LoadReport {
            short_ok: self.short_ok(),
            long_rounds: self.long_rounds(),
            long_bytes: self.shared.long_bytes.load(Ordering::SeqCst),
            failures: self.failures(),
        }
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.halt();
    }
}

fn short_loop(
    t: usize,
    addr: SocketAddr,
    cfg: &LoadConfig,
    stop: &AtomicBool,
    shared: &Shared,
    deadline: Instant,
) {
    let mut seq: u64 = 0;
    let mut opened = 0;
    while opened < cfg.max_short_per_thread
        && !stop.load(Ordering::SeqCst)
        && Instant::now() < deadline
    {
        let mut batch = Vec::with_capacity(cfg.short_batch);
        for _ in 0..cfg.short_batch {
            seq += 1;
            opened += 1;
            match connect(addr) {
                Ok(s) => batch.push((seq, s)),
                Err(e) => shared.fail(Side::Short, t, seq, None, format!("connect: {e}")),
            }
        }
        for (seq, mut s) in batch {
            let local = s.local_addr().ok();
            let mut buf = Vec::new();
            match s.read_to_end(&mut buf) {
                Ok(_) => {
                    let reply = String::from_utf8_lossy(&buf);
                    if let Some(i) = cfg.replies.iter().position(|r| *r == reply) {
                        shared.per_reply[i].fetch_add(1, Ordering::SeqCst);
                        shared.short_ok.fetch_add(1, Ordering::SeqCst);
                    } else {
                        shared.fail(Side::Short, t, seq, local, format!("bad reply {reply:?}"));
                    }
                }
                Err(e) => shared.fail(Side::Short, t, seq, local, format!("read: {e}")),
            }
        }
    }
}

fn long_loop(
    k: usize,
    mut s: TcpStream,
    local: SocketAddr,
    cfg: &LoadConfig,
    stop: &AtomicBool,
    shared: &Shared,
    deadline: Instant,
) {
    let mut rounds: u64 = 0;
    let mut back = vec![0u8; cfg.chunk];
    let fail = |rounds: u64, e: String| {
        shared.long_dead[k].store(true, Ordering::SeqCst);
        shared.fail(Side::Long, k, rounds, Some(local), e);
    };
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let data = pseudo_random_bytes(cfg.chunk, ((k as u64) << 32) | rounds);
        if let Err(e) = s.write_all(&data) {
            return fail(rounds, format!("write: {e}"));
        }
        if let Err(e) = s.read_exact(&mut back) {
            return fail(rounds, format!("read: {e}"));
        }
        if let Some(i) = data.iter().zip(&back).position(|(a, b)| a != b) {
            return fail(rounds, format!("echoed byte {i} differs"));
        }
        rounds += 1;
        shared.long_rounds[k].fetch_add(1, Ordering::SeqCst);
        shared
            .long_bytes
            .fetch_add(cfg.chunk as u64, Ordering::SeqCst);
        if !cfg.pace.is_zero() {
            std::thread::sleep(cfg.pace);
        }
    }
    // A clean end: our EOF travels to the backend, which closes; we must see
    // EOF with no stray byte.
    if let Err(e) = s.shutdown(Shutdown::Write) {
        return fail(rounds, format!("shutdown: {e}"));
    }
    let mut rest = [0u8; 1024];
    loop {
        match s.read(&mut rest) {
            Ok(0) => return,
            Ok(n) => {
                return fail(
                    rounds,
                    format!("{n} unexpected bytes after the last round trip"),
                );
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return fail(rounds, format!("no clean EOF: {e}")),
        }
    }
}
