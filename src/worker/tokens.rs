//! Owns the worker's poll tokens: their ranges (listeners, clients, server
//! connections, the master's channel) and the slab that gives each server
//! connection one token for its whole life, whoever holds it — a client
//! connection while it carries a request, or the idle pool between requests
//! — so handing a kept-alive connection over costs no `epoll_ctl`. Each slot
//! names its current [`Holder`]; an event is delivered only when that holder
//! still holds a [`ServerConn`] of the same slot, so an event of a connection
//! gone meanwhile reaches nobody. A `ServerConn` frees its slot when it is
//! dropped, however it goes, and freed slots are reused only after the
//! current event batch: no stale event of a closed socket can reach the
//! connection that gets its slot next.

use mio::Token;
use mio::net::TcpStream;
use std::cell::Cell;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

/// The master's channel.
pub const CHANNEL: Token = Token(usize::MAX - 1);
/// First client token (`CONN_BASE + connection index`); listeners are below.
pub const CONN_BASE: usize = 1 << 20;
/// First server-connection token (`SERVER_BASE + slot`).
pub const SERVER_BASE: usize = 1 << 40;

/// Who holds a server connection now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// The client connection with this index (connecting or serving).
    Conn(usize),
    /// The idle pool, at this index of its slab.
    Idle(usize),
    /// Nobody: the slot is free.
    Nobody,
}

/// The slots of one worker's server connections.
#[derive(Debug, Default)]
pub struct ServerTokens {
    holders: Vec<Holder>,
    free: Vec<usize>,
    /// Slots of connections dropped during the current batch.
    freed: Freed,
}

/// The freed slots, shared with every [`ServerConn`] (one thread: a `Cell`,
/// taken and put back, never borrowed across a call).
#[derive(Default, Clone)]
struct Freed(Rc<Cell<Vec<usize>>>);

impl Freed {
    fn push(&self, slot: usize) {
        let mut v = self.0.take();
        v.push(slot);
        self.0.set(v);
    }
}

impl std::fmt::Debug for Freed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Freed")
    }
}

impl ServerTokens {
    /// No slot in use.
    pub fn new() -> ServerTokens {
        ServerTokens::default()
    }

    /// Gives `stream` (a new server connection, not registered yet) a slot,
    /// held by `holder`.
    pub fn wrap(&mut self, stream: TcpStream, holder: Holder) -> ServerConn {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.holders.push(Holder::Nobody);
                self.holders.len() - 1
            }
        };
        self.holders[slot] = holder;
        ServerConn {
            stream,
            slot,
            freed: self.freed.clone(),
            tls: None,
        }
    }

    /// `holder` holds the connection in `slot` from now on.
    pub fn hand_to(&mut self, slot: usize, holder: Holder) {
        if let Some(h) = self.holders.get_mut(slot) {
            *h = holder;
        }
    }

    /// The slot and recorded holder of a server-connection token.
    pub fn holder(&self, token: Token) -> Option<(usize, Holder)> {
        let slot = token.0.checked_sub(SERVER_BASE)?;
        self.holders.get(slot).map(|&h| (slot, h))
    }

    /// The event batch is over: the slots freed during it can be reused.
    pub fn end_batch(&mut self) {
        let mut freed = self.freed.0.take();
        for &slot in &freed {
            if let Some(h) = self.holders.get_mut(slot) {
                *h = Holder::Nobody;
            }
        }
        self.free.append(&mut freed);
        self.freed.0.set(freed);
    }

    /// Slots in use (connections alive, or dropped during this batch).
    pub fn in_use(&self) -> usize {
        self.holders.len() - self.free.len()
    }
}

/// A server connection with its slot (its token); the slot is freed when
/// it is dropped. Derefs to the stream.
#[derive(Debug)]
pub struct ServerConn {
    stream: TcpStream,
    slot: usize,
    freed: Freed,
    /// `tls` on the server: its TLS state (`worker/origin`), kept while
    /// the connection is pooled.
    pub tls: Option<Box<super::origin::Origin>>,
}

impl ServerConn {
    /// Its slot.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// The socket and the TLS state, borrowed apart.
    pub fn parts(&mut self) -> (&mut TcpStream, Option<&mut super::origin::Origin>) {
        (&mut self.stream, self.tls.as_deref_mut())
    }

    /// Its poll token, the same for its whole life.
    pub fn token(&self) -> Token {
        Token(SERVER_BASE + self.slot)
    }
}

impl Deref for ServerConn {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        &self.stream
    }
}

impl DerefMut for ServerConn {
    fn deref_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

impl Drop for ServerConn {
    fn drop(&mut self) {
        self.freed.push(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> (std::net::TcpListener, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let s = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        (l, TcpStream::from_std(s))
    }

    #[test]
    fn a_slot_keeps_its_token_while_it_changes_hands_and_is_freed_on_drop() {
        let mut t = ServerTokens::new();
        let (_l, s) = stream();
        let conn = t.wrap(s, Holder::Conn(3));
        let token = conn.token();
        assert_eq!(t.holder(token), Some((conn.slot(), Holder::Conn(3))));
        t.hand_to(conn.slot(), Holder::Idle(0));
        assert_eq!(t.holder(token), Some((conn.slot(), Holder::Idle(0))));
        drop(conn);
        assert_eq!(t.in_use(), 1, "not reused before the batch ends");
        t.end_batch();
        assert_eq!(t.in_use(), 0);
        assert_eq!(t.holder(token).map(|(_, h)| h), Some(Holder::Nobody));
    }

    #[test]
    fn a_slot_freed_during_a_batch_goes_to_a_new_connection_only_after_it() {
        let mut t = ServerTokens::new();
        let (_l, s) = stream();
        let first = t.wrap(s, Holder::Conn(0));
        let slot = first.slot();
        drop(first);
        let (_l2, s2) = stream();
        let second = t.wrap(s2, Holder::Conn(1));
        assert_ne!(second.slot(), slot);
        t.end_batch();
        let (_l3, s3) = stream();
        assert_eq!(t.wrap(s3, Holder::Conn(2)).slot(), slot);
    }

    #[test]
    fn tokens_outside_the_server_range_have_no_holder() {
        let t = ServerTokens::new();
        assert_eq!(t.holder(Token(CONN_BASE)), None);
        assert_eq!(t.holder(Token(SERVER_BASE)), None);
    }
}
