//! Owns active health checking: the pure rise/fall state machine
//! ([`HealthState`]) and the non-blocking probes ([`Checker`]) that the
//! master's single-threaded mio loop drives.
//!
//! A probe is one short TCP conversation with a server: connect, then for
//! `tcp` nothing more, for `http` one `HTTP/1.0` request whose status line
//! (and optionally body) is judged, for `send_expect` some bytes out and a
//! reply prefix back. Each finished probe is fed to the server's
//! [`HealthState`] and reported; health only flips after `rise` / `fall`
//! consecutive results (pingora's `observe_health`).

use crate::config::{HealthConfig, HealthKind, HttpCheck, duration};
use crate::netutil::is_local_shortage;
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Most bytes of an `http` reply that are read; a reply is judged on them.
pub const MAX_RESPONSE: usize = 16 * 1024;

/// The first probes of a checker are spread over at most this much time.
const INITIAL_SPREAD: Duration = Duration::from_millis(100);

/// Floor for `interval`, so a zero interval cannot spin the master loop.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// A flip of a server's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Became healthy.
    Up,
    /// Became unhealthy.
    Down,
}

/// Rise/fall counters of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HealthState {
    /// Currently considered healthy.
    pub up: bool,
    /// Consecutive successful probes.
    pub successes: u32,
    /// Consecutive failed probes.
    pub failures: u32,
}

impl HealthState {
    /// A state that starts healthy (servers are assumed up until checked).
    pub fn new_up() -> HealthState {
        HealthState {
            up: true,
            successes: 0,
            failures: 0,
        }
    }

    /// A state that starts unhealthy: `rise` successes are needed to bring it up.
    pub fn new_down() -> HealthState {
        HealthState {
            up: false,
            successes: 0,
            failures: 0,
        }
    }

    /// Records one probe result; returns the transition when it flips.
    ///
    /// A success resets the failure count and a failure the success count.
    /// An up server goes down on its `fall`-th consecutive failure, a down
    /// server comes up on its `rise`-th consecutive success; each flip is
    /// returned exactly once. Thresholds of 0 act as 1.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> Option<Transition> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.up && self.successes >= rise.max(1) {
                self.up = true;
                return Some(Transition::Up);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.up && self.failures >= fall.max(1) {
                self.up = false;
                return Some(Transition::Down);
            }
        }
        None
    }
}

/// One server to probe.
#[derive(Debug, Clone)]
pub struct Target {
    /// Caller's id for the server (reported back in [`Report::id`]).
    pub id: usize,
    /// Address to probe.
    pub addr: SocketAddr,
    /// What and how often.
    pub config: HealthConfig,
}

/// The result of one finished probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The target's id.
    pub id: usize,
    /// Did the probe pass.
    pub ok: bool,
    /// Why, in words: "ok", "connect refused", "timeout after 1s", "status 503".
    pub detail: String,
    /// Set when this result flipped the server's health.
    pub transition: Option<Transition>,
    /// The state after this result.
    pub state: HealthState,
}

/// Outcome of a probe: `Ok` or the reason it failed.
type Verdict = Result<(), String>;

/// One target and its probe schedule.
#[derive(Debug)]
struct Probe {
    target: Target,
    /// Bytes written once connected (empty for `tcp`).
    request: Vec<u8>,
    state: HealthState,
    /// When the next probe starts (meaningful while none is in flight).
    next_start: Instant,
    flight: Option<Flight>,
}

/// A probe in flight.
#[derive(Debug)]
struct Flight {
    stream: TcpStream,
    started: Instant,
    deadline: Instant,
    connected: bool,
    /// Bytes of the request written so far.
    written: usize,
    /// Reply bytes read so far (bounded).
    reply: Vec<u8>,
}

/// Runs the probes of one generation's servers inside the master's mio loop.
/// Tokens `token_base .. token_base + targets.len()` belong to it.
///
/// At most one probe per target is in flight; the next one starts `interval`
/// after the previous one started (or as soon as it finished, if later).
#[derive(Debug)]
pub struct Checker {
    token_base: usize,
    probes: Vec<Probe>,
    stopped: bool,
}

impl Checker {
    /// A checker for these targets; the first probe of each is due at once
    /// (spread over a few milliseconds, so they do not all connect together).
    /// Every server starts up.
    pub fn new(targets: Vec<Target>, token_base: usize, now: Instant) -> Checker {
        let len = targets.len();
        let probes = targets
            .into_iter()
            .enumerate()
            .map(|(i, target)| {
                let window = INITIAL_SPREAD.min(target.config.interval);
                // `i < len`, so the offset stays below `window`.
                let offset = window.mul_f64(i as f64 / len as f64);
                Probe {
                    request: request_bytes(&target.config.kind, target.addr),
                    target,
                    state: HealthState::new_up(),
                    next_start: later(now, offset),
                    flight: None,
                }
            })
            .collect();
        Checker {
            token_base,
            probes,
            stopped: false,
        }
    }

    /// Whether a token is one of this checker's.
    pub fn owns(&self, token: Token) -> bool {
        token
            .0
            .checked_sub(self.token_base)
            .is_some_and(|i| i < self.probes.len())
    }

    /// The current state of the target with this id, if there is one.
    pub fn state(&self, id: usize) -> Option<HealthState> {
        self.probes
            .iter()
            .find(|p| p.target.id == id)
            .map(|p| p.state)
    }

    /// Time until the next probe start or probe deadline, if any
    /// (`Some(ZERO)` when something is already due).
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        if self.stopped {
            return None;
        }
        self.probes
            .iter()
            .map(|p| match &p.flight {
                Some(f) => f.deadline,
                None => p.next_start,
            })
            .min()
            .map(|t| t.saturating_duration_since(now))
    }

    /// Starts due probes and fails expired ones; pushes finished results.
    pub fn tick(&mut self, registry: &Registry, now: Instant, out: &mut Vec<Report>) {
        if self.stopped {
            return;
        }
        for (i, probe) in self.probes.iter_mut().enumerate() {
            if probe.flight.as_ref().is_some_and(|f| now >= f.deadline) {
                let detail = timeout_detail(probe.target.config.timeout);
                probe.finish(registry, Err(detail), now, out);
            }
            if probe.flight.is_none() && now >= probe.next_start {
                probe.start(registry, Token(self.token_base + i), now, out);
            }
        }
    }

    /// Advances the probe an event belongs to; pushes a result when it finishes.
    /// Events for other tokens, or for a probe no longer in flight, are ignored.
    pub fn event(
        &mut self,
        registry: &Registry,
        event: &Event,
        now: Instant,
        out: &mut Vec<Report>,
    ) {
        let Some(i) = event.token().0.checked_sub(self.token_base) else {
            return;
        };
        let Some(probe) = self.probes.get_mut(i) else {
            return;
        };
        let Some(flight) = probe.flight.as_mut() else {
            return;
        };
        let verdict = match advance(flight, &probe.target.config.kind, &probe.request) {
            Some(v) => v,
            // Still going; enforce the deadline even if the caller is slow to tick.
            None if now >= flight.deadline => Err(timeout_detail(probe.target.config.timeout)),
            None => return,
        };
        probe.finish(registry, verdict, now, out);
    }

    /// Forces a server's state (e.g. after a passive failure marked it down),
    /// so that `rise` successes are needed to bring it back.
    pub fn force(&mut self, id: usize, state: HealthState) {
        for probe in self.probes.iter_mut().filter(|p| p.target.id == id) {
            probe.state = state;
        }
    }

    /// Deregisters and closes every probe socket. The checker starts no
    /// probes afterwards.
    pub fn shutdown(&mut self, registry: &Registry) {
        self.stopped = true;
        for probe in &mut self.probes {
            if let Some(mut flight) = probe.flight.take() {
                // The socket is closed right after; a failed deregister changes nothing.
                let _ = registry.deregister(&mut flight.stream);
            }
        }
    }
}

impl Probe {
    /// Opens the probe's connection; a connect that fails at once is a failed probe.
    fn start(&mut self, registry: &Registry, token: Token, now: Instant, out: &mut Vec<Report>) {
        let interval = self.target.config.interval.max(MIN_INTERVAL);
        let mut stream = match TcpStream::connect(self.target.addr) {
            Ok(s) => s,
            Err(e) if is_local_shortage(&e) => {
                // Our own resources ran out (fds, memory): that says nothing about
                // the server, so skip this round instead of marking it down.
                self.next_start = later(now, interval);
                return;
            }
            Err(e) => {
                self.next_start = later(now, interval);
                self.report(Err(connect_detail(&e)), out);
                return;
            }
        };
        if registry
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            // Also a local problem; try again next interval.
            self.next_start = later(now, interval);
            return;
        }
        self.flight = Some(Flight {
            stream,
            started: now,
            deadline: later(now, self.target.config.timeout),
            connected: false,
            written: 0,
            reply: Vec::new(),
        });
    }

    /// Closes the probe in flight, records its result and schedules the next.
    fn finish(
        &mut self,
        registry: &Registry,
        verdict: Verdict,
        now: Instant,
        out: &mut Vec<Report>,
    ) {
        let interval = self.target.config.interval.max(MIN_INTERVAL);
        let started = match self.flight.take() {
            Some(mut flight) => {
                // The socket is dropped (closed) right after; ignore deregister errors.
                let _ = registry.deregister(&mut flight.stream);
                flight.started
            }
            None => now,
        };
        self.next_start = later(started, interval);
        self.report(verdict, out);
    }

    fn report(&mut self, verdict: Verdict, out: &mut Vec<Report>) {
        let (ok, detail) = match verdict {
            Ok(()) => (true, "ok".to_string()),
            Err(detail) => (false, detail),
        };
        let cfg = &self.target.config;
        let transition = self.state.observe(ok, cfg.rise, cfg.fall);
        out.push(Report {
            id: self.target.id,
            ok,
            detail,
            transition,
            state: self.state,
        });
    }
}

/// `t + d`, clamped instead of panicking when a configured duration is absurd.
fn later(t: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    t.checked_add(d).or_else(|| t.checked_add(FAR)).unwrap_or(t)
}

/// The bytes a probe writes once connected.
fn request_bytes(kind: &HealthKind, addr: SocketAddr) -> Vec<u8> {
    match kind {
        HealthKind::Tcp => Vec::new(),
        HealthKind::Http(check) => {
            let host = match &check.host {
                Some(h) => h.clone(),
                None => addr.to_string(),
            };
            format!(
                "{} {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: lbctl-health\r\nConnection: close\r\n\r\n",
                check.method, check.path, host
            )
            .into_bytes()
        }
        HealthKind::SendExpect { send, .. } => send.clone(),
    }
}

/// Drives a probe as far as its socket allows without blocking.
/// Returns `Some` once the probe is decided.
fn advance(flight: &mut Flight, kind: &HealthKind, request: &[u8]) -> Option<Verdict> {
    if !flight.connected {
        match connect_state(&flight.stream) {
            ConnectState::Pending => return None,
            ConnectState::Failed(detail) => return Some(Err(detail)),
            ConnectState::Connected => flight.connected = true,
        }
        if matches!(kind, HealthKind::Tcp) {
            return Some(Ok(()));
        }
    }

    while flight.written < request.len() {
        match flight.stream.write(&request[flight.written..]) {
            Ok(0) => return Some(Err("connection closed".to_string())),
            Ok(n) => flight.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Some(Err(io_detail("write", &e))),
        }
    }
    let written_all = flight.written >= request.len();

    let limit = match kind {
        HealthKind::Tcp => 0,
        HealthKind::Http(_) => MAX_RESPONSE,
        HealthKind::SendExpect { expect, .. } => expect.len(),
    };
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(verdict) = judge_partial(kind, &flight.reply) {
            // A failure is final at once; a success only once the request is out.
            if verdict.is_err() || written_all {
                return Some(verdict);
            }
        }
        let room = limit.saturating_sub(flight.reply.len()).min(chunk.len());
        if room == 0 {
            // Read all we will ever read; wait for the request to finish if it has not.
            return written_all.then(|| judge_final(kind, &flight.reply));
        }
        match flight.stream.read(&mut chunk[..room]) {
            Ok(0) => return Some(judge_final(kind, &flight.reply)),
            Ok(n) => flight.reply.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Some(Err(io_detail("read", &e))),
        }
    }
}

enum ConnectState {
    Pending,
    Connected,
    Failed(String),
}

/// The mio way to learn how a non-blocking connect went: `take_error`, then
/// `peer_addr` (`NotConnected` / `EINPROGRESS` mean "not yet").
fn connect_state(stream: &TcpStream) -> ConnectState {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => return ConnectState::Failed(connect_detail(&e)),
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => ConnectState::Connected,
        Err(e)
            if e.kind() == io::ErrorKind::NotConnected
                || e.raw_os_error() == Some(nix::libc::EINPROGRESS) =>
        {
            ConnectState::Pending
        }
        Err(e) => ConnectState::Failed(connect_detail(&e)),
    }
}

fn connect_detail(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connect refused".to_string(),
        io::ErrorKind::ConnectionReset => "connection reset".to_string(),
        io::ErrorKind::TimedOut => "connect timed out".to_string(),
        io::ErrorKind::HostUnreachable => "host unreachable".to_string(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".to_string(),
        _ => format!("connect failed: {e}"),
    }
}

fn io_detail(op: &str, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionReset => "connection reset".to_string(),
        io::ErrorKind::BrokenPipe => "connection closed".to_string(),
        _ => format!("{op} failed: {e}"),
    }
}

fn timeout_detail(timeout: Duration) -> String {
    format!("timeout after {}", human_duration(timeout))
}

/// Formats a duration the way the config spells them: "1s", "200ms", "5m", "1h"
/// (the config's own [`duration::format`]).
pub fn human_duration(d: Duration) -> String {
    duration::format(d)
}

/// Judges a reply read so far: `Some` once the outcome cannot change.
fn judge_partial(kind: &HealthKind, reply: &[u8]) -> Option<Verdict> {
    match kind {
        HealthKind::Tcp => Some(Ok(())),
        HealthKind::Http(check) => http_partial(check, reply),
        HealthKind::SendExpect { expect, .. } => {
            if reply.len() >= expect.len() {
                Some(if reply.starts_with(expect) {
                    Ok(())
                } else {
                    Err("unexpected reply".to_string())
                })
            } else if !expect.starts_with(reply) {
                Some(Err("unexpected reply".to_string()))
            } else {
                None
            }
        }
    }
}

/// Judges a complete reply (the peer closed, or the read limit was reached).
fn judge_final(kind: &HealthKind, reply: &[u8]) -> Verdict {
    if let Some(verdict) = judge_partial(kind, reply) {
        return verdict;
    }
    if reply.is_empty() {
        return Err("connection closed".to_string());
    }
    match kind {
        HealthKind::Http(check) => {
            let line = &reply[..line_end(reply).unwrap_or(reply.len())];
            match parse_status(line) {
                None => Err("bad response".to_string()),
                Some(code) if !status_ok(check, code) => Err(format!("status {code}")),
                // A status line cut short by the close, and nothing else asked for.
                Some(_) if check.expect_body.is_none() => Ok(()),
                // The status passed, so the body is what is missing.
                Some(_) => Err("body mismatch".to_string()),
            }
        }
        _ => Err("unexpected reply".to_string()),
    }
}

fn http_partial(check: &HttpCheck, reply: &[u8]) -> Option<Verdict> {
    const PREFIX: &[u8] = b"HTTP/";
    let n = reply.len().min(PREFIX.len());
    if reply[..n] != PREFIX[..n] {
        return Some(Err("bad response".to_string()));
    }
    let end = line_end(reply)?;
    let Some(code) = parse_status(&reply[..end]) else {
        return Some(Err("bad response".to_string()));
    };
    if !status_ok(check, code) {
        return Some(Err(format!("status {code}")));
    }
    match &check.expect_body {
        None => Some(Ok(())),
        Some(want) => {
            let body = &reply[body_start(reply)?..];
            contains(body, want.as_bytes()).then_some(Ok(()))
        }
    }
}

fn status_ok(check: &HttpCheck, code: u16) -> bool {
    (check.expect_status.0..=check.expect_status.1).contains(&code)
}

fn line_end(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

/// Parses `HTTP/x.y NNN [reason]` (without its line ending) into `NNN`.
fn parse_status(line: &[u8]) -> Option<u16> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ').filter(|p| !p.is_empty());
    if !parts.next()?.starts_with(b"HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')))
}

/// Where the body starts: after the first empty line (`\r\n\r\n` or `\n\n`).
fn body_start(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find_map(|i| {
        let rest = &buf[i..];
        if rest.starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if rest.starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::net::{TcpListener, TcpStream as StdStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    use std::thread;

    // ---- the state machine ----

    fn run(
        state: &mut HealthState,
        results: &[bool],
        rise: u32,
        fall: u32,
    ) -> Vec<Option<Transition>> {
        results
            .iter()
            .map(|&ok| state.observe(ok, rise, fall))
            .collect()
    }

    #[test]
    fn up_server_goes_down_on_the_fall_th_consecutive_failure() {
        let mut s = HealthState::new_up();
        let got = run(&mut s, &[false, false, false], 2, 3);
        assert_eq!(got, [None, None, Some(Transition::Down)]);
        assert!(!s.up);
        assert_eq!(s.failures, 3);
        assert_eq!(s.successes, 0);
    }

    #[test]
    fn down_server_comes_up_on_the_rise_th_consecutive_success() {
        let mut s = HealthState::new_down();
        let got = run(&mut s, &[true, true], 2, 3);
        assert_eq!(got, [None, Some(Transition::Up)]);
        assert!(s.up);
        assert_eq!(s.successes, 2);
        assert_eq!(s.failures, 0);
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut s = HealthState::new_up();
        let got = run(&mut s, &[false, false, true, false, false], 2, 3);
        assert_eq!(got, [None; 5]);
        assert!(s.up);
        assert_eq!(s.failures, 2);
        assert_eq!(s.observe(false, 2, 3), Some(Transition::Down));
    }

    #[test]
    fn a_failure_resets_the_success_count() {
        let mut s = HealthState::new_down();
        let got = run(&mut s, &[true, false, true], 2, 3);
        assert_eq!(got, [None; 3]);
        assert!(!s.up);
        assert_eq!(s.successes, 1);
        assert_eq!(s.observe(true, 2, 3), Some(Transition::Up));
    }

    #[test]
    fn each_flip_is_reported_exactly_once() {
        let mut s = HealthState::new_up();
        let got = run(
            &mut s,
            &[false, false, false, false, true, true, true, true],
            2,
            2,
        );
        assert_eq!(
            got,
            [
                None,
                Some(Transition::Down),
                None,
                None,
                None,
                Some(Transition::Up),
                None,
                None
            ]
        );
    }

    #[test]
    fn successes_on_an_up_server_and_failures_on_a_down_server_flip_nothing() {
        let mut up = HealthState::new_up();
        assert_eq!(run(&mut up, &[true; 5], 1, 1), [None; 5]);
        assert_eq!(up.successes, 5);
        let mut down = HealthState::new_down();
        assert_eq!(run(&mut down, &[false; 5], 1, 1), [None; 5]);
        assert_eq!(down.failures, 5);
    }

    #[test]
    fn thresholds_of_zero_act_as_one() {
        let mut s = HealthState::new_up();
        assert_eq!(s.observe(false, 0, 0), Some(Transition::Down));
        assert_eq!(s.observe(true, 0, 0), Some(Transition::Up));
    }

    #[test]
    fn counters_saturate_instead_of_overflowing() {
        let mut s = HealthState {
            up: true,
            successes: u32::MAX,
            failures: 0,
        };
        assert_eq!(s.observe(true, 1, 1), None);
        assert_eq!(s.successes, u32::MAX);
    }

    // ---- reply judging, without sockets ----

    fn http_check() -> HttpCheck {
        HttpCheck {
            method: "GET".into(),
            path: "/health".into(),
            host: None,
            expect_status: (200, 399),
            expect_body: None,
        }
    }

    fn http_kind(expect_body: Option<&str>) -> HealthKind {
        HealthKind::Http(HttpCheck {
            expect_body: expect_body.map(str::to_string),
            ..http_check()
        })
    }

    #[test]
    fn http_status_line_alone_decides_without_expect_body() {
        let k = http_kind(None);
        assert_eq!(
            judge_partial(&k, b"HTTP/1.1 204 No Content\r\n"),
            Some(Ok(()))
        );
        assert_eq!(
            judge_partial(&k, b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(Err("status 503".into()))
        );
        assert_eq!(judge_partial(&k, b"HTTP/1.1 200"), None);
        assert_eq!(judge_partial(&k, b"HT"), None);
    }

    #[test]
    fn http_garbage_is_a_bad_response_as_soon_as_it_shows() {
        let k = http_kind(None);
        assert_eq!(
            judge_partial(&k, b"SSH-2.0"),
            Some(Err("bad response".into()))
        );
        assert_eq!(judge_partial(&k, b"X"), Some(Err("bad response".into())));
        assert_eq!(
            judge_partial(&k, b"HTTP/1.1 2x0 OK\r\n"),
            Some(Err("bad response".into()))
        );
        assert_eq!(
            judge_partial(&k, b"HTTP/1.1\r\n"),
            Some(Err("bad response".into()))
        );
        assert_eq!(
            judge_partial(&k, b"HTTP/1.1 \xff\xfe\xfd\r\n"),
            Some(Err("bad response".into()))
        );
    }

    #[test]
    fn http_body_must_contain_expect_body() {
        let k = http_kind(Some("alive"));
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n";
        assert_eq!(judge_partial(&k, head), None);
        let mut good = head.to_vec();
        good.extend_from_slice(b"I'm alive");
        assert_eq!(judge_partial(&k, &good), Some(Ok(())));
        let mut bad = head.to_vec();
        bad.extend_from_slice(b"I'm dead");
        assert_eq!(judge_partial(&k, &bad), None);
        assert_eq!(judge_final(&k, &bad), Err("body mismatch".into()));
        // The header block does not count as body.
        let in_header = b"HTTP/1.1 200 OK\r\nX-State: alive\r\n\r\nnope";
        assert_eq!(judge_final(&k, in_header), Err("body mismatch".into()));
        // Bare-LF responses are accepted.
        assert_eq!(judge_partial(&k, b"HTTP/1.0 200 OK\n\nalive"), Some(Ok(())));
    }

    #[test]
    fn http_final_judgement_names_what_was_missing() {
        let k = http_kind(None);
        assert_eq!(judge_final(&k, b""), Err("connection closed".into()));
        assert_eq!(judge_final(&k, b"HTTP/1.0 200"), Ok(()));
        assert_eq!(judge_final(&k, b"HTTP/1.0 404"), Err("status 404".into()));
        assert_eq!(judge_final(&k, b"HTTP/1."), Err("bad response".into()));
    }

    #[test]
    fn send_expect_judges_the_reply_prefix() {
        let k = HealthKind::SendExpect {
            send: b"PING\r\n".to_vec(),
            expect: b"+PONG".to_vec(),
        };
        assert_eq!(judge_partial(&k, b"+PO"), None);
        assert_eq!(judge_partial(&k, b"+PONG"), Some(Ok(())));
        assert_eq!(
            judge_partial(&k, b"-ERR"),
            Some(Err("unexpected reply".into()))
        );
        assert_eq!(judge_final(&k, b"+PO"), Err("unexpected reply".into()));
        assert_eq!(judge_final(&k, b""), Err("connection closed".into()));
    }

    #[test]
    fn http_request_uses_the_configured_host_or_the_address() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let req = request_bytes(&http_kind(None), addr);
        assert_eq!(
            req,
            b"GET /health HTTP/1.0\r\nHost: 127.0.0.1:8080\r\nUser-Agent: lbctl-health\r\nConnection: close\r\n\r\n"
        );
        let k = HealthKind::Http(HttpCheck {
            method: "HEAD".into(),
            host: Some("example.test".into()),
            ..http_check()
        });
        let req = String::from_utf8(request_bytes(&k, addr)).expect("utf8");
        assert!(req.starts_with("HEAD /health HTTP/1.0\r\nHost: example.test\r\n"));
    }

    #[test]
    fn durations_are_formatted_like_the_config_spells_them() {
        assert_eq!(human_duration(Duration::from_secs(1)), "1s");
        assert_eq!(human_duration(Duration::from_secs(90)), "90s");
        assert_eq!(human_duration(Duration::from_secs(300)), "5m");
        assert_eq!(human_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(human_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(human_duration(Duration::ZERO), "0s");
    }

    // ---- the checker against real loopback servers ----

    const TOKEN_BASE: usize = 100;
    const ID: usize = 7;

    fn config(kind: HealthKind) -> HealthConfig {
        HealthConfig {
            kind,
            interval: Duration::from_millis(10),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 3,
        }
    }

    fn target(addr: SocketAddr, config: HealthConfig) -> Target {
        Target {
            id: ID,
            addr,
            config,
        }
    }

    /// A real mio loop around a checker, the way the master drives it.
    struct Harness {
        poll: Poll,
        events: Events,
        checker: Checker,
    }

    impl Harness {
        fn new(targets: Vec<Target>) -> Harness {
            Harness {
                poll: Poll::new().expect("create poll"),
                events: Events::with_capacity(64),
                checker: Checker::new(targets, TOKEN_BASE, Instant::now()),
            }
        }

        fn one(target: Target) -> Harness {
            Harness::new(vec![target])
        }

        /// Runs the loop until at least `n` reports arrived (or a generous guard
        /// expires, which the caller's assertions then expose).
        fn reports(&mut self, n: usize) -> Vec<Report> {
            let guard = Instant::now() + Duration::from_secs(10);
            let mut out = Vec::new();
            while out.len() < n && Instant::now() < guard {
                let now = Instant::now();
                self.checker.tick(self.poll.registry(), now, &mut out);
                if out.len() >= n {
                    break;
                }
                let wait = self
                    .checker
                    .timeout(now)
                    .map_or(Duration::from_millis(50), |t| {
                        t.min(Duration::from_millis(50))
                    });
                self.poll.poll(&mut self.events, Some(wait)).expect("poll");
                let now = Instant::now();
                for event in self.events.iter() {
                    assert!(self.checker.owns(event.token()), "foreign token {event:?}");
                    self.checker
                        .event(self.poll.registry(), event, now, &mut out);
                }
            }
            assert!(out.len() >= n, "wanted {n} reports, got {out:?}");
            out
        }

        fn report(&mut self) -> Report {
            let mut got = self.reports(1);
            assert_eq!(
                got.len(),
                1,
                "one target gives one report at a time: {got:?}"
            );
            got.remove(0)
        }
    }

    /// A loopback server answering each connection, one at a time, with `handle`.
    fn serve(handle: impl Fn(StdStream) + Send + 'static) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                // A stuck probe must never wedge the server thread.
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                handle(stream);
            }
        });
        addr
    }

    /// Reads until the end of an HTTP request head (or EOF / error).
    fn read_head(stream: &mut StdStream) -> Vec<u8> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        head
    }

    fn http_server(reply: &'static [u8]) -> SocketAddr {
        serve(move |mut s| {
            read_head(&mut s);
            let _ = s.write_all(reply);
        })
    }

    fn closed_port() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.local_addr().expect("local addr")
    }

    #[test]
    fn checker_has_its_first_probe_due_at_once_and_owns_only_its_tokens() {
        let addr = closed_port();
        let checker = Checker::new(
            vec![
                target(addr, config(HealthKind::Tcp)),
                target(addr, config(HealthKind::Tcp)),
            ],
            TOKEN_BASE,
            Instant::now(),
        );
        assert_eq!(checker.timeout(Instant::now()), Some(Duration::ZERO));
        assert!(!checker.owns(Token(TOKEN_BASE - 1)));
        assert!(checker.owns(Token(TOKEN_BASE)));
        assert!(checker.owns(Token(TOKEN_BASE + 1)));
        assert!(!checker.owns(Token(TOKEN_BASE + 2)));
        assert!(!checker.owns(Token(0)));
    }

    #[test]
    fn tcp_probe_passes_against_a_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let mut h = Harness::one(target(addr, config(HealthKind::Tcp)));
        let r = h.report();
        assert_eq!(r.id, ID);
        assert!(r.ok, "{r:?}");
        assert_eq!(r.detail, "ok");
        assert_eq!(r.transition, None);
        assert!(r.state.up);
        assert_eq!(r.state.successes, 1);
        drop(listener);
    }

    #[test]
    fn tcp_probe_fails_with_connect_refused_against_a_closed_port() {
        let mut h = Harness::one(target(closed_port(), config(HealthKind::Tcp)));
        let r = h.report();
        assert!(!r.ok);
        assert_eq!(r.detail, "connect refused");
        assert_eq!(r.state.failures, 1);
    }

    #[test]
    fn http_probe_passes_on_200_and_sends_the_expected_request() {
        let (tx, rx) = mpsc::channel();
        let addr = serve(move |mut s| {
            let head = read_head(&mut s);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            let _ = tx.send(head);
        });
        let mut h = Harness::one(target(addr, config(http_kind(None))));
        let r = h.report();
        assert!(r.ok, "{r:?}");
        assert_eq!(r.detail, "ok");
        let head = rx.recv().expect("server saw the request");
        assert_eq!(
            String::from_utf8(head).expect("utf8"),
            format!(
                "GET /health HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: lbctl-health\r\nConnection: close\r\n\r\n"
            )
        );
    }

    #[test]
    fn http_probe_fails_on_503_although_tcp_accepts() {
        let addr = http_server(b"HTTP/1.0 503 Service Unavailable\r\n\r\ndown");
        let mut h = Harness::new(vec![
            target(addr, config(http_kind(None))),
            Target {
                id: ID + 1,
                ..target(addr, config(HealthKind::Tcp))
            },
        ]);
        let mut got = h.reports(2);
        got.sort_by_key(|r| r.id);
        assert!(!got[0].ok);
        assert_eq!(got[0].detail, "status 503");
        assert!(got[1].ok, "{:?}", got[1]);
    }

    #[test]
    fn http_probe_checks_the_body() {
        let addr = http_server(b"HTTP/1.0 200 OK\r\n\r\nall systems alive\n");
        let mut h = Harness::one(target(addr, config(http_kind(Some("alive")))));
        assert_eq!(h.report().detail, "ok");

        let addr = http_server(b"HTTP/1.0 200 OK\r\n\r\nmaintenance\n");
        let mut h = Harness::one(target(addr, config(http_kind(Some("alive")))));
        assert_eq!(h.report().detail, "body mismatch");
    }

    #[test]
    fn http_probe_reports_garbage_and_silent_close() {
        let addr = http_server(b"220 smtp.example ESMTP\r\n");
        let mut h = Harness::one(target(addr, config(http_kind(None))));
        assert_eq!(h.report().detail, "bad response");

        let addr = serve(|mut s| {
            read_head(&mut s);
        });
        let mut h = Harness::one(target(addr, config(http_kind(None))));
        assert_eq!(h.report().detail, "connection closed");
    }

    #[test]
    fn http_probe_stops_reading_a_huge_reply_at_the_bound() {
        let addr = serve(|mut s| {
            read_head(&mut s);
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n");
            let junk = vec![b'x'; 64 * 1024];
            // The probe closes after MAX_RESPONSE bytes; the write then fails.
            for _ in 0..32 {
                if s.write_all(&junk).is_err() {
                    break;
                }
            }
        });
        let mut h = Harness::one(target(addr, config(http_kind(Some("needle")))));
        assert_eq!(h.report().detail, "body mismatch");
    }

    #[test]
    fn send_expect_probe_passes_on_the_expected_reply() {
        let addr = serve(|mut s| {
            let mut ping = [0u8; 6];
            if s.read_exact(&mut ping).is_ok() && &ping == b"PING\r\n" {
                let _ = s.write_all(b"+PONG\r\n");
            }
        });
        let kind = HealthKind::SendExpect {
            send: b"PING\r\n".to_vec(),
            expect: b"+PONG".to_vec(),
        };
        let mut h = Harness::one(target(addr, config(kind)));
        let r = h.report();
        assert!(r.ok, "{r:?}");
    }

    #[test]
    fn send_expect_probe_fails_on_a_wrong_reply() {
        let addr = serve(|mut s| {
            let mut ping = [0u8; 6];
            let _ = s.read_exact(&mut ping);
            let _ = s.write_all(b"-ERR unknown command\r\n");
        });
        let kind = HealthKind::SendExpect {
            send: b"PING\r\n".to_vec(),
            expect: b"+PONG".to_vec(),
        };
        let mut h = Harness::one(target(addr, config(kind)));
        assert_eq!(h.report().detail, "unexpected reply");
    }

    #[test]
    fn probe_of_a_server_that_never_answers_times_out() {
        let (tx, rx) = mpsc::channel();
        let addr = serve(move |s| {
            // Hold the connection open without a word.
            let _ = tx.send(s);
        });
        let mut cfg = config(http_kind(None));
        cfg.timeout = Duration::from_millis(200);
        let mut h = Harness::one(target(addr, cfg));
        let r = h.report();
        assert!(!r.ok);
        assert_eq!(r.detail, "timeout after 200ms");
        drop(rx);
    }

    #[test]
    fn rise_and_fall_transitions_are_reported_once() {
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&healthy);
        let addr = serve(move |mut s| {
            read_head(&mut s);
            let reply: &[u8] = if flag.load(Ordering::SeqCst) {
                b"HTTP/1.0 200 OK\r\n\r\n"
            } else {
                b"HTTP/1.0 500 Oops\r\n\r\n"
            };
            let _ = s.write_all(reply);
        });
        let mut cfg = config(http_kind(None));
        cfg.rise = 2;
        cfg.fall = 2;
        let mut h = Harness::one(target(addr, cfg));

        // Each probe starts only after the previous report, so flipping the
        // flag between reports decides the next probe's result.
        let mut step = |ok: bool| {
            healthy.store(ok, Ordering::SeqCst);
            let r = h.report();
            assert_eq!(r.ok, ok, "{r:?}");
            (r.transition, r.state.up)
        };
        assert_eq!(step(true), (None, true));
        assert_eq!(step(false), (None, true));
        assert_eq!(step(false), (Some(Transition::Down), false));
        assert_eq!(step(false), (None, false));
        assert_eq!(step(true), (None, false));
        assert_eq!(step(true), (Some(Transition::Up), true));
        assert_eq!(step(true), (None, true));
    }

    #[test]
    fn forced_down_server_needs_rise_successes_to_come_back() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let mut h = Harness::one(target(addr, config(HealthKind::Tcp)));
        h.checker.force(ID, HealthState::new_down());
        assert_eq!(h.checker.state(ID), Some(HealthState::new_down()));
        assert_eq!(h.report().transition, None);
        let r = h.report();
        assert_eq!(r.transition, Some(Transition::Up));
        assert!(r.state.up);
        assert_eq!(h.checker.state(ID).map(|s| s.up), Some(true));
        drop(listener);
    }

    #[test]
    fn shutdown_closes_probes_and_stops_scheduling() {
        let (tx, rx) = mpsc::channel();
        let addr = serve(move |s| {
            let _ = tx.send(s);
        });
        let mut h = Harness::one(target(addr, config(http_kind(None))));
        let mut out = Vec::new();
        h.checker.tick(h.poll.registry(), Instant::now(), &mut out);
        // The probe is in flight once the server has its connection.
        let mut server_side = rx.recv().expect("probe connected");
        h.checker.shutdown(h.poll.registry());
        assert_eq!(h.checker.timeout(Instant::now()), None);
        h.checker.tick(
            h.poll.registry(),
            Instant::now() + Duration::from_secs(60),
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
        // The probe's socket is closed: the server reads EOF (or a reset).
        let mut buf = [0u8; 256];
        loop {
            match server_side.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
                    break;
                }
            }
        }
    }
}
