//! Owns the master's side of the control socket: accepting clients (with
//! their `SO_PEERCRED` credentials), reading one request each, refusing
//! state changes from peers other than root and the master's own user,
//! dispatching the rest (status, reload, stop, connections, runtime server
//! changes), gathering `connections` answers from the workers, and sending
//! the one response.

use super::*;

impl Master {
    // ---- control socket -------------------------------------------------

    pub(super) fn accept_clients(&mut self) {
        loop {
            let Some(control) = &self.control else {
                return;
            };
            match control.accept() {
                Ok((stream, _)) => {
                    if self.clients.len() >= MAX_CLIENTS && !self.evict_silent_client() {
                        // Every client is being answered: closing this one
                        // tells it to retry; the master keeps its memory and
                        // its loop for the others.
                        drop(stream);
                        continue;
                    }
                    let token = tokens::nth(&tokens::CLIENTS, self.next_client);
                    self.next_client += 1;
                    let peer = peer_of(&stream);
                    let mut conn = LineConn::new(stream, MAX_LINE);
                    if self
                        .poll
                        .registry()
                        .register(
                            conn.stream_mut(),
                            token,
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_ok()
                    {
                        self.clients.insert(
                            token,
                            ControlClient {
                                conn,
                                asked: false,
                                opened: Instant::now(),
                                answered: None,
                                peer,
                            },
                        );
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log(&format!("control socket accept failed: {e}"));
                    return;
                }
            }
        }
    }

    pub(super) fn on_client(&mut self, token: Token, now: Instant) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        if client.answered.is_some() {
            match client.conn.flush() {
                Ok(false) => return,
                _ => {
                    self.drop_client(token);
                    return;
                }
            }
        }
        if client.asked {
            // One request per conversation; whatever follows is ignored
            // (never read, so a flooding client cannot hold the loop).
            return;
        }
        let mut msgs: Vec<Result<Request, String>> = Vec::new();
        let outcome = client.conn.read_some(&mut msgs, 1);
        if !msgs.is_empty() {
            client.asked = true;
        }
        match outcome {
            ReadOutcome::TooLong => {
                self.respond(
                    token,
                    Response::Error {
                        message: format!("request longer than {MAX_LINE} bytes"),
                    },
                );
                return;
            }
            ReadOutcome::Closed if msgs.is_empty() => {
                self.drop_client(token);
                return;
            }
            _ => {}
        }
        if let Some(msg) = msgs.into_iter().next() {
            match msg {
                Ok(req) => match self.refusal(token, &req) {
                    Some(message) => self.respond(token, Response::Error { message }),
                    None => self.on_request(token, req, now),
                },
                Err(e) => self.respond(
                    token,
                    Response::Error {
                        message: format!("bad request: {e}"),
                    },
                ),
            }
        }
    }

    /// Why `token`'s client may not make `req` (logged), or None when it may.
    fn refusal(&self, token: Token, req: &Request) -> Option<String> {
        let peer = self.clients.get(&token).and_then(|c| c.peer);
        let master_uid = nix::unistd::geteuid().as_raw();
        if crate::control::allowed(peer.map(|p| p.uid), master_uid, req) {
            return None;
        }
        let (who, from) = match peer {
            Some(p) => (format!("uid {}", p.uid), format!(" (pid {})", p.pid)),
            None => ("a peer with unknown credentials".to_string(), String::new()),
        };
        let message = format!("permission denied: {who} may not {}", req.action());
        log(&format!(
            "control: refused request from {who}{from}: {message}"
        ));
        Some(message)
    }

    /// Full: drops the client that has waited longest without asking
    /// anything, so silent connections cannot keep `lbctl` commands out;
    /// false when every client has asked (the new one is closed then).
    fn evict_silent_client(&mut self) -> bool {
        let oldest = self
            .clients
            .iter()
            .filter(|(_, c)| !c.asked)
            .min_by_key(|(_, c)| c.opened)
            .map(|(&t, _)| t);
        match oldest {
            Some(t) => {
                self.drop_client(t);
                true
            }
            None => false,
        }
    }

    /// Drops control clients that asked nothing within [`CLIENT_IDLE`], or
    /// whose answer could not be written within it.
    pub(super) fn expire_clients(&mut self, now: Instant) {
        let stale: Vec<Token> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                let since = match (c.asked, c.answered) {
                    (_, Some(t)) => t,
                    (false, None) => c.opened,
                    // Waiting for a reload or a stop: kept until answered.
                    (true, None) => return false,
                };
                now.duration_since(since) > CLIENT_IDLE
            })
            .map(|(&t, _)| t)
            .collect();
        for t in stale {
            self.drop_client(t);
        }
    }

    pub(super) fn drop_client(&mut self, token: Token) {
        if let Some(mut c) = self.clients.remove(&token) {
            let _ = self.poll.registry().deregister(c.conn.stream_mut());
        }
    }

    /// Sends the one answer of a control conversation, then closes it.
    pub(super) fn respond(&mut self, token: Token, resp: Response) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        client.answered = Some(Instant::now());
        match client.conn.send(&resp) {
            Ok(()) if !client.conn.has_pending_writes() => self.drop_client(token),
            Ok(()) => {}
            Err(_) => self.drop_client(token),
        }
    }

    /// Sends the same answer to every control client in `waiters`.
    pub(super) fn respond_all(&mut self, waiters: Vec<Token>, resp: Response) {
        for w in waiters {
            self.respond(w, resp.clone());
        }
    }

    pub(super) fn on_request(&mut self, token: Token, req: Request, now: Instant) {
        match req {
            Request::Status => {
                let status = report::status(self, now);
                self.respond(
                    token,
                    Response::Status {
                        status: Box::new(status),
                    },
                );
            }
            Request::Reload { config: Some(p) } if !same_file(&p, &self.config_path) => self
                .respond(
                    token,
                    Response::Error {
                        message: format!(
                            "this master runs {}, not {}: reload it with -c {}",
                            self.config_path.display(),
                            p.display(),
                            self.config_path.display()
                        ),
                    },
                ),
            Request::Reload { .. } => match self.phase {
                MasterPhase::Reloading { .. } | MasterPhase::Starting => {
                    self.queued_reloads.push(token)
                }
                // Refused there while stopping.
                MasterPhase::Running | MasterPhase::Stopping { .. } => {
                    self.begin_reload(vec![token], now)
                }
            },
            Request::Stop { graceful } => {
                self.stop_waiters.push(token);
                self.begin_stop(graceful, now);
            }
            Request::Connections => self.begin_connections(token, now),
            Request::Upgrade => self.begin_upgrade(Some(token), now),
            Request::ReopenLogs => {
                let resp = self.reopen_logs();
                self.respond(token, resp);
            }
            Request::Server { action, target } => {
                let resp = self.server_action(action, &target, now);
                self.respond(token, resp);
            }
        }
    }

    // ---- connections and runtime server control ---------------------------

    pub(super) fn begin_connections(&mut self, token: Token, now: Instant) {
        let id = self.next_req;
        self.next_req += 1;
        let mut waiting = Vec::new();
        for gi in 0..self.gens.len() {
            for k in 0..self.gens[gi].slots.len() {
                let pid = self.gens[gi].slots[k].pid;
                if let Some(pid) = pid
                    && self.send_to(gi, k, &ToWorker::Connections { id })
                {
                    waiting.push(pid.as_raw() as u32);
                }
            }
        }
        self.pending_conns.insert(
            id,
            PendingConns {
                client: token,
                waiting,
                rows: Vec::new(),
                deadline: now + CONNECTIONS_TIMEOUT,
            },
        );
        self.finish_connections(now);
    }

    pub(super) fn finish_connections(&mut self, now: Instant) {
        let done: Vec<u64> = self
            .pending_conns
            .iter()
            .filter(|(_, p)| p.waiting.is_empty() || now >= p.deadline)
            .map(|(&id, _)| id)
            .collect();
        for id in done {
            if let Some(p) = self.pending_conns.remove(&id) {
                self.respond(
                    p.client,
                    Response::Connections {
                        connections: p.rows,
                        busy: p.waiting,
                    },
                );
            }
        }
    }

    pub(super) fn server_action(
        &mut self,
        action: ServerAction,
        target: &str,
        now: Instant,
    ) -> Response {
        if let ServerAction::Weight(w) = action
            && w > 1000
        {
            return Response::Error {
                message: format!("weight {w}: expected 0..=1000, as in the config file"),
            };
        }
        let Some((listen_name, server_name)) = target.split_once('/') else {
            return Response::Error {
                message: format!("'{target}': expected LISTEN/SERVER, e.g. web/10.0.0.11:6001"),
            };
        };
        let mut found = None;
        for g in self.gens.iter_mut().filter(|g| !g.retiring) {
            for (idx, l, s) in reload::servers(&g.config) {
                if l.name == listen_name
                    && (s.name.as_deref() == Some(server_name) || s.addr.to_string() == server_name)
                {
                    let cell = g.region.server(idx);
                    match action {
                        ServerAction::Enable => cell.admin.store(ADMIN_ENABLED, Relaxed),
                        ServerAction::Disable => cell.admin.store(ADMIN_DISABLED, Relaxed),
                        ServerAction::Drain => cell.admin.store(ADMIN_DRAINING, Relaxed),
                        ServerAction::Weight(w) => cell.weight.store(w, Relaxed),
                    }
                    g.notes[idx].since = now;
                    found = Some(format!("{}/{}", l.name, s.label()));
                }
            }
        }
        match found {
            Some(name) => {
                let what = match action {
                    ServerAction::Enable => "enabled".to_string(),
                    ServerAction::Disable => "disabled".to_string(),
                    ServerAction::Drain => "draining".to_string(),
                    ServerAction::Weight(w) => format!("weight set to {w}"),
                };
                log(&format!(
                    "server {name} {what} (runtime change; a reload resets it)"
                ));
                Response::Done {
                    message: format!("{name}: {what}"),
                }
            }
            None => Response::Error {
                message: format!("no server '{server_name}' in listen '{listen_name}'"),
            },
        }
    }
}

/// (listen name, server label) of global server index `idx`.
pub(super) fn server_at(config: &Config, idx: usize) -> (String, String) {
    reload::servers(config)
        .nth(idx)
        .map_or((String::new(), String::new()), |(_, l, s)| {
            (l.name.clone(), s.label())
        })
}

/// Whether two paths name the same file (symlinks and spellings resolved).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// The credentials of the process that connected `stream` (`SO_PEERCRED`:
/// as they were at `connect`, so a client cannot change them afterwards).
fn peer_of(stream: &UnixStream) -> Option<Peer> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    match getsockopt(stream, PeerCredentials) {
        Ok(c) => Some(Peer {
            uid: c.uid(),
            pid: c.pid(),
        }),
        Err(e) => {
            log(&format!("control: cannot read the peer's credentials: {e}"));
            None
        }
    }
}
