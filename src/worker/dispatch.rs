//! Owns getting a connection to a server, shared by every session: pick
//! through the listen's balancer over the live view (skipping servers
//! already tried), start a non-blocking connect and register it, re-dispatch
//! to another server after a failed connect (up to `retries`), and the
//! listen's bounded FIFO queue for clients that find every server full.
//! Our own lack of descriptors is never counted against a server.

use super::access::record::Cause;
use super::conn::Phase;
use super::session::Counters;
use super::tokens::Holder;
use super::view::{self, LiveView};
use super::{ACCEPT_PAUSE, Worker};
use crate::balance;
use crate::netutil::is_local_shortage;
use crate::shm;
use mio::Interest;
use std::sync::atomic::Ordering::Relaxed;

/// What a dispatch attempt led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dispatched {
    /// A connect is in progress (its event or timer continues it).
    Connecting,
    /// A pooled connection is attached: the session can go on now.
    Attached,
    /// The client waits in the listen's queue.
    Queued,
    /// No server can be had (all down, full or failed, retries spent).
    NoServer,
    /// The connection is gone (closed meanwhile).
    Gone,
}

impl Worker {
    /// Dispatches and acts on the outcome: an attached connection goes on
    /// at once, a client with no server is answered (HTTP) or closed.
    pub(super) fn dispatch_and_follow(&mut self, idx: usize, serial: u64) {
        match self.dispatch(idx, serial) {
            Dispatched::Attached => self.progress(idx),
            Dispatched::NoServer => self.no_server(idx),
            Dispatched::Connecting | Dispatched::Queued | Dispatched::Gone => {}
        }
    }

    /// No server for this client: its session answers (HTTP 502/503) and
    /// goes on, or the connection is closed.
    pub(super) fn no_server(&mut self, idx: usize) {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let counters = Counters {
            region: &self.region,
            slot: self.slot,
            base: self.listens[conn.listen].base,
        };
        conn.phase = Phase::Active;
        if conn.end.is_none() {
            conn.end = Some(if conn.upstream.tried.is_empty() {
                Cause::NoServer
            } else {
                Cause::ConnectFailed
            });
        }
        if conn.session.answer_no_server(&counters) {
            self.progress(idx);
        } else {
            self.close(idx, true);
        }
    }

    /// Picks a server and attaches a pooled connection to it, starts
    /// connecting, or queues the client.
    pub(super) fn dispatch(&mut self, idx: usize, serial: u64) -> Dispatched {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return Dispatched::Gone;
        };
        if conn.serial != serial {
            return Dispatched::Gone;
        }
        let listen_idx = conn.listen;
        let listen = &self.config.listens[listen_idx];
        let rt = &mut self.listens[listen_idx];
        let now_ms = shm::now_ms();
        let key = conn
            .session
            .balance_key()
            .unwrap_or_else(|| balance::client_key(conn.client_addr.ip()));
        let pool_idx = conn.session.pool();
        let Some(pool) = listen.pools.get(pool_idx) else {
            return Dispatched::NoServer;
        };
        let Some(balancer) = rt.balancers.get_mut(pool_idx) else {
            return Dispatched::NoServer;
        };
        let offset = pool.servers.start;
        loop {
            let attempts = conn.upstream.tried.len() as u32;
            if attempts > listen.retries {
                break;
            }
            let view = LiveView::of_pool(
                &self.region,
                listen,
                pool.servers.clone(),
                rt.base,
                &conn.upstream.tried,
                now_ms,
            );
            let Some(id) = balancer.pick(&view, key).map(|id| offset + id) else {
                if conn.upstream.tried.is_empty() && view.all_full() && self.enqueue(idx) {
                    return Dispatched::Queued;
                }
                break;
            };
            let g = rt.base + id;
            let interest = Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY;
            let cell = self.region.slot_server(self.slot, g);
            // A connection that carries a PROXY header is private to the
            // client it was opened for (`proxy_send.rs`).
            let owner = listen.servers[id].send_proxy.map(|_| conn.serial);
            if conn.session.may_reuse()
                && let Some(stream) =
                    self.idle
                        .take(g, owner, self.now, listen.http.pool.idle_timeout)
                && (listen.servers[id].dns.is_none()
                    || stream.peer_addr().ok() == self.region.server(g).member_addr())
            {
                // (A DNS slot's pooled connection to an address the slot no
                // longer holds is dropped, i.e. closed, here.)
                // Its token stays: only its holder changes (no epoll_ctl).
                self.tokens.hand_to(stream.slot(), Holder::Conn(idx));
                cell.active.fetch_add(1, Relaxed);
                cell.total.fetch_add(1, Relaxed);
                self.region.slot(self.slot).reused.fetch_add(1, Relaxed);
                conn.attach(id, stream);
                return Dispatched::Attached;
            }
            // A DNS slot connects to the address the master wrote into it.
            let addr = match listen.servers[id].dns {
                Some(_) => match self.region.server(g).member_addr() {
                    Some(a) => a,
                    // Emptied since the pick (the master empties only
                    // slots drained a while): another server, then.
                    None => {
                        conn.upstream.tried.push(id);
                        continue;
                    }
                },
                None => listen.servers[id].addr,
            };
            let deadline = self.now + listen.timeouts.connect;
            cell.active.fetch_add(1, Relaxed);
            let started = conn
                .start_connect(
                    id,
                    addr,
                    deadline,
                    &mut self.tokens,
                    Holder::Conn(idx),
                    super::defer::HoldAck::of(listen),
                )
                .and_then(|s| super::origin::attach(s, listen.servers[id].tls.as_deref(), addr));
            match started {
                Ok(server) => {
                    cell.total.fetch_add(1, Relaxed);
                    let token = server.token();
                    if self
                        .poll
                        .registry()
                        .register(&mut **server, token, interest)
                        .is_ok()
                    {
                        self.timers.push(deadline, idx, serial);
                        conn.armed = Some(conn.armed.map_or(deadline, |a| a.min(deadline)));
                        return Dispatched::Connecting;
                    }
                    cell.active.fetch_sub(1, Relaxed);
                    conn.upstream.server = None;
                }
                Err(e) if is_local_shortage(&e) => {
                    // Our own lack of descriptors or memory says nothing
                    // about the server: it is not counted against it, the
                    // client waits in the queue (retried when fds free up),
                    // and accepting pauses (as on EMFILE at accept).
                    cell.active.fetch_sub(1, Relaxed);
                    conn.upstream.server = None;
                    conn.upstream.server_id = None;
                    conn.upstream.tried.pop();
                    self.accept_paused_until = Some(self.now + ACCEPT_PAUSE);
                    if self.enqueue(idx) {
                        return Dispatched::Queued;
                    }
                    break;
                }
                Err(_) => {
                    cell.active.fetch_sub(1, Relaxed);
                    cell.failures.fetch_add(1, Relaxed);
                    view::record_failure(&self.region, g, listen, now_ms);
                    conn.upstream.server = None;
                }
            }
        }
        Dispatched::NoServer
    }

    /// The server failed a request it was sent (HTTP: reset or closed
    /// before answering): counted against it, its connection dropped, and
    /// the request dispatched to another server.
    pub(super) fn retry_elsewhere(&mut self, idx: usize) {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let listen = &self.config.listens[conn.listen];
        if let (Some(id), Some(_server)) = (conn.upstream.server_id, conn.upstream.server.take()) {
            let g = self.listens[conn.listen].base + id;
            let cell = self.region.slot_server(self.slot, g);
            cell.active.fetch_sub(1, Relaxed);
            cell.failures.fetch_add(1, Relaxed);
            view::record_failure(&self.region, g, listen, shm::now_ms());
        }
        conn.upstream.server_id = None;
        self.region.slot(self.slot).retries.fetch_add(1, Relaxed);
        let serial = conn.serial;
        self.dispatch_and_follow(idx, serial);
    }

    /// The request is done with its server: the connection goes back to
    /// the idle pool when clean and there is room, else it is closed.
    pub(super) fn detach(&mut self, idx: usize, reuse: bool) {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let listen = &self.config.listens[conn.listen];
        let id = conn.upstream.server_id;
        let Some(stream) = conn.detach() else {
            return;
        };
        let Some(id) = id else {
            return;
        };
        let g = self.listens[conn.listen].base + id;
        self.region
            .slot_server(self.slot, g)
            .active
            .fetch_sub(1, Relaxed);
        if reuse && !self.draining {
            let max = listen.http.pool.max_idle;
            let slot = stream.slot();
            // It stays registered under its token: the pool holds it now.
            let owner = listen.servers[id].send_proxy.map(|_| conn.serial);
            if let Some(at) = self.idle.put(g, stream, owner, max, self.now) {
                self.tokens.hand_to(slot, Holder::Idle(at));
            }
        }
    }

    /// Puts a client in its listen's queue (bounded by `queue.size`, and by
    /// `queue.timeout` counted from accept, however often it comes back);
    /// false, counted as refused, when it cannot wait.
    pub(super) fn enqueue(&mut self, idx: usize) -> bool {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return false;
        };
        let listen = &self.config.listens[conn.listen];
        let rt = &mut self.listens[conn.listen];
        let deadline = conn.dispatch_since + listen.queue.timeout;
        if rt.queue.len() >= listen.queue.size || deadline <= self.now {
            self.region.server(rt.base).refused.fetch_add(1, Relaxed);
            return false;
        }
        conn.phase = Phase::Queued { deadline };
        rt.queue.push_back((idx, conn.serial));
        self.region
            .slot_server(self.slot, rt.base)
            .queued
            .fetch_add(1, Relaxed);
        if !conn.queue_timer {
            conn.queue_timer = true;
            self.timers.push(deadline, idx, conn.serial);
        }
        true
    }

    pub(super) fn connect_failed(&mut self, idx: usize) {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let listen = &self.config.listens[conn.listen];
        if let (Some(id), Some(mut server)) = (conn.upstream.server_id, conn.upstream.server.take())
        {
            let _ = self.poll.registry().deregister(&mut *server);
            let g = self.listens[conn.listen].base + id;
            let cell = self.region.slot_server(self.slot, g);
            cell.active.fetch_sub(1, Relaxed);
            cell.failures.fetch_add(1, Relaxed);
            view::record_failure(&self.region, g, listen, shm::now_ms());
        }
        conn.upstream.server_id = None;
        let serial = conn.serial;
        self.dispatch_and_follow(idx, serial);
    }

    /// Retries queued connections (servers may have freed up anywhere).
    /// FIFO: only the head is looked at; stale entries (timed out, closed)
    /// are dropped as they reach it. Nothing is retried while the worker is
    /// short of descriptors (the accept pause).
    pub(super) fn serve_queues(&mut self) {
        if self.accept_paused_until.is_some() {
            return;
        }
        for l in 0..self.listens.len() {
            let budget = self.listens[l].queue.len();
            for _ in 0..budget {
                let Some(&(idx, serial)) = self.listens[l].queue.front() else {
                    break;
                };
                let Some(conn) = self
                    .conns
                    .get_mut(idx)
                    .and_then(Option::as_mut)
                    .filter(|c| c.serial == serial && matches!(c.phase, Phase::Queued { .. }))
                else {
                    self.listens[l].queue.pop_front();
                    continue;
                };
                let base = self.listens[l].base;
                let listen = &self.config.listens[l];
                let range = listen
                    .pools
                    .get(conn.session.pool())
                    .map_or(0..0, |p| p.servers.clone());
                let view = LiveView::of_pool(
                    &self.region,
                    listen,
                    range,
                    base,
                    &conn.upstream.tried,
                    shm::now_ms(),
                );
                if balance::eligible_from(&view, 0).next().is_none() {
                    break;
                }
                self.listens[l].queue.pop_front();
                self.region
                    .slot_server(self.slot, base)
                    .queued
                    .fetch_sub(1, Relaxed);
                conn.phase = Phase::Active;
                // Its timer may fire while it connects: if it comes back to
                // the queue, it arms a new one.
                conn.queue_timer = false;
                self.dispatch_and_follow(idx, serial);
                if self.accept_paused_until.is_some() {
                    return;
                }
            }
        }
    }
}
