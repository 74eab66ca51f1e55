//! Owns one round of an HTTP exchange on a connected server: the request
//! head and body out (framing tracked, a retry copy kept while small), the
//! response heads back (interim ones passed through, `101` switching to the
//! tunnel), the response body streamed by its framing, and the end of the
//! exchange (the server connection detached, reusable or not); and what a
//! server failure leads to (a retry, a 502, or the end of the connection).

use super::super::session::ClientIo;
use super::half::head_room;
use super::{
    BodyKind, BodyTracker, Counters, Failure, HttpSession, Io, Pool, RETRY_KEEP, Response, Run,
    State, Step, bad_body, http, limits_of,
};
use std::io;

impl HttpSession {
    /// One round of the request/response exchange. `Ok(None)` when nothing
    /// more can happen until readiness changes.
    pub(super) fn exchange<C: ClientIo>(
        &mut self,
        io: &mut Io<'_, C>,
        cap: usize,
        pool: &mut Pool,
        counters: &Counters,
    ) -> Result<Option<Run>, Failure> {
        let Some(ex) = self.ex.as_mut() else {
            return Ok(Some(Run::Finished));
        };
        let Some(server) = io.upstream.server.as_mut() else {
            return Ok(Some(Run::Loop(Step::Dispatch)));
        };
        let server_ready = &mut io.upstream.ready;
        let limits = limits_of(io.listen);
        loop {
            let mut progress = false;
            // Client → server: the request head, then its body.
            let n = self
                .up
                .write_to(server, server_ready, self.retry_copy.as_mut())
                .map_err(|_| Failure::Server)?;
            if n > 0 {
                progress = true;
                ex.server_since = io.now;
                if self
                    .retry_copy
                    .as_ref()
                    .is_some_and(|c| c.len() > RETRY_KEEP)
                {
                    self.retry_copy = None;
                }
            }
            if !ex.req_done {
                let scan = ex
                    .req_body
                    .advance(self.up.unclassified())
                    .map_err(|_| Failure::BadRequestBody)?;
                self.up.clear(scan.consumed);
                progress |= scan.consumed > 0 || scan.done;
                ex.req_done = scan.done;
                if !ex.req_done && self.up.room(cap) > 0 {
                    if self.up.eof {
                        // The client went away in the middle of its body.
                        return Err(Failure::Client(io::ErrorKind::UnexpectedEof.into()));
                    }
                    progress |= self
                        .up
                        .read_from(io.client, io.client_ready, cap, pool)
                        .map_err(Failure::Client)?;
                }
            }
            // Server → client: heads (interim ones pass through), then the body.
            let resp_done = ex.resp.as_ref().is_some_and(|r| r.done);
            if !resp_done && self.down.room(cap) > 0 {
                let got = self
                    .down
                    .read_from(server, server_ready, cap, pool)
                    .map_err(|_| Failure::Server)?;
                if got {
                    progress = true;
                    ex.server_since = io.now;
                    ex.answered |= !self.down.unclassified().is_empty();
                }
            }
            if ex.resp.is_none() {
                let (input, out) = self.down.input_and_out();
                match http::parse_response_in(input, &limits, ex.head_method, pool.fields()) {
                    Ok(Some(head)) => {
                        ex.answered = true;
                        ex.client_started = true;
                        progress = true;
                        let (raw_len, status) = (head.head_len, head.status);
                        head_room(out, pool);
                        self.log.status = status;
                        if status == 101 && ex.upgrade {
                            http::write_response(&head, out, true, ex.version);
                            pool.give_fields(head.headers);
                            self.down.consume(raw_len);
                            counters.response_of(io.upstream.server_id, status);
                            self.state = State::Tunnel;
                            return Ok(Some(Run::Again));
                        }
                        if head.is_interim() {
                            http::write_response(&head, out, true, ex.version);
                            pool.give_fields(head.headers);
                            self.down.consume(raw_len);
                            continue;
                        }
                        let until_close = matches!(head.body, BodyKind::UntilClose);
                        ex.keep_alive = ex.keep_alive && !until_close && !self.draining;
                        http::write_response(&head, out, ex.keep_alive, ex.version);
                        let (body, keep_alive) = (head.body, head.keep_alive);
                        pool.give_fields(head.headers);
                        self.down.consume(raw_len);
                        counters.response_of(io.upstream.server_id, status);
                        let done = matches!(body, BodyKind::None | BodyKind::Length(0));
                        ex.resp = Some(Response {
                            body: BodyTracker::new(body),
                            done,
                            keep_alive,
                        });
                    }
                    Ok(None) => {
                        if self.down.eof || self.down.room(cap) == 0 {
                            return Err(Failure::Server);
                        }
                    }
                    Err(_) => return Err(Failure::Server),
                }
            }
            if let Some(resp) = ex.resp.as_mut()
                && !resp.done
            {
                if matches!(resp.body, BodyTracker::UntilClose) {
                    progress |= !self.down.unclassified().is_empty();
                    self.down.clear_all();
                    resp.done = self.down.eof;
                } else {
                    let scan = resp
                        .body
                        .advance(self.down.unclassified())
                        .map_err(|_| Failure::Client(bad_body()))?;
                    self.down.clear(scan.consumed);
                    progress |= scan.consumed > 0 || scan.done;
                    resp.done = scan.done;
                    if !resp.done && self.down.eof {
                        // The server closed in the middle of its body.
                        self.log.cause(super::Cause::ServerClosed);
                        return Err(Failure::Client(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
            }
            let n = self
                .down
                .write_to(io.client, io.client_ready, None)
                .map_err(Failure::Client)?;
            progress |= n > 0;
            if let Some(resp) = &ex.resp
                && resp.done
                && self.down.flushed()
            {
                let reuse = resp.keep_alive
                    && ex.req_done
                    && self.up.flushed()
                    && !self.down.eof
                    && self.down.unclassified().is_empty();
                self.down.discard_unclassified();
                self.state = if ex.keep_alive && ex.req_done {
                    State::Head
                } else {
                    State::Closing
                };
                self.head_since = io.now;
                self.ex = None;
                if let Some(copy) = self.retry_copy.take() {
                    pool.give_head(copy);
                }
                let bytes = (self.up.bytes, self.down.bytes);
                self.log.finish(super::Cause::Done, io.now, bytes);
                return Ok(Some(Run::Loop(Step::Detach { reuse })));
            }
            if !progress {
                return Ok(None);
            }
        }
    }

    /// The server reset, closed or sent garbage: retry an idempotent
    /// request not yet answered, else answer 502 if nothing was sent to the
    /// client yet, else end the connection.
    pub(super) fn server_failed_request(&mut self, counters: &Counters) -> Option<Run> {
        let answered = self.ex.as_ref().is_some_and(|e| e.answered);
        if !answered && let Some(copy) = self.retry_copy.take() {
            self.up.resend(copy);
            self.retry_copy = Some(Vec::new());
            self.down.reset();
            self.server_failed = true;
            self.state = State::Wait;
            return Some(Run::Loop(Step::Retry));
        }
        if self.answer(502, counters) {
            return Some(Run::Loop(Step::Detach { reuse: false }));
        }
        Some(Run::Finished)
    }
}
