//! Owns what an access-log line says about how a connection or request
//! ended ([`Cause`]) and the per-request bookkeeping an HTTP session keeps
//! for its line ([`RequestLog`]): method and path (copied only when the
//! listen logs), status, when the request began, the byte counts at its
//! start, and a cause more precise than the connection's end (a header
//! timeout, a bad request). Pure data: no I/O.

use std::time::Instant;

/// Longest method + path kept for a line (longer paths are cut).
const MAX_TEXT: usize = 4096;

/// How a connection (tcp) or request (http) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// An HTTP request whose response went out completely.
    Done,
    /// The client closed first (sent its FIN).
    ClientClosed,
    /// The server closed first (sent its FIN).
    ServerClosed,
    /// No traffic for `timeouts.idle`.
    IdleTimeout,
    /// Every connect attempt failed (refused, unreachable, `timeouts.connect`).
    ConnectFailed,
    /// No server could be picked (all down, disabled or full, queue full).
    NoServer,
    /// Waited in the queue past `queue.timeout`.
    QueueTimeout,
    /// The request head did not arrive within `timeouts.header` (408).
    HeaderTimeout,
    /// The server did not answer within `timeouts.server` (504).
    ServerTimeout,
    /// lbctl refused the request (400, 413, 414, 431).
    BadRequest,
    /// The server failed the request (reset, garbage, closed mid-body: 502).
    ServerError,
    /// A socket error (a reset, an unexpected EOF) ended the connection.
    Error,
}

impl Cause {
    /// The word written in the line.
    pub fn word(self) -> &'static str {
        match self {
            Cause::Done => "done",
            Cause::ClientClosed => "client_closed",
            Cause::ServerClosed => "server_closed",
            Cause::IdleTimeout => "idle_timeout",
            Cause::ConnectFailed => "connect_failed",
            Cause::NoServer => "no_server",
            Cause::QueueTimeout => "queue_timeout",
            Cause::HeaderTimeout => "header_timeout",
            Cause::ServerTimeout => "server_timeout",
            Cause::BadRequest => "bad_request",
            Cause::ServerError => "server_error",
            Cause::Error => "error",
        }
    }
}

/// A request that ended and waits for the loop to write its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// Why it ended.
    pub cause: Cause,
    /// When.
    pub at: Instant,
    /// Bytes of this request (client → server, server → client).
    pub bytes: (u64, u64),
}

/// The access-log state of the request an HTTP session is serving.
#[derive(Debug, Default)]
pub struct RequestLog {
    /// A request (or lbctl's answer to an unparsable one) is under way.
    open: bool,
    /// Method bytes, then path bytes.
    text: Vec<u8>,
    method_len: usize,
    /// The final status (0 until known).
    pub status: u16,
    /// When the request's first byte came in.
    pub since: Option<Instant>,
    /// The session's byte counts when it began.
    base: (u64, u64),
    /// A cause more precise than how the connection ends.
    cause: Option<Cause>,
    /// Ended, waiting to be written.
    ended: Option<Ended>,
}

impl RequestLog {
    /// A request head was parsed. `keep` (the listen logs) copies its
    /// method and path; `since` is when its first byte came, `bytes` the
    /// session's counts so far.
    pub fn start(
        &mut self,
        keep: bool,
        method: &str,
        path: &str,
        since: Instant,
        bytes: (u64, u64),
    ) {
        self.open = true;
        self.status = 0;
        self.cause = None;
        self.since = Some(since);
        self.base = bytes;
        self.text.clear();
        self.method_len = 0;
        if keep {
            let m = &method.as_bytes()[..method.len().min(MAX_TEXT)];
            self.text.extend_from_slice(m);
            self.method_len = m.len();
            let room = MAX_TEXT - m.len();
            self.text
                .extend_from_slice(&path.as_bytes()[..path.len().min(room)]);
        }
    }

    /// lbctl answers `status` itself; a request that never parsed is
    /// logged with `-` for method and path, from `since`.
    pub fn local(&mut self, status: u16, cause: Option<Cause>, since: Instant, bytes: (u64, u64)) {
        if !self.open {
            self.start(false, "", "", since, bytes);
        }
        self.status = status;
        if self.cause.is_none() {
            self.cause = cause;
        }
    }

    /// Records a cause for the line unless one is recorded already.
    pub fn cause(&mut self, cause: Cause) {
        if self.open && self.cause.is_none() {
            self.cause = Some(cause);
        }
    }

    /// The request's response went out: its line is due.
    pub fn finish(&mut self, cause: Cause, at: Instant, bytes: (u64, u64)) {
        if !self.open {
            return;
        }
        self.open = false;
        self.ended = Some(Ended {
            cause: self.cause.unwrap_or(cause),
            at,
            bytes: (
                bytes.0.saturating_sub(self.base.0),
                bytes.1.saturating_sub(self.base.1),
            ),
        });
    }

    /// The connection ends: a request still under way ends with it
    /// (`cause` unless a more precise one was recorded).
    pub fn close(&mut self, cause: Cause, at: Instant, bytes: (u64, u64)) {
        self.finish(cause, at, bytes);
    }

    /// The ended request whose line is due, if any.
    pub fn take_ended(&mut self) -> Option<Ended> {
        self.ended.take()
    }

    /// True while a request's line is due or may become due.
    pub fn pending(&self) -> bool {
        self.open || self.ended.is_some()
    }

    /// The method as sent (empty when unknown).
    pub fn method(&self) -> &[u8] {
        &self.text[..self.method_len]
    }

    /// The request-target as sent (empty when unknown).
    pub fn path(&self) -> &[u8] {
        &self.text[self.method_len..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_finished_request_counts_only_its_own_bytes_and_keeps_its_cause() {
        let t = Instant::now();
        let mut r = RequestLog::default();
        r.start(true, "GET", "/a?b", t, (100, 200));
        r.status = 200;
        r.finish(Cause::Done, t + Duration::from_millis(5), (150, 1200));
        let e = r.take_ended().expect("ended");
        assert_eq!((e.cause, e.bytes), (Cause::Done, (50, 1000)));
        assert_eq!((r.method(), r.path()), (&b"GET"[..], &b"/a?b"[..]));
        assert!(r.take_ended().is_none());
        assert!(!r.pending());
    }

    #[test]
    fn a_local_answer_opens_a_request_without_method_and_its_cause_wins_at_close() {
        let t = Instant::now();
        let mut r = RequestLog::default();
        r.local(408, Some(Cause::HeaderTimeout), t, (0, 0));
        assert!(r.pending());
        r.close(Cause::Error, t, (10, 20));
        let e = r.take_ended().expect("ended");
        assert_eq!(e.cause, Cause::HeaderTimeout);
        assert_eq!(r.status, 408);
        assert!(r.method().is_empty() && r.path().is_empty());
    }

    #[test]
    fn nothing_is_due_when_no_request_was_under_way() {
        let mut r = RequestLog::default();
        r.close(Cause::ClientClosed, Instant::now(), (0, 0));
        assert!(r.take_ended().is_none());
        r.cause(Cause::BadRequest);
        assert!(!r.pending());
    }

    #[test]
    fn long_paths_are_cut() {
        let mut r = RequestLog::default();
        let long = "/".repeat(10_000);
        r.start(true, "GET", &long, Instant::now(), (0, 0));
        assert_eq!(r.method().len() + r.path().len(), MAX_TEXT);
    }
}
