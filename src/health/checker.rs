//! Owns the non-blocking checker the master loop drives ([`Checker`]): one
//! probe socket per target at a time, its connect, write and bounded read
//! without blocking, its deadline, the schedule of the next probe, and the
//! [`Report`] of each result after the target's [`HealthState`] saw it.

use super::probe::{
    Verdict, connect_detail, io_detail, judge_final, judge_partial, read_limit, request_bytes,
    timeout_detail,
};
use super::state::{HealthState, Transition};
use crate::config::{HealthConfig, HealthKind};
use crate::netutil::is_local_shortage;
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The first probes of a checker are spread over at most this much time.
const INITIAL_SPREAD: Duration = Duration::from_millis(100);

/// Floor for `interval`, so a zero interval cannot spin the master loop.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// One server to probe.
#[derive(Debug, Clone)]
pub struct Target {
    /// Caller's id for the server (reported back in [`Report::id`]).
    pub id: usize,
    /// Address to probe.
    pub addr: SocketAddr,
    /// What and how often.
    pub config: HealthConfig,
    /// `send_proxy`: every probe starts with the PROXY header of a
    /// connection that carries no client (v1 `UNKNOWN`, v2 `LOCAL`), as
    /// HAProxy's own checks do, so a server that requires one accepts it.
    pub send_proxy: Option<crate::proxy_protocol::Version>,
    /// `tls`: every probe does the TLS handshake after the connect (and
    /// the PROXY header), then its kind's request over TLS.
    pub tls: Option<std::sync::Arc<crate::config::origin::OriginTls>>,
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

/// One target and its probe schedule.
#[derive(Debug)]
struct Probe {
    target: Target,
    /// Bytes written once connected (empty for `tcp`).
    request: Vec<u8>,
    state: HealthState,
    /// No probes while set (a DNS slot without an address).
    paused: bool,
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
    /// `tls`: the probe's TLS state, and how many bytes of the request
    /// (the PROXY header) go before the handshake.
    tls: Option<(Box<super::tls::ProbeTls>, usize)>,
    /// The handshake is done (or there is none).
    handshaken: bool,
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
                    request: probe_request(&target),
                    target,
                    state: HealthState::new_up(),
                    paused: false,
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
            .filter(|p| !p.paused)
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
            if probe.flight.is_none() && !probe.paused && now >= probe.next_start {
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

    /// Stops probing target `id` until [`Checker::retarget`] gives it an address.
    pub fn pause(&mut self, id: usize) {
        for probe in self.probes.iter_mut().filter(|p| p.target.id == id) {
            probe.paused = true;
        }
    }

    /// Points target `id` at `addr` (a DNS slot's new address: it starts
    /// up, probed at once), or pauses it (`None`: the slot emptied). A probe
    /// in flight to the old address is dropped.
    pub fn retarget(
        &mut self,
        registry: &Registry,
        id: usize,
        addr: Option<SocketAddr>,
        now: Instant,
    ) {
        for probe in self.probes.iter_mut().filter(|p| p.target.id == id) {
            if let Some(mut flight) = probe.flight.take() {
                // The socket is closed right after; a failed deregister changes nothing.
                let _ = registry.deregister(&mut flight.stream);
            }
            probe.paused = addr.is_none();
            if let Some(a) = addr {
                probe.target.addr = a;
                probe.request = probe_request(&probe.target);
                probe.state = HealthState::new_up();
                probe.next_start = now;
            }
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
        let tls = match &self.target.tls {
            Some(t) => match super::tls::ProbeTls::new(t, self.target.addr) {
                Ok(p) => {
                    let raw = self.target.send_proxy.map_or(0, |v| {
                        crate::proxy_protocol::encode_local(v).as_bytes().len()
                    });
                    Some((Box::new(p), raw))
                }
                Err(e) => {
                    let _ = registry.deregister(&mut stream);
                    self.next_start = later(now, interval);
                    self.report(Err(format!("tls: {e}")), out);
                    return;
                }
            },
            None => None,
        };
        self.flight = Some(Flight {
            stream,
            started: now,
            deadline: later(now, self.target.config.timeout),
            connected: false,
            written: 0,
            reply: Vec::new(),
            handshaken: tls.is_none(),
            tls,
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

/// The bytes a probe of `target` writes once connected: its PROXY header
/// (`send_proxy`), then what its kind sends.
fn probe_request(target: &Target) -> Vec<u8> {
    let mut out = target
        .send_proxy
        .map(|v| crate::proxy_protocol::encode_local(v).as_bytes().to_vec())
        .unwrap_or_default();
    out.extend_from_slice(&request_bytes(&target.config.kind, target.addr));
    out
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
        // A `tcp` probe is done once connected (with a PROXY header to
        // write, once that is written).
        if matches!(kind, HealthKind::Tcp) && request.is_empty() && flight.tls.is_none() {
            return Some(Ok(()));
        }
    }
    if let Some((tls, raw)) = flight.tls.as_mut() {
        let raw = *raw;
        if !flight.handshaken {
            // The PROXY header goes first, in the clear.
            match write_some(&mut flight.stream, &request[..raw], &mut flight.written) {
                Err(why) => return Some(Err(why)),
                Ok(false) => return None,
                Ok(true) => {}
            }
            match tls.handshake(&mut flight.stream) {
                super::tls::Handshake::Pending => return None,
                super::tls::Handshake::Failed(why) => return Some(Err(why)),
                super::tls::Handshake::Done => flight.handshaken = true,
            }
            if matches!(kind, HealthKind::Tcp) {
                return Some(Ok(()));
            }
        }
        let mut ready = crate::worker::buffer::Ready::default();
        let mut plain = tls.plain(&mut flight.stream, &mut ready);
        return converse(
            &mut plain,
            &mut flight.written,
            &mut flight.reply,
            kind,
            request,
        );
    }
    converse(
        &mut flight.stream,
        &mut flight.written,
        &mut flight.reply,
        kind,
        request,
    )
}

/// Writes `bytes[*written..]` to `s` until done (`Ok(true)`) or the socket
/// would block (`Ok(false)`); `Err` in words when the write failed.
fn write_some<S: Write>(s: &mut S, bytes: &[u8], written: &mut usize) -> Result<bool, String> {
    while *written < bytes.len() {
        match s.write(&bytes[*written..]) {
            Ok(0) => return Err("connection closed".to_string()),
            Ok(n) => *written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_detail("write", &e)),
        }
    }
    Ok(true)
}

/// Writes the rest of the request and reads the reply as far as `s` allows
/// (the socket, or a TLS probe's plaintext); `Some` once decided.
fn converse<S: Read + Write>(
    s: &mut S,
    written: &mut usize,
    reply: &mut Vec<u8>,
    kind: &HealthKind,
    request: &[u8],
) -> Option<Verdict> {
    let written_all = match write_some(s, request, written) {
        Ok(all) => all,
        Err(why) => return Some(Err(why)),
    };

    let limit = read_limit(kind);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(verdict) = judge_partial(kind, reply) {
            // A failure is final at once; a success only once the request is out.
            if verdict.is_err() || written_all {
                return Some(verdict);
            }
        }
        let room = limit.saturating_sub(reply.len()).min(chunk.len());
        if room == 0 {
            // Read all we will ever read; wait for the request to finish if it has not.
            return written_all.then(|| judge_final(kind, reply));
        }
        match s.read(&mut chunk[..room]) {
            Ok(0) => return Some(judge_final(kind, reply)),
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
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

#[cfg(test)]
mod tests;
