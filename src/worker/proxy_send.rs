//! Owns `send_proxy = "v1" | "v2"` in the worker: once a connect to such a
//! server completes, and before the session may write anything, the
//! PROXY header is written on the new connection: the client's address
//! (the real peer, or what its own PROXY header said with `accept_proxy`)
//! and the address it connected to. The header is at most 107 bytes and
//! the socket has just connected, so its send buffer is empty: one write
//! takes it whole. A short or failed write is treated as a failed connect
//! (counted against the server, retried elsewhere), never as a partial
//! header followed by client bytes.
//!
//! A pooled connection (HTTP mode) was sent its header when it was opened;
//! it carries that one client, so it is private to it (`idle.rs`, an
//! owner per idle connection) and never sent a second header.

use super::Worker;
use crate::proxy_protocol;
use std::io::{self, Write};

impl Worker {
    /// Writes the PROXY header on the just-connected server connection of
    /// `idx`, if its server wants one.
    pub(super) fn send_proxy_header(&mut self, idx: usize) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return Ok(());
        };
        let listen = &self.config.listens[conn.listen];
        let Some(version) = conn
            .upstream
            .server_id
            .and_then(|id| listen.servers.get(id))
            .and_then(|s| s.send_proxy)
        else {
            return Ok(());
        };
        let dst = match conn.proxy_dst {
            Some(d) => d,
            None => conn.client.local_addr()?,
        };
        let header = proxy_protocol::encode(version, conn.client_addr, dst);
        let Some(server) = conn.upstream.server.as_deref_mut() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let bytes = header.as_bytes();
        loop {
            match server.write(bytes) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(_) => return Err(io::ErrorKind::WriteZero.into()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
