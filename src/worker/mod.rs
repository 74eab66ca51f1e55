//! Owns a worker process's event loop ([`run`]): one mio `Poll` over the
//! inherited listening sockets, the channel to the master, and the slab of
//! connections with their tokens. Accepts until WouldBlock, hands each new
//! client to [`dispatch`] (server pick, connect, retries, the queue), drives
//! its [`session::Session`] on readiness, enforces connect/idle timeouts,
//! counts into its slot of the shared region, and drains on request.
//! Nothing here blocks and no peer's error leaves its connection.
//!
//! The files: `conn` (what every connection has: client, upstream, phase),
//! `dispatch` (getting a server), `session` (the seam protocols plug into),
//! `tcp` (`mode = "tcp"`), `buffer` (bounded per-direction buffers, splice),
//! `accept` (taking new clients: limits, session, registration), `defer`
//! (`defer_accept`, `smart_connect`), `timers` (deadline heap), `view`
//! (live server state for the balancers),
//! `proxy_accept` / `proxy_send` (the PROXY protocol header read from clients
//! with `accept_proxy`, written to servers with `send_proxy`).
//! `sockmap` (`dataplane = "sockmap"`: the kernel relays the bytes).

mod accept;
pub mod access;
pub mod buffer;
pub mod conn;
mod defer;
mod dispatch;
mod expiry;
pub mod http;
pub mod idle;
pub mod origin;
mod proxy_accept;
mod proxy_send;
pub mod session;
pub mod sockmap;
pub mod tcp;
pub mod timers;
pub mod tls;
pub mod tokens;
pub mod view;

use crate::balance::{self, Balancer};
use crate::channel::{LineConn, MAX_LINE, ReadOutcome};
use crate::config::Config;
use crate::control::{FromWorker, ToWorker};
use crate::shm::{self, Region};
use buffer::Pool;
use conn::{Conn, ConnectState, Phase};
use dispatch::Dispatched;
use idle::IdlePool;
use mio::net::{TcpListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use session::{Counters, Step};
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use timers::Timers;
use tokens::{CHANNEL, CONN_BASE, Holder, SERVER_BASE, ServerTokens};

const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
const QUEUE_RETRY: Duration = Duration::from_millis(5);
const HEARTBEAT: Duration = Duration::from_millis(500);

/// Everything a worker needs, handed over by the master after fork.
#[derive(Debug)]
pub struct WorkerCtx {
    /// Slot index.
    pub slot: usize,
    /// Generation it serves.
    pub generation: u64,
    /// The generation's config.
    pub config: Arc<Config>,
    /// (listen index, listening socket) pairs this worker accepts on.
    pub listeners: Vec<(usize, std::net::TcpListener)>,
    /// The generation's shared region.
    pub region: Arc<Region>,
    /// The channel to the master.
    pub channel: std::os::unix::net::UnixStream,
}

struct ListenRt {
    base: usize,
    /// One balancer per pool (`pools[0]` is the listen's own servers).
    balancers: Vec<Box<dyn Balancer>>,
    queue: VecDeque<(usize, u64)>,
    /// The rustls config of a listen with `tls` (built once, from memory).
    tls: Option<Arc<rustls::ServerConfig>>,
}

struct Worker {
    slot: usize,
    config: Arc<Config>,
    region: Arc<Region>,
    poll: Poll,
    listeners: Vec<(usize, TcpListener)>,
    listens: Vec<ListenRt>,
    channel: LineConn<UnixStream>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Slots closed during the current event batch: reused only after it,
    /// so a stale event of a closed connection never reaches a new one.
    freed: Vec<usize>,
    /// Connections that spent their turn's budget with work left.
    again: Vec<(usize, u64)>,
    live: usize,
    serial: u64,
    timers: Timers,
    pool: Pool,
    /// Idle keep-alive server connections (HTTP mode).
    idle: IdlePool,
    /// The lifelong token of every server connection and who holds it.
    tokens: ServerTokens,
    /// The listen of each server (global index).
    server_listen: Vec<usize>,
    /// When a per-client refusal was last logged, and refusals since.
    limit_logged_at: Option<Instant>,
    limit_unlogged: u64,
    /// When a refused PROXY header was last logged, and refusals since.
    proxy_logged_at: Option<Instant>,
    proxy_unlogged: u64,
    draining: bool,
    accept_paused_until: Option<Instant>,
    now: Instant,
    pid: u32,
    /// The kernel relay, when a listen asked for it and the kernel agreed.
    sockmap: Option<std::rc::Rc<sockmap::plane::Plane>>,
    /// The access logs of the listens that have one.
    access: access::AccessLogs,
}

/// Runs a worker until it is told to stop or its master goes away; returns
/// the process exit code.
pub fn run(ctx: WorkerCtx) -> i32 {
    match Worker::new(ctx) {
        Ok(mut w) => {
            let result = w.run();
            w.access.finish();
            match result {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("lbctl worker {}: {e}", std::process::id());
                    3
                }
            }
        }
        Err(e) => {
            eprintln!("lbctl worker {}: cannot start: {e}", std::process::id());
            3
        }
    }
}

impl Worker {
    fn new(ctx: WorkerCtx) -> io::Result<Worker> {
        let poll = Poll::new()?;
        let mut listeners = Vec::new();
        for (i, (listen, l)) in ctx.listeners.into_iter().enumerate() {
            l.set_nonblocking(true)?;
            let deferred = ctx
                .config
                .listens
                .get(listen)
                .is_some_and(|c| c.defer_accept);
            defer::set_listener(&l, deferred)?;
            let mut l = TcpListener::from_std(l);
            poll.registry()
                .register(&mut l, Token(i), Interest::READABLE)?;
            listeners.push((listen, l));
        }
        ctx.channel.set_nonblocking(true)?;
        let mut channel = LineConn::new(UnixStream::from_std(ctx.channel), MAX_LINE);
        poll.registry().register(
            channel.stream_mut(),
            CHANNEL,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let mut base = 0;
        let listens = ctx
            .config
            .listens
            .iter()
            .map(|l| {
                let tls = tls::sni::server_config(l).map_err(io::Error::other)?;
                let rt = ListenRt {
                    tls,
                    base,
                    balancers: l
                        .pools
                        .iter()
                        .map(|p| {
                            let servers = l.servers.get(p.servers.clone()).unwrap_or(&[]);
                            balance::build(p.balance, servers)
                        })
                        .collect(),
                    queue: VecDeque::new(),
                };
                base += l.servers.len();
                Ok(rt)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let servers = ctx.region.servers();
        let server_listen = ctx
            .config
            .listens
            .iter()
            .enumerate()
            .flat_map(|(i, l)| std::iter::repeat_n(i, l.servers.len()))
            .collect();
        let sockmap = sockmap::plane::start(&ctx.config, &ctx.region, poll.as_raw_fd());
        let access =
            access::AccessLogs::start(&ctx.config, &ctx.region, ctx.slot).unwrap_or_else(|e| {
                eprintln!(
                    "lbctl worker {}: no access log (cannot start its writer: {e})",
                    std::process::id()
                );
                access::AccessLogs::default()
            });
        let slot = ctx.region.slot(ctx.slot);
        slot.heartbeat_ms.store(shm::now_ms(), Relaxed);
        slot.phase.store(1, Relaxed);
        Ok(Worker {
            slot: ctx.slot,
            config: ctx.config,
            region: ctx.region,
            poll,
            listeners,
            listens,
            channel,
            conns: Vec::new(),
            free: Vec::new(),
            freed: Vec::new(),
            again: Vec::new(),
            live: 0,
            serial: 0,
            timers: Timers::new(),
            pool: Pool::new(),
            idle: IdlePool::new(servers),
            tokens: ServerTokens::new(),
            server_listen,
            limit_logged_at: None,
            limit_unlogged: 0,
            proxy_logged_at: None,
            proxy_unlogged: 0,
            draining: false,
            accept_paused_until: None,
            now: Instant::now(),
            pid: std::process::id(),
            sockmap,
            access,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        self.channel.send(&FromWorker::Ready)?;
        let mut events = Events::with_capacity(1024);
        let mut last_beat = Instant::now();
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.now = Instant::now();
            if self.now.duration_since(last_beat) >= HEARTBEAT {
                last_beat = self.now;
                self.region
                    .slot(self.slot)
                    .heartbeat_ms
                    .store(shm::now_ms(), Relaxed);
                if !self.idle.is_empty() {
                    let (config, base) = (&self.config, &self.server_listen);
                    self.idle.sweep(self.now, |g| {
                        let l = base.get(g).copied().unwrap_or(0);
                        config.listens[l].http.pool.idle_timeout
                    });
                }
            }
            for ev in events.iter() {
                let t = ev.token();
                if t == CHANNEL {
                    if !self.on_channel()? {
                        return Ok(());
                    }
                } else if t.0 >= SERVER_BASE {
                    self.on_server_event(t, ev);
                } else if t.0 < self.listeners.len() {
                    self.accept(t.0);
                } else if t.0 >= CONN_BASE {
                    self.on_conn_event(t.0 - CONN_BASE, false, ev);
                }
            }
            self.resume_busy();
            self.free.append(&mut self.freed);
            self.tokens.end_batch();
            self.fire_timers();
            self.serve_queues();
            if let Some(until) = self.accept_paused_until
                && self.now >= until
            {
                self.accept_paused_until = None;
                for i in 0..self.listeners.len() {
                    self.accept(i);
                }
            }
            self.access.flush_due(self.now);
            if self.draining && self.live == 0 {
                return Ok(());
            }
        }
    }

    /// Gives connections that used up their budget another turn.
    fn resume_busy(&mut self) {
        let busy = std::mem::take(&mut self.again);
        for (idx, serial) in busy {
            if let Some(c) = self
                .conns
                .get_mut(idx)
                .and_then(Option::as_mut)
                .filter(|c| c.serial == serial)
            {
                c.in_again = false;
                c.last_active = self.now;
                self.progress(idx);
            }
        }
    }

    fn poll_timeout(&self) -> Duration {
        if !self.again.is_empty() {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut t = HEARTBEAT;
        if let Some(d) = self.timers.next_timeout(now) {
            t = t.min(d);
        }
        if self.listens.iter().any(|l| !l.queue.is_empty()) {
            t = t.min(QUEUE_RETRY);
        }
        if let Some(until) = self.accept_paused_until {
            t = t.min(until.saturating_duration_since(now));
        }
        if let Some(d) = self.access.next_flush(now) {
            t = t.min(d);
        }
        t
    }

    /// Handles master messages; false when the master is gone.
    fn on_channel(&mut self) -> io::Result<bool> {
        let mut msgs: Vec<Result<ToWorker, String>> = Vec::new();
        let outcome = self.channel.read_msgs(&mut msgs);
        for msg in msgs.into_iter().flatten() {
            match msg {
                ToWorker::Drain => self.start_drain(),
                ToWorker::ReopenLogs => self.access.reopen(),
                ToWorker::Connections { id } => {
                    let connections = self.connection_rows();
                    self.channel
                        .send(&FromWorker::Connections { id, connections })?;
                }
            }
        }
        if self.channel.has_pending_writes() {
            self.channel.flush()?;
        }
        Ok(outcome == ReadOutcome::Open)
    }

    fn start_drain(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        self.region.slot(self.slot).phase.store(2, Relaxed);
        for (_, mut l) in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut l);
        }
        // Queued clients stay queued: the worker lives until they are
        // served (or time out) like any open connection.
        self.idle.clear();
        // HTTP clients get `Connection: close` on their current or next
        // response; idle ones are closed after a short grace.
        for idx in 0..self.conns.len() {
            if let Some(c) = self.conns[idx].as_mut() {
                c.session.on_drain(self.now);
                let listen = &self.config.listens[c.listen];
                if let Some(d) = c.session.deadline(listen)
                    && c.armed.is_none_or(|a| d < a)
                {
                    c.armed = Some(d);
                    self.timers.push(d, idx, c.serial);
                }
            }
        }
    }

    /// An event of a server connection goes to whoever holds it now: the
    /// connection it serves or the idle pool (nobody, when the one recorded
    /// no longer holds that connection).
    fn on_server_event(&mut self, token: Token, ev: &mio::event::Event) {
        let Some((slot, holder)) = self.tokens.holder(token) else {
            return;
        };
        match holder {
            Holder::Conn(idx) => {
                let holds = self
                    .conns
                    .get(idx)
                    .and_then(Option::as_ref)
                    .and_then(|c| c.upstream.server.as_ref())
                    .is_some_and(|s| s.slot() == slot);
                if holds {
                    self.on_conn_event(idx, true, ev);
                }
            }
            Holder::Idle(at) => self.idle.on_event(at, slot),
            Holder::Nobody => {}
        }
    }

    fn on_conn_event(&mut self, idx: usize, server_side: bool, ev: &mio::event::Event) {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        conn.on_event(server_side, ev);
        conn.last_active = self.now;
        self.progress(idx);
    }

    /// Advances a connection after readiness changed, acting on what its
    /// session asks for until it waits for readiness again.
    pub(super) fn progress(&mut self, idx: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                return;
            };
            match conn.phase {
                Phase::Queued { .. } => return,
                Phase::ProxyHeader { .. } => match self.read_proxy_header(idx) {
                    proxy_accept::HeaderStep::Wait => return,
                    proxy_accept::HeaderStep::Active => continue,
                    proxy_accept::HeaderStep::Dispatch(serial) => {
                        return self.dispatch_and_follow(idx, serial);
                    }
                },
                Phase::Connecting { deadline } => match conn.check_connect_or_handshake() {
                    ConnectState::Pending => return,
                    ConnectState::Connected if origin::tls_done(&conn.upstream) => continue,
                    ConnectState::Connected => {
                        // `send_proxy`: the header goes first, before any
                        // byte of the client (and before a TLS handshake).
                        if self.send_proxy_header(idx).is_err() {
                            self.connect_failed(idx);
                            return;
                        }
                        if let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) {
                            origin::begin(&mut c.upstream, &mut c.phase, deadline);
                        }
                        continue;
                    }
                    ConnectState::Failed(_) => {
                        self.connect_failed(idx);
                        return;
                    }
                },
                Phase::Active => {}
            }
            let listen = &self.config.listens[conn.listen];
            let counters = Counters {
                region: &self.region,
                slot: self.slot,
                base: self.listens[conn.listen].base,
            };
            let result = conn.advance(listen, self.now, &mut self.pool, &counters);
            access::after_step(&mut self.access, conn, listen, self.now);
            let slot = self.region.slot(self.slot);
            match result {
                Ok(Step::Open(up, down) | Step::Busy(up, down)) => {
                    if up > 0 {
                        slot.bytes_in.fetch_add(up, Relaxed);
                    }
                    if down > 0 {
                        slot.bytes_out.fetch_add(down, Relaxed);
                    }
                    if matches!(result, Ok(Step::Busy(..))) && !conn.in_again {
                        conn.in_again = true;
                        self.again.push((idx, conn.serial));
                    }
                    // The idle deadline needs no arming here: the connect
                    // deadline's timer entry re-arms itself as the idle one.
                    // A session's own earlier deadline (HTTP header or
                    // server timeout) arms an entry of its own.
                    if let Some(d) = conn.session.deadline(listen)
                        && conn.armed.is_none_or(|a| d < a)
                    {
                        conn.armed = Some(d);
                        self.timers.push(d, idx, conn.serial);
                    }
                    return;
                }
                Ok(Step::Finished(up, down)) => {
                    slot.bytes_in.fetch_add(up, Relaxed);
                    slot.bytes_out.fetch_add(down, Relaxed);
                    self.close(idx, false);
                    return;
                }
                Ok(Step::Dispatch) => {
                    conn.dispatch_since = self.now;
                    let serial = conn.serial;
                    match self.dispatch(idx, serial) {
                        Dispatched::Attached => {}
                        Dispatched::NoServer => return self.no_server(idx),
                        Dispatched::Connecting | Dispatched::Queued | Dispatched::Gone => return,
                    }
                }
                Ok(Step::Retry) => return self.retry_elsewhere(idx),
                Ok(Step::Detach { reuse }) => self.detach(idx, reuse),
                Err(_) => return self.close(idx, true),
            }
        }
    }

    /// Drops a connection: both sockets closed (the kernel removes them from
    /// epoll), buffers back to the pool, counters updated.
    fn close(&mut self, idx: usize, error: bool) {
        let Some(mut conn) = self.conns.get_mut(idx).and_then(Option::take) else {
            return;
        };
        self.log_close(&mut conn, error);
        conn.release(&mut self.pool);
        // Idle server connections that carry its PROXY header go with it.
        self.idle.drop_owned(conn.serial);
        if let Some(b) = conn.client_cell {
            crate::limits::release(&self.region, self.slot, conn.listen, b);
        }
        if let Some(id) = conn.upstream.server_id
            && conn.upstream.server.is_some()
        {
            let g = self.listens[conn.listen].base + id;
            self.region
                .slot_server(self.slot, g)
                .active
                .fetch_sub(1, Relaxed);
        }
        let slot = self.region.slot(self.slot);
        slot.active.fetch_sub(1, Relaxed);
        if error {
            slot.errors.fetch_add(1, Relaxed);
        }
        self.live -= 1;
        self.freed.push(idx);
    }
}
