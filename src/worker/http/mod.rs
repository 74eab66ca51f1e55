//! Owns `mode = "http"`: the [`HttpSession`] state machine of one client
//! connection. Each request head is parsed (pure parsing lives in
//! `crate::http`), rewritten (hop-by-hop headers out, forwarded headers in)
//! and balanced on its own: the session asks the loop for a server per
//! request ([`Step::Dispatch`]), streams the body both ways with the framing
//! trackers (Content-Length, chunked, until close), answers interim 1xx
//! heads through, gives a kept-alive server connection back to the worker's
//! idle pool ([`Step::Detach`]), and reads the next (possibly pipelined)
//! request only once the previous response is out, so responses stay in
//! order. A `101` to an `Upgrade` request turns the pair into the TCP relay.
//!
//! Failure rules: a server that resets or closes before any response byte
//! gets an idempotent request again on another server ([`Step::Retry`]);
//! errors lbctl answers itself (400, 408, 413/414/431, 502, 503, 504) are
//! short plain bodies with `Connection: close`, after which the client's
//! side is shut and drained briefly (lingering close) so the answer is not
//! destroyed by a reset.

mod exchange;
mod half;
mod key;
mod route;

use super::access::record::{Cause, RequestLog};
use super::buffer::Pool;
use super::session::{ClientIo, Counters, Io, Step};
use crate::config::ListenConfig;
use crate::http::{self, BodyKind, BodyTracker, Version};
use half::{Half, head_room};
use std::io;
use std::time::{Duration, Instant};

/// Bytes of a request kept for resending on a retry; larger requests are
/// not retried once their first byte went out.
const RETRY_KEEP: usize = 64 * 1024;
/// Buffer capacity per direction beyond the head limit (body streaming).
const BODY_ROOM: usize = 16 * 1024;
/// How long a closing client is drained after lbctl's own answer.
const LINGER: Duration = Duration::from_secs(1);
/// While the worker drains, how long an idle keep-alive client may still
/// send one more request.
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the next request head.
    Head,
    /// A request is parsed; the loop is getting a server.
    Wait,
    /// The request goes to the server and the response comes back.
    Exchange,
    /// `101 Switching Protocols`: flushing what is buffered, then a pipe.
    Tunnel,
    /// An answer (or the last response) goes out, then the connection ends.
    Closing,
    /// The client's write side is shut; its bytes are read and dropped.
    Lingering { until: Instant },
}

#[derive(Debug)]
struct Response {
    body: BodyTracker,
    done: bool,
    keep_alive: bool,
}

#[derive(Debug)]
struct Exchange {
    head_method: bool,
    idempotent: bool,
    keep_alive: bool,
    version: Version,
    upgrade: bool,
    req_body: BodyTracker,
    req_done: bool,
    resp: Option<Response>,
    /// A byte of a response came from the server (no retry after that).
    answered: bool,
    /// A response head (even an interim one) was queued for the client: lbctl
    /// can no longer answer in its place.
    client_started: bool,
    /// Last time bytes went to or came from the server (server timeout).
    server_since: Instant,
}

/// What one internal step left: a value for the loop, or the hand-over to
/// the TCP relay after a `101`.
#[derive(Debug)]
pub enum HttpStep {
    /// Return this to the loop.
    Loop(Step),
    /// Both directions are flushed after a `101`: become a pipe.
    Pipe,
}

enum Run {
    Open,
    Finished,
    Loop(Step),
    Pipe,
    /// The state changed: run the state machine again.
    Again,
}

/// The HTTP state of one client connection.
#[derive(Debug)]
pub struct HttpSession {
    up: Half,
    down: Half,
    state: State,
    ex: Option<Exchange>,
    /// When the current head started (header timeout).
    head_since: Instant,
    /// Requests parsed on this connection.
    requests: u64,
    /// A copy of what the current request's server was sent (retries); its
    /// buffer comes from the pool's head buffers and goes back there.
    retry_copy: Option<Vec<u8>>,
    /// A server failed this request after it was sent (answer 502, not 503).
    server_failed: bool,
    /// The balancing key of the current request (`hash_key`).
    key: Option<u64>,
    /// The worker drains: the current response is the last one.
    draining: bool,
    /// The server pool the current request was routed to.
    pool: usize,
    /// While draining: when an idle keep-alive client is closed.
    drain_at: Option<Instant>,
    /// The access-log state of the current request.
    log: RequestLog,
}

impl HttpSession {
    /// A session for a client accepted at `now`.
    pub fn new(now: Instant) -> HttpSession {
        HttpSession {
            up: Half::default(),
            down: Half::default(),
            state: State::Head,
            ex: None,
            head_since: now,
            requests: 0,
            retry_copy: None,
            server_failed: false,
            key: None,
            draining: false,
            pool: 0,
            drain_at: None,
            log: RequestLog::default(),
        }
    }

    /// The server pool the current request was routed to.
    pub fn pool(&self) -> usize {
        self.pool
    }

    /// The worker drains: the current (or next) response goes out with
    /// `Connection: close`. A client idle between requests gets
    /// [`DRAIN_GRACE`] to send one more (answered, then closed); after that
    /// its side is shut and drained (lingering close), so a request crossing
    /// the close meets an orderly EOF, never a reset.
    pub fn on_drain(&mut self, now: Instant) {
        self.draining = true;
        if let Some(ex) = &mut self.ex
            && ex.resp.is_none()
        {
            ex.keep_alive = false;
        }
        self.drain_at = Some(now + DRAIN_GRACE);
    }

    /// Bytes moved so far (client → server, server → client).
    pub fn bytes(&self) -> (u64, u64) {
        (self.up.bytes, self.down.bytes)
    }

    /// The access-log state of the current request.
    pub fn log_mut(&mut self) -> &mut RequestLog {
        &mut self.log
    }

    /// Hands the access-log state over (to the tunnel after a `101`).
    pub fn take_log(&mut self) -> Box<RequestLog> {
        Box::new(std::mem::take(&mut self.log))
    }

    /// The balancing key of the request being dispatched, if it has one.
    pub fn balance_key(&self) -> Option<u64> {
        self.key
    }

    /// Whether the request being dispatched may use a pooled connection.
    pub fn may_reuse(&self) -> bool {
        self.ex.as_ref().is_some_and(|e| e.idempotent)
    }

    /// A word for `lbctl connections`.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Head if self.requests == 0 => "http-head",
            State::Head => "http-keepalive",
            State::Wait | State::Exchange => "http-request",
            State::Tunnel => "tunnel",
            State::Closing | State::Lingering { .. } => "closing",
        }
    }

    /// The earliest deadline of the session's own (header, server, linger),
    /// beside the loop's idle timeout.
    pub fn deadline(&self, listen: &ListenConfig) -> Option<Instant> {
        match self.state {
            State::Head if self.requests == 0 || !self.up.unclassified().is_empty() => {
                Some(self.head_since + listen.timeouts.header)
            }
            State::Head => self.drain_at,
            State::Exchange => match &self.ex {
                Some(ex) if !ex.resp.as_ref().is_some_and(|r| r.done) => {
                    Some(ex.server_since + listen.timeouts.server)
                }
                _ => None,
            },
            State::Lingering { until } => Some(until),
            _ => None,
        }
    }

    /// The deadline passed: answers 408 (head not complete) or 504 (no
    /// response yet) when nothing else was sent, best effort.
    /// Returns true when the connection is to be closed now, false when it
    /// goes on (an idle client of a draining worker is shut and lingers).
    pub fn on_timeout<C: ClientIo>(
        &mut self,
        client: &mut C,
        counters: &Counters,
        now: Instant,
    ) -> bool {
        if self.state == State::Head
            && self.up.unclassified().is_empty()
            && self.requests > 0
            && self.drain_at.is_some_and(|d| d <= now)
        {
            let _ = client.shutdown_write();
            self.state = State::Lingering {
                until: now + LINGER,
            };
            return false;
        }
        let status = match self.state {
            State::Head if !self.up.unclassified().is_empty() => Some(408),
            State::Exchange if !self.ex.as_ref().is_some_and(|e| e.client_started) => Some(504),
            _ => None,
        };
        let bytes = self.bytes();
        match status {
            Some(408) => self
                .log
                .local(408, Some(Cause::HeaderTimeout), self.head_since, bytes),
            Some(_) => self.log.cause(Cause::ServerTimeout),
            None => {}
        }
        if let Some(status) = status
            && self.down.flushed()
        {
            if status == 504 {
                self.log.status = 504;
            }
            counters.local(status);
            let _ = client.write(&http::error_response(status, true));
        }
        true
    }

    /// No server can take the request (every one down, full, or failed):
    /// answers 503, or 502 when a server failed it after it was sent.
    /// False when a response already started (the client is closed).
    pub fn answer_no_server(&mut self, counters: &Counters) -> bool {
        let status = if self.server_failed { 502 } else { 503 };
        self.answer(status, counters)
    }

    fn answer(&mut self, status: u16, counters: &Counters) -> bool {
        let cause = match status {
            502 => Some(Cause::ServerError),
            503 => None,
            _ => Some(Cause::BadRequest),
        };
        if self.ex.as_ref().is_some_and(|e| e.client_started) || !self.down.flushed() {
            if let Some(c) = cause {
                self.log.cause(c);
            }
            return false;
        }
        let bytes = self.bytes();
        self.log.local(status, cause, self.head_since, bytes);
        counters.local(status);
        self.down.discard_unclassified();
        self.down.out = http::error_response(status, true);
        self.state = State::Closing;
        self.ex = None;
        true
    }

    /// Moves the session on (buffers come from and go back to `pool`).
    pub fn advance<C: ClientIo>(
        &mut self,
        io: &mut Io<'_, C>,
        pool: &mut Pool,
        counters: &Counters,
    ) -> io::Result<HttpStep> {
        let before = self.bytes();
        let run = self.run(io, pool, counters)?;
        let after = self.bytes();
        let (up, down) = (after.0 - before.0, after.1 - before.1);
        Ok(match run {
            Run::Open => HttpStep::Loop(Step::Open(up, down)),
            Run::Finished => HttpStep::Loop(Step::Finished(up, down)),
            Run::Loop(step) => {
                // Bytes moved before a dispatch/detach are counted here.
                if up > 0 || down > 0 {
                    counters.bytes(up, down);
                }
                HttpStep::Loop(step)
            }
            Run::Pipe => HttpStep::Pipe,
            Run::Again => HttpStep::Loop(Step::Open(up, down)),
        })
    }

    /// Gives the buffers back (the connection is being dropped).
    pub fn release(&mut self, pool: &mut Pool) {
        self.up.release(pool);
        self.down.release(pool);
        if let Some(copy) = self.retry_copy.take() {
            pool.give_head(copy);
        }
    }

    fn run<C: ClientIo>(
        &mut self,
        io: &mut Io<'_, C>,
        pool: &mut Pool,
        counters: &Counters,
    ) -> io::Result<Run> {
        let cap = io.listen.http.limits.header_bytes + BODY_ROOM;
        let limits = limits_of(io.listen);
        loop {
            match self.state {
                State::Head => {
                    let bytes = (self.up.bytes, self.down.bytes);
                    let (input, out) = self.up.input_and_out();
                    match http::parse_request_in(input, &limits, pool.fields()) {
                        Ok(Some(head)) => {
                            head_room(out, pool);
                            out.clear();
                            let (ex, key, route) = start_request(&head, out, io, self.draining);
                            self.log.start(
                                io.listen.access_log.is_some(),
                                head.method,
                                head.uri,
                                self.head_since,
                                bytes,
                            );
                            let head_len = head.head_len;
                            pool.give_fields(head.headers);
                            self.begin(ex, key, route, pool);
                            self.up.consume(head_len);
                            return Ok(Run::Loop(Step::Dispatch));
                        }
                        Ok(None) => {
                            if self.up.eof {
                                return Ok(Run::Finished);
                            }
                            let was_empty = self.up.unclassified().is_empty();
                            if was_empty && self.requests > 0 {
                                self.up.shrink_if_empty(pool);
                                self.down.shrink_if_empty(pool);
                            }
                            if !self.up.read_from(io.client, io.client_ready, cap, pool)? {
                                return Ok(Run::Open);
                            }
                            if was_empty && self.requests > 0 {
                                self.head_since = io.now;
                            }
                        }
                        Err(e) => {
                            if !self.answer(e.status, counters) {
                                return Ok(Run::Finished);
                            }
                        }
                    }
                }
                State::Wait => {
                    if io.upstream.server.is_none() {
                        return Ok(Run::Open);
                    }
                    self.state = State::Exchange;
                    if let Some(ex) = &mut self.ex {
                        ex.server_since = io.now;
                    }
                }
                State::Exchange => match self.exchange(io, cap, pool, counters) {
                    Ok(Some(Run::Again)) => continue,
                    Ok(Some(run)) => return Ok(run),
                    Ok(None) => return Ok(Run::Open),
                    Err(Failure::Client(e)) => return Err(e),
                    Err(Failure::BadRequestBody) => {
                        if self.answer(400, counters) {
                            return Ok(Run::Loop(Step::Detach { reuse: false }));
                        }
                        return Ok(Run::Finished);
                    }
                    Err(Failure::Server) => match self.server_failed_request(counters) {
                        Some(run) => return Ok(run),
                        None => continue,
                    },
                },
                State::Tunnel => {
                    self.up.clear_all();
                    self.down.clear_all();
                    if let Some(server) = io.upstream.server.as_mut() {
                        self.up.write_to(server, &mut io.upstream.ready, None)?;
                    }
                    self.down.write_to(io.client, io.client_ready, None)?;
                    if self.up.flushed() && self.down.flushed() {
                        return Ok(Run::Pipe);
                    }
                    return Ok(Run::Open);
                }
                State::Closing => {
                    self.down.write_to(io.client, io.client_ready, None)?;
                    if !self.down.flushed() {
                        return Ok(Run::Open);
                    }
                    let _ = io.client.shutdown_write();
                    self.state = State::Lingering {
                        until: io.now + LINGER,
                    };
                    self.up.release(pool);
                    self.up.reset();
                }
                State::Lingering { .. } => loop {
                    // Read and drop until the client closes (or the linger
                    // deadline), so unread bytes cause no reset that would
                    // destroy the answer in flight.
                    self.up.discard_all();
                    if !self
                        .up
                        .read_from(io.client, io.client_ready, BODY_ROOM, pool)?
                    {
                        return Ok(Run::Open);
                    }
                    if self.up.eof {
                        return Ok(Run::Finished);
                    }
                },
            }
        }
    }

    /// A request head was parsed (its rewrite is out): its exchange starts.
    fn begin(&mut self, ex: Exchange, key: Option<u64>, route: usize, pool: &mut Pool) {
        self.requests += 1;
        self.server_failed = false;
        self.key = key;
        self.pool = route;
        if let Some(old) = self.retry_copy.take() {
            pool.give_head(old);
        }
        self.retry_copy = ex.idempotent.then(|| pool.take_head());
        self.ex = Some(ex);
        self.state = State::Wait;
    }
}

/// Which side failed an exchange.
pub(super) enum Failure {
    /// The client (or a framing error of a response body): the connection ends.
    Client(io::Error),
    /// The request body's framing is broken (a bad chunk size): 400.
    BadRequestBody,
    /// The server: retried, answered 502, or the connection ends.
    Server,
}

/// What a parsed request head starts: writes its rewrite to `out` and
/// returns its exchange, balancing key and route (server pool).
fn start_request<C: ClientIo>(
    head: &http::RequestHead<'_>,
    out: &mut Vec<u8>,
    io: &Io<'_, C>,
    draining: bool,
) -> (Exchange, Option<u64>, usize) {
    let http_conf = &io.listen.http;
    let key = key::of(&http_conf.hash_key, head);
    let route = route::pool_for(&io.listen.routes, head);
    let fwd = http::Forwarding {
        client_ip: io.client_addr.ip(),
        proto: if io.listen.tls.is_some() {
            "https"
        } else {
            "http"
        },
        xff: http_conf.forwarded.xff,
        xfp: http_conf.forwarded.xfp,
        forwarded: http_conf.forwarded.rfc7239,
        upgrade: head.upgrade.is_some(),
    };
    http::write_request(head, out, &fwd);
    let ex = Exchange {
        head_method: head.method.eq_ignore_ascii_case("HEAD"),
        idempotent: head.idempotent(),
        keep_alive: head.keep_alive && !draining,
        version: head.version,
        upgrade: head.upgrade.is_some(),
        req_body: BodyTracker::new(head.body),
        req_done: matches!(head.body, BodyKind::None | BodyKind::Length(0)),
        resp: None,
        answered: false,
        client_started: false,
        server_since: io.now,
    };
    (ex, key, route)
}

/// The parser's limits from the listen's `limits` table.
fn limits_of(listen: &ListenConfig) -> http::Limits {
    let l = &listen.http.limits;
    http::Limits {
        header_bytes: l.header_bytes,
        headers: l.headers,
        uri_bytes: l.uri_bytes,
    }
}

fn bad_body() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "bad chunked body")
}
