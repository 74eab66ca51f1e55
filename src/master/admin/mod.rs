//! Owns the admin listener (`[admin]`) inside the master's loop: the listening
//! socket and its connections, each non-blocking, with a bounded request
//! ([`http::MAX_HEAD`] + [`http::MAX_BODY`]), one deadline for the whole
//! exchange ([`CONN_TIMEOUT`]), at most [`MAX_CONNS`] at once (a new one
//! evicts the one waiting longest for its request), and a close after the
//! one response; the routes (`/metrics`, `/status.json`, `/status`,
//! `POST /server/LISTEN/SERVER/ACTION`); and the listener's life across
//! reloads (a changed bind is bound when the reload starts, so a busy port
//! fails the reload, and swapped in when it succeeds) and binary upgrades
//! (handed over with the control socket). Every figure comes from
//! [`report::status`], every action from the same code as `lbctl server`.
//! A refused action is logged at most once a second (`ratelog`), so a
//! client guessing tokens cannot fill the log.

mod http;
mod metrics;
mod page;

use super::*;
use crate::config::AdminConfig;
pub use metrics::Figures;
use mio::net::{TcpListener, TcpStream};
use std::io::Read;
use std::net::SocketAddr;

/// Admin connections served at once (see [`Master::admin_evict`]).
pub const MAX_CONNS: usize = 64;
/// A connection must send its request and take its answer within this time.
pub const CONN_TIMEOUT: Duration = Duration::from_secs(10);
/// After the answer, how long the peer's further bytes are read and dropped
/// before the close (closing with unread bytes would reset the answer).
const LINGER: Duration = Duration::from_secs(1);
/// Bytes read (and dropped) per event while lingering.
const LINGER_READ: usize = 64 * 1024;

/// The admin listener and its connections.
#[derive(Debug, Default)]
pub struct Admin {
    listener: Option<TcpListener>,
    config: Option<AdminConfig>,
    /// A reload's `[admin]`, with the socket bound for its new address.
    staged: Option<(Option<AdminConfig>, Option<TcpListener>)>,
    conns: HashMap<Token, Conn>,
    next: usize,
    /// The master's own counters.
    pub figures: Figures,
    /// Refused actions (a wrong token): logged at most once a second.
    refusals: super::ratelog::RateLog,
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    deadline: Instant,
    phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Reading,
    Writing,
    Lingering,
}

/// Binds the admin socket: non-blocking, close-on-exec, SO_REUSEADDR.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_cloexec(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(TcpListener::from_std(socket.into()))
}

impl Admin {
    /// The admin of a fresh master: `config`'s socket bound now.
    pub fn open(config: Option<&AdminConfig>) -> Result<Admin, MasterError> {
        let mut a = Admin {
            config: config.cloned(),
            ..Admin::default()
        };
        if let Some(c) = config {
            a.listener = Some(bind(c.bind).map_err(|source| MasterError::Bind {
                addr: c.bind,
                source,
            })?);
        }
        Ok(a)
    }

    /// The admin of a master started by an upgrade: the old master holds the
    /// socket until the handover ([`Master::admin_take_over`]).
    pub fn later(config: Option<&AdminConfig>) -> Admin {
        Admin {
            config: config.cloned(),
            ..Admin::default()
        }
    }

    fn bind_addr(&self) -> Option<SocketAddr> {
        self.config.as_ref().map(|c| c.bind)
    }
}

impl Master {
    pub(super) fn admin_register(&mut self) {
        if let Some(l) = &mut self.admin.listener
            && let Err(e) =
                self.poll
                    .registry()
                    .register(l, tokens::ADMIN_LISTENER, Interest::READABLE)
        {
            log(&format!("admin listener: cannot poll it: {e}"));
            self.admin.listener = None;
        }
    }

    /// At the start of a reload: binds the new `[admin]` address if it moved.
    pub(super) fn admin_stage(&mut self, new: Option<&AdminConfig>) -> Result<(), String> {
        let listener = match new {
            Some(c) if Some(c.bind) != self.admin.bind_addr() => Some(
                bind(c.bind).map_err(|e| format!("cannot listen on {} ([admin]): {e}", c.bind))?,
            ),
            _ => None,
        };
        self.admin.staged = Some((new.cloned(), listener));
        Ok(())
    }

    /// The reload succeeded: the staged `[admin]` takes over.
    pub(super) fn admin_commit(&mut self) {
        let Some((config, listener)) = self.admin.staged.take() else {
            return;
        };
        let moved = config.as_ref().map(|c| c.bind) != self.admin.bind_addr();
        if moved {
            if let Some(mut old) = self.admin.listener.take() {
                let _ = self.poll.registry().deregister(&mut old);
            }
            self.admin.listener = listener;
            self.admin.config = config;
            self.admin_register();
            if let Some(a) = self.admin.bind_addr() {
                log(&format!("admin listener on http://{a}/status"));
            }
        } else {
            self.admin.config = config;
        }
    }

    /// The reload failed: the staged socket closes.
    pub(super) fn admin_unstage(&mut self) {
        self.admin.staged = None;
    }

    /// An upgraded master's old one released the socket: take it.
    pub(super) fn admin_take_over(&mut self) {
        if let Some(addr) = self.admin.bind_addr() {
            match bind(addr) {
                Ok(l) => {
                    self.admin.listener = Some(l);
                    self.admin_register();
                }
                Err(e) => log(&format!("upgrade: cannot listen on {addr} ([admin]): {e}")),
            }
        }
    }

    /// An upgrade's new master takes over: release the socket.
    pub(super) fn admin_release(&mut self) {
        if let Some(mut l) = self.admin.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
    }

    pub(super) fn admin_accept(&mut self, now: Instant) {
        loop {
            let Some(l) = &self.admin.listener else {
                return;
            };
            match l.accept() {
                Ok((mut stream, _)) => {
                    if self.admin.conns.len() >= MAX_CONNS && !self.admin_evict() {
                        continue;
                    }
                    let mut token = tokens::nth(&tokens::ADMIN_CONNS, self.admin.next);
                    while self.admin.conns.contains_key(&token) {
                        self.admin.next += 1;
                        token = tokens::nth(&tokens::ADMIN_CONNS, self.admin.next);
                    }
                    self.admin.next += 1;
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, token, interest)
                        .is_ok()
                    {
                        let conn = Conn {
                            stream,
                            buf: Vec::new(),
                            out: Vec::new(),
                            sent: 0,
                            deadline: now + CONN_TIMEOUT,
                            phase: Phase::Reading,
                        };
                        self.admin.conns.insert(token, conn);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and the like: the loop goes on; poll says when
                    // to try again.
                    log(&format!("admin listener: accept failed: {e}"));
                    return;
                }
            }
        }
    }

    /// Full: drops the connection that has been waiting longest for its
    /// request, so idle connections cannot lock the page out; false when
    /// every connection is being answered (the new one is closed then).
    fn admin_evict(&mut self) -> bool {
        let oldest = self
            .admin
            .conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Reading)
            .min_by_key(|(_, c)| c.deadline)
            .map(|(&t, _)| t);
        match oldest {
            Some(t) => {
                self.admin_drop(t);
                true
            }
            None => false,
        }
    }

    /// Readiness of admin connection `token`: read, answer, write, linger.
    pub(super) fn admin_event(&mut self, token: Token, now: Instant) {
        let Some(c) = self.admin.conns.get_mut(&token) else {
            return;
        };
        if c.phase == Phase::Reading {
            let (closed, failed) = read_some(c, http::MAX_HEAD + http::MAX_BODY);
            if failed {
                return self.admin_drop(token);
            }
            let req = match http::parse(&c.buf) {
                http::Parsed::Partial if closed => return self.admin_drop(token),
                http::Parsed::Partial => return,
                http::Parsed::Complete(req) => req,
                http::Parsed::Invalid(resp) => {
                    c.out = resp.to_bytes(false);
                    c.phase = Phase::Writing;
                    return self.admin_write(token, now);
                }
            };
            let resp = self.admin_route(&req, now);
            let Some(c) = self.admin.conns.get_mut(&token) else {
                return;
            };
            c.out = resp.to_bytes(req.method == "HEAD");
            c.buf = Vec::new();
            c.phase = Phase::Writing;
        }
        self.admin_write(token, now);
    }

    fn admin_write(&mut self, token: Token, now: Instant) {
        use std::io::Write as _;
        let Some(c) = self.admin.conns.get_mut(&token) else {
            return;
        };
        while c.phase == Phase::Writing && c.sent < c.out.len() {
            match c.stream.write(&c.out[c.sent..]) {
                Ok(0) => return self.admin_drop(token),
                Ok(n) => c.sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return self.admin_drop(token),
            }
        }
        if c.phase == Phase::Writing {
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
            c.out = Vec::new();
            c.phase = Phase::Lingering;
            c.deadline = c.deadline.min(now + LINGER);
        }
        let (closed, failed) = read_some(c, LINGER_READ);
        c.buf.clear();
        if closed || failed {
            self.admin_drop(token);
        }
    }

    fn admin_drop(&mut self, token: Token) {
        if let Some(mut c) = self.admin.conns.remove(&token) {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    /// Drops connections past their deadline.
    pub(super) fn admin_expire(&mut self, now: Instant) {
        let stale: Vec<Token> = self
            .admin
            .conns
            .iter()
            .filter(|(_, c)| now >= c.deadline)
            .map(|(&t, _)| t)
            .collect();
        for t in stale {
            self.admin_drop(t);
        }
    }

    fn admin_route(&mut self, req: &http::Request, now: Instant) -> http::Response {
        let get = req.method == "GET" || req.method == "HEAD";
        let not_allowed = |allow: &str| {
            http::Response::text(405, &format!("use {allow}\n")).header("Allow", allow)
        };
        match req.path.as_str() {
            "/metrics" if get => {
                let om = http::wants_openmetrics(&req.accept);
                let text = metrics::render(report::status(self, now), self.admin.figures, om);
                let ct = if om {
                    metrics::OPENMETRICS_TEXT
                } else {
                    metrics::PROMETHEUS_TEXT
                };
                http::Response::new(200, ct, text.into_bytes())
            }
            "/status.json" if get => {
                let status = report::status(self, now);
                match serde_json::to_value(&status) {
                    Ok(v) => http::Response::json(200, &v),
                    Err(e) => http::Response::text(503, &format!("status: {e}\n")),
                }
            }
            "/status" if get => {
                let status = report::status(self, now);
                let actions = self
                    .admin
                    .config
                    .as_ref()
                    .is_some_and(|c| c.token.is_some());
                page::response(&status, actions)
            }
            "/metrics" | "/status.json" | "/status" => not_allowed("GET, HEAD"),
            p if p.starts_with("/server/") => {
                if req.method != "POST" {
                    return not_allowed("POST");
                }
                self.admin_action(req, now)
            }
            _ => http::Response::text(404, "not found: try /metrics, /status or /status.json\n"),
        }
    }

    /// `POST /server/LISTEN/SERVER/{enable,disable,drain}`, with the token.
    fn admin_action(&mut self, req: &http::Request, now: Instant) -> http::Response {
        let parts: Vec<&str> = req.path.split('/').skip(2).collect();
        let [listen, server, action] = parts[..] else {
            return http::Response::text(404, "expected /server/LISTEN/SERVER/ACTION\n");
        };
        let action = match action {
            "enable" => ServerAction::Enable,
            "disable" => ServerAction::Disable,
            "drain" => ServerAction::Drain,
            _ => return http::Response::text(404, "ACTION is enable, disable or drain\n"),
        };
        let (Some(listen), Some(server)) =
            (http::percent_decode(listen), http::percent_decode(server))
        else {
            return http::Response::text(400, "bad request: bad %-escape in the path\n");
        };
        let Some(token) = self.admin.config.as_ref().and_then(|c| c.token.clone()) else {
            return http::Response::text(
                403,
                "read-only: set [admin] token in the config to allow actions\n",
            );
        };
        let given = match req.authorization.as_deref().and_then(http::bearer) {
            Some(t) => Some(t.to_string()),
            None if req
                .content_type
                .starts_with("application/x-www-form-urlencoded") =>
            {
                http::form_field(&req.body, "token")
            }
            None => None,
        };
        if !given.is_some_and(|g| http::same_secret(g.as_bytes(), token.as_bytes())) {
            let path = super::ratelog::quoted(&req.path);
            self.admin.refusals.log(now, || {
                format!("admin: refused POST {path}: missing or wrong token")
            });
            return http::Response::text(403, "forbidden: missing or wrong token\n");
        }
        match self.server_action(action, &format!("{listen}/{server}"), now) {
            Response::Done { message } => {
                http::Response::json(200, &serde_json::json!({ "ok": true, "message": message }))
            }
            Response::Error { message } => {
                http::Response::json(404, &serde_json::json!({ "ok": false, "message": message }))
            }
            _ => http::Response::text(503, "unexpected answer\n"),
        }
    }
}

/// Reads what is there into `c.buf`, up to `cap` bytes in all; returns
/// (peer closed, read failed).
fn read_some(c: &mut Conn, cap: usize) -> (bool, bool) {
    let mut chunk = [0u8; 4096];
    while c.buf.len() < cap {
        let room = (cap - c.buf.len()).min(chunk.len());
        match c.stream.read(&mut chunk[..room]) {
            Ok(0) => return (true, false),
            Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return (false, false),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return (false, true),
        }
    }
    (false, false)
}
