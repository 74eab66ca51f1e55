//! Owns taking new clients: accepting until WouldBlock (pausing on a
//! shortage of descriptors), the per-client limits, the connection's
//! session (TLS, sockmap), its registration, and the first step: connect
//! at once (tcp) or wait for a PROXY header or a request.

use super::conn::{Conn, Phase};
use super::tokens::CONN_BASE;
use super::{ACCEPT_PAUSE, Worker, session, sockmap};
use crate::netutil::is_local_shortage;
use crate::shm;
use mio::{Interest, Token};
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

impl Worker {
    pub(super) fn accept(&mut self, i: usize) {
        if self.draining || self.accept_paused_until.is_some() {
            return;
        }
        while self.accept_paused_until.is_none() {
            let Some((listen, listener)) = self.listeners.get(i) else {
                return;
            };
            let listen = *listen;
            match listener.accept() {
                Ok((stream, addr)) => self.on_accept(listen, stream, addr),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if is_local_shortage(&e) {
                        // Out of descriptors: stop accepting for a moment
                        // instead of spinning on a queue we cannot serve.
                        self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                        return;
                    }
                    // ECONNABORTED and the like concern one client only.
                }
            }
        }
    }

    fn on_accept(
        &mut self,
        listen: usize,
        stream: mio::net::TcpStream,
        addr: std::net::SocketAddr,
    ) {
        // TCP_NODELAY comes from the listening socket (inherited on accept).
        let limits = &self.config.listens[listen].client_limits;
        let proxied = self.config.listens[listen].accept_proxy;
        let mut client_cell = None;
        // With `accept_proxy` the client's address is known only once its
        // header is read: the limits apply then (`proxy_accept.rs`).
        if proxied.is_none() && (limits.max_conns.is_some() || limits.rate.is_some()) {
            match crate::limits::admit(
                &self.region,
                self.slot,
                listen,
                limits,
                addr.ip(),
                shm::now_ms(),
            ) {
                Ok(cell) => client_cell = cell,
                Err(why) => {
                    // Dropping the stream closes it: the client only.
                    self.refuse_client(listen, addr, why);
                    return;
                }
            }
        }
        self.serial += 1;
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        let mode = self.config.listens[listen].mode;
        let mut conn = Conn::new(self.serial, listen, mode, stream, addr, self.now);
        conn.client_cell = client_cell;
        if let Some(tls) = &self.listens[listen].tls {
            match session::Session::for_listen(&self.config.listens[listen], Some(tls), self.now) {
                Ok(s) => conn.session = s,
                Err(_) => {
                    self.free.push(idx);
                    if let Some(b) = client_cell {
                        crate::limits::release(&self.region, self.slot, listen, b);
                    }
                    return;
                }
            }
        }
        let token = Token(CONN_BASE + idx);
        if let Some(s) =
            sockmap::plane::session_for(&self.sockmap, &self.config.listens[listen], token.0)
        {
            conn.session = s;
        }
        if self
            .poll
            .registry()
            .register(
                &mut conn.client,
                token,
                Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY,
            )
            .is_err()
        {
            self.free.push(idx);
            if let Some(b) = client_cell {
                crate::limits::release(&self.region, self.slot, listen, b);
            }
            return;
        }
        let slot = self.region.slot(self.slot);
        slot.active.fetch_add(1, Relaxed);
        slot.total.fetch_add(1, Relaxed);
        self.live += 1;
        let serial = conn.serial;
        let mut connect_now = conn.session.connects_at_accept();
        if let Some(p) = proxied {
            let deadline = self.now + p.timeout;
            conn.phase = Phase::ProxyHeader { deadline };
            conn.armed = Some(deadline);
            self.timers.push(deadline, idx, serial);
            connect_now = false;
        }
        self.conns[idx] = Some(conn);
        if connect_now {
            self.dispatch_and_follow(idx, serial);
        } else {
            self.progress(idx);
        }
    }
}
