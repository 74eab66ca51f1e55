//! Owns `dataplane = "sockmap"` for `mode = "tcp"`: the [`SockmapRelay`]
//! session, which hands a connected client/server pair to the kernel relay
//! (`crate::bpf::relay`) so that steady-state bytes never wake the worker,
//! and keeps in user space what only it can do.
//!
//! Life of a connection:
//! 1. *user*: it runs as the plain [`TcpRelay`] until it has earned the link
//!    and both relay buffers are empty (bytes the session had to see or send
//!    first). A link costs about two dozen system calls, more than the whole
//!    relay of a one-shot exchange, so a connection earns it by a second
//!    exchange (a third change of direction: request, response, request) or
//!    by [`LINK_BYTES`] one way (a bulk transfer): a connection that carries
//!    one request and its response and closes never enters the maps. The
//!    test knob [`LINK_AT_ONCE_ENV`] links every connection at once instead
//!    (the CI matrix runs the suite so, to take every test through the
//!    kernel relay);
//! 2. *link*: the byte bases of both sockets are read ([`probe`], settled:
//!    re-read until no packet moved them; not while urgent data is pending,
//!    which throws `SIOCINQ` off: then at the next event), the pair enters
//!    the maps, both send buffers are raised to `sockmap_sndbuf`, its epoll
//!    interest shrinks to the peer's FIN and errors, and bytes already
//!    queued are pushed through the verdict. A socket the kernel will not
//!    take (already half-closed, map full) leaves the connection in user
//!    space: refused per connection, never failed;
//! 3. *kernel*: on a FIN event, or on its own timers, the session compares
//!    per direction the bytes consumed from the source with the bytes that
//!    entered the destination's send queue, and forwards the FIN
//!    (`shutdown(Write)`) only when they are equal, so a FIN never overtakes
//!    redirected bytes still queued in the kernel; until then it re-checks
//!    on a short back-off timer. More bytes in the destination than left
//!    the source (bytes the kernel duplicated) resets both sides instead.
//!    A tick every second refreshes the byte counters (`status`,
//!    `connections`) and the idle time (bytes taken from a socket or
//!    acknowledged by its peer are activity; bytes the relay still owes
//!    hold an idle close: [`SockmapRelay::owes_bytes`]); both directions shut is the
//!    end, and closing the fds takes the sockets out of the maps.

pub mod plane;
pub mod probe;

use super::access::record::Cause;
use super::buffer::Pool;
use super::conn::Upstream;
use super::session::{Io, Step};
use super::tcp::TcpRelay;
use crate::bpf::relay::LinkError;
use mio::net::TcpStream;
use plane::Plane;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// Bytes one way after which a connection is linked without a second
/// exchange (a bulk transfer).
pub const LINK_BYTES: u64 = 64 * 1024;
/// Changes of direction after which a connection is linked: request,
/// response, second request.
const LINK_TURNS: u8 = 3;
/// Test knob: set (to anything) in a worker's environment, every connection
/// of a sockmap listen is linked as soon as it is idle, before any byte.
pub const LINK_AT_ONCE_ENV: &str = "LBCTL_SOCKMAP_LINK_AT_ONCE";

/// How often a kernel-relayed connection refreshes its counters.
const TICK: Duration = Duration::from_secs(1);
/// First and longest wait before re-checking a FIN that cannot go yet.
const RECHECK_MIN: Duration = Duration::from_millis(1);
const RECHECK_MAX: Duration = Duration::from_millis(32);

/// One direction while the kernel relays it.
#[derive(Debug, Default, Clone, Copy)]
struct Half {
    /// Bytes moved by user space before the link.
    prior: u64,
    /// The source's consumed bytes at the link.
    src_base: u64,
    /// The destination's entered bytes at the link.
    dst_base: u64,
    /// Bytes relayed by the kernel so far (as last measured).
    moved: u64,
    /// The FIN was forwarded.
    shut: bool,
}

#[derive(Debug)]
struct Kernel {
    /// Client → server.
    up: Half,
    /// Server → client.
    down: Half,
    /// A FIN waits for queued bytes: check again then.
    recheck: Option<Instant>,
    backoff: Duration,
    /// Next counter refresh.
    tick: Instant,
    /// Bytes each way already reported to the loop (its counters).
    reported: (u64, u64),
    /// Bytes consumed and acknowledged, all four figures summed, at the
    /// last look, and when they last changed.
    seen: u64,
    moved_at: Instant,
    /// Since when the relay has owed bytes with nothing moving
    /// ([`SockmapRelay::owes_bytes`]).
    owed_since: Option<Instant>,
    /// The side whose FIN was forwarded first (true: the client's), for
    /// the access log.
    first_fin: Option<bool>,
}

#[derive(Debug)]
enum Stage {
    /// Not linked yet (or bytes still buffered in user space).
    User,
    /// The kernel refused this connection: user space relays it.
    Refused,
    /// A partial link is being undone: user space waits until the client's
    /// bytes redirected so far are in the server socket.
    Unwinding {
        /// The client's consumed bytes and the server's entered bytes at
        /// the link.
        bases: (u64, u64),
        /// Both sockets' cookies.
        cookies: (u64, u64),
        recheck: Instant,
    },
    /// Linked.
    Kernel(Kernel),
}

/// The relay state of one connection of a `dataplane = "sockmap"` listen.
#[derive(Debug)]
pub struct SockmapRelay {
    plane: Rc<Plane>,
    client_token: usize,
    user: TcpRelay,
    stage: Stage,
    /// Bytes relayed by the kernel not yet reported to the loop.
    unreported: u64,
    /// Changes of direction seen in user space, and the last direction
    /// bytes moved (true: client → server), for the link rule.
    turns: u8,
    last_up: Option<bool>,
    /// The listen's `sockmap_sndbuf`, given to both sockets at the link.
    sndbuf: usize,
}

impl SockmapRelay {
    /// A new connection whose client socket is registered under `token`,
    /// of a listen whose `sockmap_sndbuf` is `sndbuf`.
    pub fn new(plane: Rc<Plane>, client_token: usize, sndbuf: usize) -> SockmapRelay {
        SockmapRelay {
            plane,
            client_token,
            user: TcpRelay::default(),
            stage: Stage::User,
            unreported: 0,
            turns: 0,
            last_up: None,
            sndbuf,
        }
    }

    /// Moves the connection on: links it once it has earned the link and
    /// nothing is buffered, else relays in user space; once linked,
    /// forwards FINs and counts.
    pub fn advance(&mut self, mut io: Io<'_>, pool: &mut Pool) -> io::Result<Step> {
        if let Stage::User = self.stage {
            if !self.may_link(&io) {
                let step = self.user.advance(io.reborrow(), pool)?;
                self.count_turns(&step);
                // Earned by this very step: link now, before the next
                // bytes wake the worker.
                if matches!(step, Step::Open(..)) && self.may_link(&io) {
                    self.stage = self.link(io.client, io.upstream, io.now)?;
                }
                return Ok(step);
            }
            self.stage = self.link(io.client, io.upstream, io.now)?;
        }
        if let Stage::Unwinding { .. } = self.stage
            && !self.unwound(io.client, io.upstream, io.now)?
        {
            return Ok(Step::Open(0, 0));
        }
        match &mut self.stage {
            Stage::Kernel(k) => k.check(io.client, io.upstream, io.now),
            Stage::User | Stage::Refused | Stage::Unwinding { .. } => {
                let step = self.user.advance(io, pool)?;
                // Bytes the kernel moved before a partial link was undone.
                let extra = std::mem::take(&mut self.unreported);
                Ok(match step {
                    Step::Open(u, d) => Step::Open(u + extra, d),
                    Step::Busy(u, d) => Step::Busy(u + extra, d),
                    Step::Finished(u, d) => Step::Finished(u + extra, d),
                    other => other,
                })
            }
        }
    }

    /// True when the connection may be linked now: it earned the link
    /// (see the module doc), nothing is buffered in user space, no EOF came
    /// yet, and the server is connected.
    fn may_link(&self, io: &Io<'_>) -> bool {
        let (up, down) = self.user.bytes();
        let earned = self.plane.link_at_once
            || self.turns >= LINK_TURNS
            || up >= LINK_BYTES
            || down >= LINK_BYTES;
        earned
            && self.user.up.pending() == 0
            && self.user.down.pending() == 0
            && !self.user.up.eof
            && !self.user.down.eof
            && io.upstream.server.is_some()
    }

    /// Counts the changes of direction of a user-space step's bytes.
    fn count_turns(&mut self, step: &Step) {
        if let Step::Open(u, d) | Step::Busy(u, d) = *step {
            for (moved, up) in [(u, true), (d, false)] {
                if moved > 0 && self.last_up != Some(up) {
                    self.turns = self.turns.saturating_add(1);
                    self.last_up = Some(up);
                }
            }
        }
    }

    /// True once a partial link is undone (the client's redirected bytes
    /// all entered the server socket, both left the maps): user space
    /// relays from here, counting what the kernel moved.
    fn unwound(
        &mut self,
        client: &TcpStream,
        upstream: &Upstream,
        now: Instant,
    ) -> io::Result<bool> {
        let Stage::Unwinding {
            bases,
            cookies,
            recheck,
        } = &mut self.stage
        else {
            return Ok(true);
        };
        let Some(server) = upstream.server.as_deref() else {
            return Ok(true);
        };
        let consumed = probe::consumed(client.as_raw_fd())?.bytes;
        let entered = probe::entered(server.as_raw_fd())?;
        let moved = consumed.saturating_sub(bases.0);
        if entered.saturating_sub(bases.1) < moved {
            *recheck = now + RECHECK_MIN;
            return Ok(false);
        }
        self.plane.relay.unlink(cookies.0, cookies.1);
        let (up, down) = self.user.bytes();
        self.user = TcpRelay::resumed(up + moved, down);
        self.unreported = moved;
        self.stage = Stage::Refused;
        Ok(true)
    }

    /// Tries the link: the stage it leads to (`Kernel`, `Refused`,
    /// `Unwinding` a partial link, or `User` to try again at the next event:
    /// urgent data pending, or packets kept moving the byte figures); an
    /// error when the connection is broken.
    fn link(&self, client: &TcpStream, upstream: &Upstream, now: Instant) -> io::Result<Stage> {
        let Some(server) = upstream.server.as_deref() else {
            return Ok(Stage::Refused);
        };
        let (a, b) = (client.as_raw_fd(), server.as_raw_fd());
        if probe::urgent_pending(a) || probe::urgent_pending(b) {
            // SIOCINQ stops at an urgent mark: link once user space has
            // read past it.
            return Ok(Stage::User);
        }
        let bases = (|| {
            let (ca, ea) = probe::settled(a)?;
            let (cb, eb) = probe::settled(b)?;
            Ok::<_, nix::errno::Errno>((ca, eb, cb, ea))
        })();
        let (ca, eb, cb, ea) = match bases {
            Ok(b) => b,
            // Packets kept moving the figures: try again at the next event.
            Err(nix::errno::Errno::EAGAIN) => return Ok(Stage::User),
            Err(_) => return Ok(Stage::Refused),
        };
        match self.plane.relay.link(client.as_fd(), server.as_fd()) {
            Ok(_) => {}
            Err(LinkError::Refused(_)) => return Ok(Stage::Refused),
            Err(LinkError::Partial(_, ka, kb)) => {
                return Ok(Stage::Unwinding {
                    bases: (ca, eb),
                    cookies: (ka, kb),
                    recheck: now + RECHECK_MIN,
                });
            }
        }
        probe::raise_sndbuf(client.as_fd(), self.sndbuf);
        probe::raise_sndbuf(server.as_fd(), self.sndbuf);
        let epoll = self.plane.epoll;
        let watched = probe::watch_fin_only(epoll, a, self.client_token)
            .and_then(|()| probe::watch_fin_only(epoll, b, server_token(upstream)));
        watched.map_err(io::Error::from)?;
        let _ = crate::bpf::relay::kick(a);
        let _ = crate::bpf::relay::kick(b);
        let (up, down) = self.user.bytes();
        Ok(Stage::Kernel(Kernel {
            up: Half {
                prior: up,
                src_base: ca,
                dst_base: eb,
                ..Half::default()
            },
            down: Half {
                prior: down,
                src_base: cb,
                dst_base: ea,
                ..Half::default()
            },
            recheck: None,
            backoff: RECHECK_MIN,
            tick: now + TICK,
            reported: (0, 0),
            seen: 0,
            moved_at: now,
            owed_since: None,
            first_fin: None,
        }))
    }

    /// Bytes relayed so far (client → server, server → client).
    pub fn bytes(&self) -> (u64, u64) {
        match &self.stage {
            Stage::Kernel(k) => (k.up.prior + k.up.moved, k.down.prior + k.down.moved),
            _ => self.user.bytes(),
        }
    }

    /// Which side closed first, for the access log: in the kernel stage the
    /// side whose FIN was forwarded first.
    pub fn ended_by(&self) -> Cause {
        match &self.stage {
            Stage::Kernel(k) if k.first_fin == Some(false) => Cause::ServerClosed,
            Stage::Kernel(_) => Cause::ClientClosed,
            _ => self.user.ended_by(),
        }
    }

    /// A word for `lbctl connections` (the words of the TCP relay).
    pub fn state_name(&self) -> &'static str {
        match &self.stage {
            Stage::Kernel(k) if k.up.shut || k.down.shut => "half-closed",
            Stage::Kernel(_) => "relaying",
            _ => self.user.state_name(),
        }
    }

    /// True once linked: the kernel relays the bytes.
    pub fn kernel_relayed(&self) -> bool {
        matches!(self.stage, Stage::Kernel(_))
    }

    /// The next time the session wants to run without an event.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.stage {
            Stage::Kernel(k) => Some(k.recheck.map_or(k.tick, |r| r.min(k.tick))),
            Stage::Unwinding { recheck, .. } => Some(*recheck),
            Stage::User | Stage::Refused => None,
        }
    }

    /// When bytes were last seen moving through the kernel (measured now),
    /// for the loop's idle timeout; None before the link.
    pub fn last_moved(
        &mut self,
        client: &TcpStream,
        upstream: &Upstream,
        now: Instant,
    ) -> Option<Instant> {
        let (k, server) = self.kernel(upstream)?;
        k.measure(client.as_raw_fd(), server.as_raw_fd(), now);
        Some(k.moved_at)
    }

    /// Since when the kernel relay has owed bytes it took from a peer,
    /// with nothing moving: bytes consumed from a source (or waiting in its
    /// receive queue for the verdict) but not yet in the destination's send
    /// queue, which has room for them. The kernel moves them on its psock
    /// worker, a kworker at normal priority, which under full CPU load was
    /// seen to wait about 3 s to run: the relay is late, the peers are not
    /// quiet, and closing the connection would drop those bytes behind a
    /// clean FIN. (Bytes that wait for a destination that does not read are
    /// the peer's doing: not owed.) None before the link, when nothing is
    /// owed, and when the counters cannot be read.
    pub fn owes_bytes(
        &mut self,
        client: &TcpStream,
        upstream: &Upstream,
        now: Instant,
    ) -> Option<Instant> {
        let (k, server) = self.kernel(upstream)?;
        let owed = k.up.owes(client.as_fd(), server.as_fd())
            || k.down.owes(server.as_fd(), client.as_fd());
        if owed {
            Some(*k.owed_since.get_or_insert(now))
        } else {
            k.owed_since = None;
            None
        }
    }

    /// The kernel stage and the server socket, once linked.
    fn kernel<'a>(&'a mut self, upstream: &'a Upstream) -> Option<(&'a mut Kernel, &'a TcpStream)> {
        let Stage::Kernel(k) = &mut self.stage else {
            return None;
        };
        Some((k, upstream.server.as_deref()?))
    }

    /// Gives the buffers back (the connection is being dropped).
    pub fn release(&mut self, pool: &mut Pool) {
        self.user.release(pool);
    }
}

fn server_token(upstream: &Upstream) -> usize {
    upstream.server.as_ref().map_or(0, |s| s.token().0)
}

impl Half {
    /// True while bytes this direction's source gave up have not all
    /// entered `dst`, which has room (see [`SockmapRelay::owes_bytes`]).
    fn owes(&self, src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> bool {
        if self.shut {
            return false;
        }
        let Ok(src) = probe::consumed(src.as_raw_fd()) else {
            return false;
        };
        let Ok((entered, outq)) = probe::entered_or_more(dst) else {
            return false;
        };
        let behind = fin_check(
            src.bytes.saturating_sub(self.src_base),
            entered,
            self.dst_base,
        ) == FinCheck::Wait;
        (src.inq > 0 || behind) && probe::has_room(dst, outq).unwrap_or(false)
    }
}

impl Kernel {
    /// Refreshes `moved` both ways from the kernel's counters, and when
    /// anything last moved: bytes taken from either socket, or acknowledged
    /// by either peer (the relay delivering bytes it took earlier is
    /// activity), from the same two calls per socket.
    fn measure(&mut self, a: RawFd, b: RawFd, now: Instant) {
        let mut total = 0u64;
        if let Ok(c) = probe::consumed(a) {
            self.up.moved = c.bytes.saturating_sub(self.up.src_base);
            total = total.wrapping_add(c.bytes).wrapping_add(c.acked);
        }
        if let Ok(c) = probe::consumed(b) {
            self.down.moved = c.bytes.saturating_sub(self.down.src_base);
            total = total.wrapping_add(c.bytes).wrapping_add(c.acked);
        }
        if total != self.seen {
            self.seen = total;
            self.moved_at = now;
            self.owed_since = None;
        }
    }

    /// One look after an event or a timer: errors, FINs to forward, counters.
    fn check(
        &mut self,
        client: &mut TcpStream,
        upstream: &mut Upstream,
        now: Instant,
    ) -> io::Result<Step> {
        let Some(server) = upstream.server.as_deref_mut() else {
            return Ok(Step::Open(0, 0));
        };
        for s in [&*client, &*server] {
            if let Some(e) = s.take_error()? {
                return Err(e);
            }
        }
        let (a, b) = (client.as_raw_fd(), server.as_raw_fd());
        let mut waiting = false;
        waiting |= forward_fin(&mut self.up, &*client, &*server, true)?;
        if self.up.shut {
            self.first_fin.get_or_insert(true);
        }
        waiting |= forward_fin(&mut self.down, &*server, &*client, false)?;
        if self.down.shut {
            self.first_fin.get_or_insert(false);
        }
        self.measure(a, b, now);
        let up = self.up.moved.saturating_sub(self.reported.0);
        let down = self.down.moved.saturating_sub(self.reported.1);
        self.reported = (self.reported.0 + up, self.reported.1 + down);
        if self.up.shut && self.down.shut {
            return Ok(Step::Finished(up, down));
        }
        if waiting {
            self.recheck = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(RECHECK_MAX);
        } else {
            self.recheck = None;
            self.backoff = RECHECK_MIN;
        }
        if now >= self.tick {
            self.tick = now + TICK;
        }
        Ok(Step::Open(up, down))
    }
}

/// Connections reset because the relay still owed bytes at their idle
/// close (this worker): the log says the first and each power of two.
static OWED: AtomicU64 = AtomicU64::new(0);

/// Resets both sockets of a connection closed as idle while the kernel
/// relay still owed bytes after a whole idle period of owing them: the
/// peers see a reset, not a clean end of a stream that lost bytes. The log
/// says so (the first time and at each power of two).
pub fn reset_owed(client: &TcpStream, server: Option<&TcpStream>) {
    for s in std::iter::once(client).chain(server) {
        let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
    }
    let seen = OWED.fetch_add(1, Relaxed) + 1;
    if seen.is_power_of_two() {
        eprintln!(
            "lbctl worker {}: dataplane sockmap: closed as idle while the kernel relay still owed bytes it took a whole idle period ago (its worker did not run): both sides reset ({seen} such connections so far)",
            std::process::id(),
        );
    }
}

/// Connections reset because their byte counts disagreed (this worker):
/// the log says the first and each power of two.
static EXCESS: AtomicU64 = AtomicU64::new(0);

/// Forwards the source's FIN to `dst` once every byte consumed from the
/// source (the client when `from_client`) has entered `dst`'s send queue;
/// true while a FIN waits for that. More bytes in `dst` than left the
/// source would be a kernel relay that duplicated bytes: the stream is
/// corrupt, so both peers get a reset instead of a clean end, and the log
/// says so.
fn forward_fin(
    half: &mut Half,
    src: &TcpStream,
    dst: &TcpStream,
    from_client: bool,
) -> io::Result<bool> {
    if half.shut {
        return Ok(false);
    }
    let probe::Consumed {
        bytes: consumed,
        fin,
        inq,
        ..
    } = probe::consumed(src.as_raw_fd())?;
    if inq > 0 {
        // Bytes left in the receive queue (they came before the link and
        // no later segment ran the verdict): push them through now.
        let _ = crate::bpf::relay::kick(src.as_raw_fd());
    }
    if !fin {
        return Ok(false);
    }
    if inq > 0 {
        return Ok(true);
    }
    let entered = probe::entered(dst.as_raw_fd())?;
    match fin_check(
        consumed.saturating_sub(half.src_base),
        entered,
        half.dst_base,
    ) {
        FinCheck::Wait => return Ok(true),
        FinCheck::Go => {}
        FinCheck::Excess(n) => {
            // A reset that landed since the caller's look leaves a closed
            // socket without its FIN counted: an error, not an excess.
            for s in [src, dst] {
                if let Some(e) = s.take_error()? {
                    return Err(e);
                }
            }
            for s in [src, dst] {
                let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
            }
            let seen = EXCESS.fetch_add(1, Relaxed) + 1;
            if seen.is_power_of_two() {
                let (from, to) = if from_client {
                    ("client", "server")
                } else {
                    ("server", "client")
                };
                eprintln!(
                    "lbctl worker {}: dataplane sockmap: byte counts disagree: {n} bytes more reached the {to} than left the {from} (bytes duplicated by the kernel relay?): both sides reset ({seen} such connections so far)",
                    std::process::id(),
                );
            }
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "kernel relay byte counts disagree",
            ));
        }
    }
    match dst.shutdown(Shutdown::Write) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
        Err(e) => return Err(e),
    }
    half.shut = true;
    half.moved = consumed.saturating_sub(half.src_base);
    Ok(false)
}

/// What a source's FIN may do, from the bytes consumed from the source
/// since the link and the destination's entered bytes and base.
#[derive(Debug, PartialEq, Eq)]
enum FinCheck {
    /// Bytes are still on their way into the destination.
    Wait,
    /// Every byte is in: forward the FIN.
    Go,
    /// More bytes entered the destination than left the source.
    Excess(u64),
}

fn fin_check(consumed: u64, entered: u64, dst_base: u64) -> FinCheck {
    let entered = entered.saturating_sub(dst_base);
    match entered.cmp(&consumed) {
        std::cmp::Ordering::Less => FinCheck::Wait,
        std::cmp::Ordering::Equal => FinCheck::Go,
        std::cmp::Ordering::Greater => FinCheck::Excess(entered - consumed),
    }
}

#[cfg(test)]
mod tests {
    use super::{FinCheck, fin_check};

    #[test]
    fn a_fin_waits_for_its_bytes_goes_when_all_are_in_and_excess_is_caught() {
        assert_eq!(fin_check(100, 1050, 1000), FinCheck::Wait);
        assert_eq!(fin_check(100, 1100, 1000), FinCheck::Go);
        assert_eq!(fin_check(0, 1000, 1000), FinCheck::Go);
        assert_eq!(
            fin_check(100, 131_066 + 1000, 1000),
            FinCheck::Excess(130_966)
        );
        // A destination figure below its base (never, with settled bases)
        // counts as nothing entered yet.
        assert_eq!(fin_check(5, 10, 1000), FinCheck::Wait);
    }
}
