//! Owns the shared-memory region of one configuration generation: an
//! anonymous `MAP_SHARED` mapping created by the master before it forks, so
//! the master and every worker of that generation see the same atomics.
//!
//! Layout (all cells `#[repr(C)]`, made only of atomics, valid when zeroed):
//! - one [`ServerCell`] per server (all listens flattened, config order): state
//!   the master owns (health, admin state, runtime weight, up-since) and the
//!   passive-failure window the workers update;
//! - one [`SlotCell`] per worker slot: that worker's counters and heartbeat;
//! - one [`SlotServerCell`] per (slot, server): active / total / failures,
//!   each written by one worker only and summed by readers.
//!
//! This is the one module with `unsafe` for memory: the mapping and the
//! pointer arithmetic that turns it into references.

use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};

/// `ServerCell::health` value: the server passes its checks (or has none).
pub const HEALTH_UP: u32 = 0;
/// `ServerCell::health` value: the server failed its checks.
pub const HEALTH_DOWN: u32 = 1;

/// `ServerCell::admin` value: takes traffic.
pub const ADMIN_ENABLED: u32 = 0;
/// `ServerCell::admin` value: takes no new connections (`server disable`).
pub const ADMIN_DISABLED: u32 = 1;
/// `ServerCell::admin` value: takes no new connections, existing ones finish.
pub const ADMIN_DRAINING: u32 = 2;

/// Per-server state.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ServerCell {
    /// [`HEALTH_UP`] or [`HEALTH_DOWN`]; written by the master.
    pub health: AtomicU32,
    /// [`ADMIN_ENABLED`], [`ADMIN_DISABLED`] or [`ADMIN_DRAINING`]; master.
    pub admin: AtomicU32,
    /// Runtime weight (starts as the configured one); master.
    pub weight: AtomicU32,
    /// Monotonic ms when the server last came up (slow start); master.
    pub up_since_ms: AtomicU64,
    /// Start of the current passive-failure window (monotonic ms); workers.
    pub fail_window_ms: AtomicU64,
    /// Connect failures in the current window; workers.
    pub fail_count: AtomicU32,
    /// Global round-robin ticket for this listen (first server's cell); workers.
    pub ticket: AtomicU32,
    /// Passively marked down until this monotonic ms (0 = not); workers.
    pub down_until_ms: AtomicU64,
    /// Connections refused because every server and the queue were full
    /// (first server's cell); workers.
    pub refused: AtomicU64,
    /// Connections refused by the per-client limits (first server's cell);
    /// workers.
    pub limited: AtomicU64,
    /// PROXY headers accepted (`accept_proxy`; first server's cell); workers.
    pub proxy_accepted: AtomicU64,
    /// Connections closed for their PROXY header, by reason: invalid,
    /// timeout, closed before it was complete (first server's cell); workers.
    pub proxy_refused: [AtomicU64; 3],
    /// The listen's data plane as its workers found it (first server's
    /// cell; 0 = not reported): see `worker::sockmap::plane`; workers.
    pub dataplane: AtomicU32,
    /// A slot of a DNS entry: [`MEMBER_STATIC`] (not one), [`MEMBER_EMPTY`],
    /// [`MEMBER_ACTIVE`] or [`MEMBER_DRAINING`]; master. Stored with
    /// `Release` after the address, so a worker that loads it with
    /// `Acquire` and sees ACTIVE reads a complete address.
    pub member: AtomicU32,
    /// 1 when the slot's SRV priority makes it a backup; master.
    pub member_backup: AtomicU32,
    /// Monotonic ms of the slot's last state change; master.
    pub member_since_ms: AtomicU64,
    /// The slot's address: IP bytes (IPv4 in the first 4), big endian; master.
    pub member_ip: [AtomicU64; 2],
    /// The slot's port, plus `1 << 16` for IPv6; master.
    pub member_port: AtomicU32,
}

/// `ServerCell::member`: a server from the file, not a DNS slot.
pub const MEMBER_STATIC: u32 = 0;
/// `ServerCell::member`: a DNS slot without an address.
pub const MEMBER_EMPTY: u32 = 1;
/// `ServerCell::member`: a DNS slot with an address, taking connections.
pub const MEMBER_ACTIVE: u32 = 2;
/// `ServerCell::member`: a DNS slot whose address left the answer: its
/// connections finish, it takes no new ones.
pub const MEMBER_DRAINING: u32 = 3;

impl ServerCell {
    /// Writes a DNS slot's address (the master, only while no worker may
    /// pick the slot: empty, or the same address).
    pub fn set_member_addr(&self, addr: std::net::SocketAddr) {
        let (bytes, v6) = match addr.ip() {
            std::net::IpAddr::V4(ip) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&ip.octets());
                (b, 0)
            }
            std::net::IpAddr::V6(ip) => (ip.octets(), 1u32 << 16),
        };
        let mut hi = [0u8; 8];
        let mut lo = [0u8; 8];
        hi.copy_from_slice(&bytes[..8]);
        lo.copy_from_slice(&bytes[8..]);
        self.member_ip[0].store(u64::from_be_bytes(hi), Relaxed);
        self.member_ip[1].store(u64::from_be_bytes(lo), Relaxed);
        self.member_port.store(u32::from(addr.port()) | v6, Relaxed);
    }

    /// A DNS slot's address (`None`: a static server or an empty slot).
    pub fn member_addr(&self) -> Option<std::net::SocketAddr> {
        let state = self.member.load(std::sync::atomic::Ordering::Acquire);
        if state == MEMBER_STATIC || state == MEMBER_EMPTY {
            return None;
        }
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.member_ip[0].load(Relaxed).to_be_bytes());
        bytes[8..].copy_from_slice(&self.member_ip[1].load(Relaxed).to_be_bytes());
        let port = self.member_port.load(Relaxed);
        let ip = if port >> 16 == 1 {
            std::net::IpAddr::from(bytes)
        } else {
            std::net::IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
        };
        Some(std::net::SocketAddr::new(ip, port as u16))
    }
}

/// Per-worker-slot counters.
#[repr(C)]
#[derive(Debug, Default)]
pub struct SlotCell {
    /// Pid of the worker serving the slot (0 = none); master.
    pub pid: AtomicU32,
    /// 1 once the worker accepts, 2 while it drains; worker.
    pub phase: AtomicU32,
    /// Monotonic ms of the worker's last loop turn; worker.
    pub heartbeat_ms: AtomicU64,
    /// Open client connections; worker.
    pub active: AtomicU64,
    /// Client connections accepted; worker.
    pub total: AtomicU64,
    /// Bytes from clients to servers; worker.
    pub bytes_in: AtomicU64,
    /// Bytes from servers to clients; worker.
    pub bytes_out: AtomicU64,
    /// Connections that ended in an error (no server, connect failed, reset); worker.
    pub errors: AtomicU64,
    /// HTTP requests answered (by a server or by lbctl); worker.
    pub requests: AtomicU64,
    /// HTTP responses by class: 1xx, 2xx, 3xx, 4xx, 5xx; worker.
    pub classes: [AtomicU64; 5],
    /// HTTP requests sent over a pooled (reused) server connection; worker.
    pub reused: AtomicU64,
    /// HTTP requests sent again to another server after a server failed; worker.
    pub retries: AtomicU64,
    /// Access-log lines dropped (the writer fell behind or a write failed);
    /// the worker and its log writer thread.
    pub access_dropped: AtomicU64,
}

/// Per-(slot, server) counters; one writer each (the slot's worker).
#[repr(C)]
#[derive(Debug, Default)]
pub struct SlotServerCell {
    /// Connections to the server in progress or relaying.
    pub active: AtomicU64,
    /// Connections dispatched to the server.
    pub total: AtomicU64,
    /// Failed connects to the server.
    pub failures: AtomicU64,
    /// Clients this worker holds in the listen's queue (only the listen's
    /// first server's cell is used).
    pub queued: AtomicU64,
    /// HTTP responses from this server.
    pub requests: AtomicU64,
    /// HTTP responses from this server by class: 1xx … 5xx.
    pub classes: [AtomicU64; 5],
    /// HTTP answers lbctl gave itself for the listen by class (only the
    /// listen's first server's cell is used).
    pub local_classes: [AtomicU64; 5],
}

/// The index of an HTTP status's class in `classes` (1xx → 0 … 5xx → 4).
pub fn status_class(status: u16) -> usize {
    usize::from((status / 100).clamp(1, 5) - 1)
}

/// Per-(slot, listen, bucket) client-address cell of the per-client limits
/// (`max_conns_per_client`, `rate`); one writer each (the slot's worker),
/// summed over slots by readers, zeroed with its slot when a worker dies.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ClientCell {
    /// Hash of the client address (0 = free).
    pub key: AtomicU64,
    /// Open connections of that client in this slot.
    pub active: AtomicU32,
    /// Connections accepted in window `window`.
    pub window_count: AtomicU32,
    /// The rate window (monotonic ms / `per`) `window_count` counts.
    pub window: AtomicU64,
}

/// Client cells per (slot, listen): a power of two (open addressing).
pub const CLIENT_BUCKETS: usize = 1024;

/// One generation's shared region.
#[derive(Debug)]
pub struct Region {
    base: NonNull<u8>,
    len: usize,
    slots: usize,
    servers: usize,
    listens: usize,
}

// SAFETY: the region holds only atomics; sharing references across threads is
// as safe as sharing `&AtomicU64`.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

/// Why a region could not be created.
#[derive(Debug)]
pub struct ShmError(pub nix::Error);

impl std::fmt::Display for ShmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot map shared memory: {}", self.0)
    }
}

impl std::error::Error for ShmError {}

impl Region {
    /// Maps a zeroed region for `slots` worker slots and `servers` servers
    /// (no per-client tables).
    pub fn new(slots: usize, servers: usize) -> Result<Region, ShmError> {
        Region::with_clients(slots, servers, 0)
    }

    /// Maps a zeroed region for `slots` worker slots, `servers` servers and
    /// the per-client tables of `listens` listens.
    pub fn with_clients(slots: usize, servers: usize, listens: usize) -> Result<Region, ShmError> {
        let len = servers * size_of::<ServerCell>()
            + slots * size_of::<SlotCell>()
            + slots * servers * size_of::<SlotServerCell>()
            + slots * listens * CLIENT_BUCKETS * size_of::<ClientCell>();
        let size = NonZeroUsize::new(len.max(1)).unwrap_or(NonZeroUsize::MIN);
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .map_err(ShmError)?;
        Ok(Region {
            base: ptr.cast(),
            len: size.get(),
            slots,
            servers,
            listens,
        })
    }

    fn clients_off(&self) -> usize {
        self.slot_servers_off() + self.slots * self.servers * size_of::<SlotServerCell>()
    }

    /// Client cell `bucket` of listen `listen` in slot `k`; `None` when the
    /// region has no such table.
    pub fn client(&self, k: usize, listen: usize, bucket: usize) -> Option<&ClientCell> {
        if k >= self.slots || listen >= self.listens || bucket >= CLIENT_BUCKETS {
            return None;
        }
        let idx = (k * self.listens + listen) * CLIENT_BUCKETS + bucket;
        // SAFETY: idx is in bounds (checked above), the offset lies inside
        // the mapping sized in `with_clients`, ClientCell is #[repr(C)] made
        // of atomics (valid when zeroed) and aligned (every cell size is a
        // multiple of 8 and the mapping is page-aligned).
        Some(unsafe {
            &*self
                .base
                .as_ptr()
                .add(self.clients_off() + idx * size_of::<ClientCell>())
                .cast::<ClientCell>()
        })
    }

    fn slots_off(&self) -> usize {
        self.servers * size_of::<ServerCell>()
    }

    fn slot_servers_off(&self) -> usize {
        self.slots_off() + self.slots * size_of::<SlotCell>()
    }

    /// Number of worker slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Number of servers (all listens).
    pub fn servers(&self) -> usize {
        self.servers
    }

    /// The cell of server `i` (global index). Panics if out of range, which
    /// is a programming error (indices come from the same config).
    pub fn server(&self, i: usize) -> &ServerCell {
        assert!(i < self.servers, "server index out of range");
        // SAFETY: in bounds (checked above), suitably aligned (the mapping is
        // page-aligned and every cell size is a multiple of 8), zero is a
        // valid bit pattern for atomics, and the mapping lives as long as self.
        unsafe { &*self.base.as_ptr().add(i * size_of::<ServerCell>()).cast() }
    }

    /// The counters of worker slot `k`.
    pub fn slot(&self, k: usize) -> &SlotCell {
        assert!(k < self.slots, "slot index out of range");
        // SAFETY: as in `server`.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(self.slots_off() + k * size_of::<SlotCell>())
                .cast()
        }
    }

    /// The counters of worker slot `k` for server `i`.
    pub fn slot_server(&self, k: usize, i: usize) -> &SlotServerCell {
        assert!(
            k < self.slots && i < self.servers,
            "cell index out of range"
        );
        let idx = k * self.servers + i;
        // SAFETY: as in `server`.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(self.slot_servers_off() + idx * size_of::<SlotServerCell>())
                .cast()
        }
    }

    /// One counter of server `i`, summed over all slots.
    fn sum_over_slots(&self, i: usize, field: impl Fn(&SlotServerCell) -> &AtomicU64) -> u64 {
        (0..self.slots)
            .map(|k| field(self.slot_server(k, i)).load(Relaxed))
            .sum()
    }

    /// Active connections to server `i`, summed over all slots.
    pub fn server_active(&self, i: usize) -> u64 {
        self.sum_over_slots(i, |c| &c.active)
    }

    /// Total connections dispatched to server `i`, summed over all slots.
    pub fn server_total(&self, i: usize) -> u64 {
        self.sum_over_slots(i, |c| &c.total)
    }

    /// Clients queued on the listen whose first server is `i`, all slots.
    pub fn server_queued(&self, i: usize) -> u64 {
        self.sum_over_slots(i, |c| &c.queued)
    }

    /// Failed connects to server `i`, summed over all slots.
    pub fn server_failures(&self, i: usize) -> u64 {
        self.sum_over_slots(i, |c| &c.failures)
    }

    /// HTTP responses from server `i`, summed over all slots.
    pub fn server_requests(&self, i: usize) -> u64 {
        self.sum_over_slots(i, |c| &c.requests)
    }

    /// HTTP responses of class `class` (0 = 1xx … 4 = 5xx) from server `i`,
    /// or lbctl's own answers for the listen whose first server is `i`.
    pub fn server_class(&self, i: usize, class: usize, local: bool) -> u64 {
        let class = class.min(4);
        if local {
            self.sum_over_slots(i, |c| &c.local_classes[class])
        } else {
            self.sum_over_slots(i, |c| &c.classes[class])
        }
    }

    /// Forgets the live state of a slot whose worker died: its connections
    /// are gone, so its active counts must not skew least-connections.
    pub fn reset_slot(&self, k: usize) {
        let slot = self.slot(k);
        slot.active.store(0, Relaxed);
        slot.phase.store(0, Relaxed);
        slot.pid.store(0, Relaxed);
        for i in 0..self.servers {
            let cell = self.slot_server(k, i);
            cell.active.store(0, Relaxed);
            cell.queued.store(0, Relaxed);
        }
        for l in 0..self.listens {
            for b in 0..CLIENT_BUCKETS {
                if let Some(c) = self.client(k, l, b) {
                    c.active.store(0, Relaxed);
                }
            }
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: base/len describe the mapping made in `new`; no reference
        // into it outlives `self` (they all borrow `self`).
        let _ = unsafe { munmap(self.base.cast(), self.len) };
    }
}

/// Milliseconds on CLOCK_MONOTONIC: comparable across processes (unlike
/// `Instant`), cheap (vDSO).
pub fn now_ms() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => (ts.tv_sec() as u64) * 1000 + (ts.tv_nsec() as u64) / 1_000_000,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_cells_are_distinct_and_zeroed() {
        let r = Region::new(3, 4).expect("map");
        assert_eq!(r.server(3).health.load(Relaxed), HEALTH_UP);
        r.slot_server(2, 3).active.store(7, Relaxed);
        r.slot_server(0, 3).active.store(1, Relaxed);
        r.slot(2).total.store(9, Relaxed);
        r.server(0).weight.store(5, Relaxed);
        assert_eq!(r.server_active(3), 8);
        assert_eq!(r.server_active(2), 0);
        assert_eq!(r.slot(1).total.load(Relaxed), 0);
        assert_eq!(r.server(1).weight.load(Relaxed), 0);
        r.reset_slot(2);
        assert_eq!(r.server_active(3), 1);
        assert_eq!(r.slot(2).total.load(Relaxed), 9);
    }

    #[test]
    fn a_member_address_round_trips_and_hides_while_empty() {
        let r = Region::new(1, 2).expect("map");
        let cell = r.server(1);
        assert_eq!(cell.member_addr(), None, "static");
        for a in ["127.0.0.3:8080", "[2001:db8::7]:53"] {
            let addr: std::net::SocketAddr = a.parse().expect("addr");
            cell.member.store(MEMBER_EMPTY, Relaxed);
            cell.set_member_addr(addr);
            assert_eq!(cell.member_addr(), None, "empty");
            cell.member.store(MEMBER_ACTIVE, Relaxed);
            assert_eq!(cell.member_addr(), Some(addr));
        }
    }

    #[test]
    fn region_is_shared_with_a_forked_child() {
        let r = Region::new(1, 1).expect("map");
        // SAFETY: the child only stores to an atomic and calls _exit.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                r.slot(0).total.store(42, Relaxed);
                // SAFETY: _exit is async-signal-safe and skips test harness teardown.
                unsafe { nix::libc::_exit(0) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                let _ = nix::sys::wait::waitpid(child, None);
                assert_eq!(r.slot(0).total.load(Relaxed), 42);
            }
        }
    }
}
