//! Owns the worker's live view of a listen's servers for the balancer
//! ([`LiveView`]): eligibility from the shared region (health, admin state,
//! passive failures, `max_conns`, backup tier, servers already tried for this
//! client) and effective weight (runtime weight, slow start); and the passive
//! failure bookkeeping ([`record_failure`]) that marks a server down for
//! `fail_timeout` after `max_fails` connect failures (nginx semantics).

use crate::balance::{ServerId, ServerView};
use crate::config::{ListenConfig, ServerConfig};
use crate::shm::{ADMIN_ENABLED, HEALTH_UP, MEMBER_DRAINING, MEMBER_EMPTY, Region};
use std::sync::atomic::Ordering::Acquire;
use std::sync::atomic::Ordering::Relaxed;

/// The view of one listen's servers (or of one of its pools) at the moment
/// of one pick. Ids are positions in `servers`; `tried` holds listen-level
/// ids, `offset` apart.
#[derive(Debug)]
pub struct LiveView<'a> {
    region: &'a Region,
    servers: &'a [ServerConfig],
    base: usize,
    offset: usize,
    tried: &'a [ServerId],
    now_ms: u64,
    backup_tier: bool,
}

impl<'a> LiveView<'a> {
    /// A view of all of `listen`'s servers (which start at global index
    /// `base`), excluding `tried`.
    pub fn new(
        region: &'a Region,
        listen: &'a ListenConfig,
        base: usize,
        tried: &'a [ServerId],
        now_ms: u64,
    ) -> LiveView<'a> {
        LiveView::of_pool(region, listen, 0..listen.servers.len(), base, tried, now_ms)
    }

    /// A view of the servers `range` of `listen` (a named pool, or all of
    /// them), excluding `tried` (listen-level ids).
    pub fn of_pool(
        region: &'a Region,
        listen: &'a ListenConfig,
        range: std::ops::Range<usize>,
        base: usize,
        tried: &'a [ServerId],
        now_ms: u64,
    ) -> LiveView<'a> {
        let offset = range.start;
        let servers = listen.servers.get(range).unwrap_or(&[]);
        let mut v = LiveView {
            region,
            servers,
            base: base + offset,
            offset,
            tried,
            now_ms,
            backup_tier: false,
        };
        // A primary that is merely full (max_conns) keeps the primary tier:
        // the client waits in the queue rather than spilling onto backups.
        let primary_usable = (0..servers.len())
            .any(|id| !v.is_backup(id) && v.usable_ignoring_limit(id) && !v.was_tried(id));
        v.backup_tier = !primary_usable;
        v
    }

    /// A backup by the file, or a DNS slot from a higher SRV priority.
    fn is_backup(&self, id: ServerId) -> bool {
        self.servers.get(id).is_some_and(|s| s.backup)
            || self
                .region
                .server(self.base + id)
                .member_backup
                .load(Relaxed)
                == 1
    }

    fn was_tried(&self, id: ServerId) -> bool {
        self.tried.contains(&(self.offset + id))
    }

    /// Up, enabled, not passively down, weight ≥ 1, below `max_conns`.
    pub fn usable(&self, id: ServerId) -> bool {
        self.usable_ignoring_limit(id) && !self.full(id)
    }

    /// Usable but for `max_conns`.
    pub fn usable_ignoring_limit(&self, id: ServerId) -> bool {
        let cell = self.region.server(self.base + id);
        cell.health.load(Relaxed) == HEALTH_UP
            && cell.admin.load(Relaxed) == ADMIN_ENABLED
            && cell.down_until_ms.load(Relaxed) <= self.now_ms
            && cell.weight.load(Relaxed) > 0
            && !matches!(cell.member.load(Acquire), MEMBER_EMPTY | MEMBER_DRAINING)
    }

    /// At its `max_conns`.
    pub fn full(&self, id: ServerId) -> bool {
        match self.servers.get(id).and_then(|s| s.max_conns) {
            Some(max) => self.region.server_active(self.base + id) >= u64::from(max),
            None => false,
        }
    }

    /// True when some server of the current tier would be usable but for
    /// `max_conns`: the connection should wait in the queue.
    pub fn all_full(&self) -> bool {
        (0..self.servers.len()).any(|id| {
            self.is_backup(id) == self.backup_tier
                && !self.was_tried(id)
                && self.usable_ignoring_limit(id)
                && self.full(id)
        })
    }
}

impl ServerView for LiveView<'_> {
    fn len(&self) -> usize {
        self.servers.len()
    }

    fn eligible(&self, id: ServerId) -> bool {
        id < self.servers.len()
            && self.is_backup(id) == self.backup_tier
            && !self.was_tried(id)
            && self.usable(id)
    }

    fn weight(&self, id: ServerId) -> u32 {
        let Some(server) = self.servers.get(id) else {
            return 0;
        };
        let w = self.region.server(self.base + id).weight.load(Relaxed);
        match server.slow_start {
            Some(ramp) if w > 0 => {
                let since = self.region.server(self.base + id).up_since_ms.load(Relaxed);
                let elapsed = self.now_ms.saturating_sub(since);
                let ramp = ramp.as_millis().max(1) as u64;
                if since == 0 || elapsed >= ramp {
                    w
                } else {
                    ((u64::from(w) * elapsed / ramp) as u32).max(1)
                }
            }
            _ => w,
        }
    }

    fn active(&self, id: ServerId) -> u64 {
        self.region.server_active(self.base + id)
    }

    fn ticket(&self) -> Option<u64> {
        Some(u64::from(
            self.region.server(self.base).ticket.fetch_add(1, Relaxed),
        ))
    }
}

/// Counts a connect failure to global server `g`; after `max_fails` within
/// `fail_timeout` the server is passively down for `fail_timeout`.
pub fn record_failure(region: &Region, g: usize, listen: &ListenConfig, now_ms: u64) {
    if listen.max_fails == 0 {
        return;
    }
    let window = listen.fail_timeout.as_millis() as u64;
    let cell = region.server(g);
    let start = cell.fail_window_ms.load(Relaxed);
    let count = if start == 0 || now_ms.saturating_sub(start) > window {
        cell.fail_window_ms.store(now_ms, Relaxed);
        cell.fail_count.store(1, Relaxed);
        1
    } else {
        cell.fail_count.fetch_add(1, Relaxed) + 1
    };
    if count >= listen.max_fails {
        cell.down_until_ms.store(now_ms + window, Relaxed);
        cell.fail_count.store(0, Relaxed);
        cell.fail_window_ms.store(0, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::{ADMIN_DISABLED, HEALTH_DOWN};
    use std::time::Duration;

    fn listen(toml_servers: &str) -> ListenConfig {
        let src = format!(
            "[master]\nworkers = 1\n[[listen]]\nbind = \"127.0.0.1:9\"\nservers = [{toml_servers}]\n"
        );
        let mut cfg = crate::config::parse(&src, std::path::Path::new("/")).expect("config");
        cfg.listens.remove(0)
    }

    fn region_for(l: &ListenConfig) -> Region {
        let r = Region::new(2, l.servers.len()).expect("region");
        for (i, s) in l.servers.iter().enumerate() {
            r.server(i).weight.store(s.weight, Relaxed);
        }
        r
    }

    #[test]
    fn backups_are_eligible_only_when_no_primary_is_usable() {
        let l = listen(r#"{ addr = "127.0.0.1:1" }, { addr = "127.0.0.1:2", backup = true }"#);
        let r = region_for(&l);
        let v = LiveView::new(&r, &l, 0, &[], 1000);
        assert!(v.eligible(0) && !v.eligible(1));
        r.server(0).health.store(HEALTH_DOWN, Relaxed);
        let v = LiveView::new(&r, &l, 0, &[], 1000);
        assert!(!v.eligible(0) && v.eligible(1));
        r.server(0).health.store(HEALTH_UP, Relaxed);
        r.server(0).admin.store(ADMIN_DISABLED, Relaxed);
        let v = LiveView::new(&r, &l, 0, &[], 1000);
        assert!(v.eligible(1), "a disabled primary hands over to the backup");
        // A primary already tried for this client also hands over.
        r.server(0).admin.store(ADMIN_ENABLED, Relaxed);
        let v = LiveView::new(&r, &l, 0, &[0], 1000);
        assert!(!v.eligible(0) && v.eligible(1));
    }

    #[test]
    fn a_full_primary_pool_queues_instead_of_using_backups() {
        let l = listen(
            r#"{ addr = "127.0.0.1:1", max_conns = 2 }, { addr = "127.0.0.1:2", backup = true }"#,
        );
        let r = region_for(&l);
        r.slot_server(0, 0).active.store(1, Relaxed);
        r.slot_server(1, 0).active.store(1, Relaxed);
        let v = LiveView::new(&r, &l, 0, &[], 1000);
        assert!(!v.eligible(0) && !v.eligible(1));
        assert!(v.all_full(), "the client should wait in the queue");
        r.slot_server(1, 0).active.store(0, Relaxed);
        let v = LiveView::new(&r, &l, 0, &[], 1000);
        assert!(v.eligible(0) && !v.all_full());
    }

    #[test]
    fn slow_start_ramps_the_weight_after_a_server_comes_up() {
        let l = listen(r#"{ addr = "127.0.0.1:1", weight = 100, slow_start = "10s" }"#);
        let r = region_for(&l);
        let v = LiveView::new(&r, &l, 0, &[], 50_000);
        assert_eq!(v.weight(0), 100, "never went down: full weight");
        r.server(0).up_since_ms.store(40_000, Relaxed);
        assert_eq!(LiveView::new(&r, &l, 0, &[], 40_000).weight(0), 1);
        assert_eq!(LiveView::new(&r, &l, 0, &[], 42_500).weight(0), 25);
        assert_eq!(LiveView::new(&r, &l, 0, &[], 45_000).weight(0), 50);
        assert_eq!(LiveView::new(&r, &l, 0, &[], 60_000).weight(0), 100);
    }

    #[test]
    fn max_fails_within_fail_timeout_marks_a_server_down_for_fail_timeout() {
        let mut l = listen(r#"{ addr = "127.0.0.1:1" }, { addr = "127.0.0.1:2" }"#);
        l.max_fails = 3;
        l.fail_timeout = Duration::from_secs(10);
        let r = region_for(&l);
        record_failure(&r, 0, &l, 1_000);
        record_failure(&r, 0, &l, 2_000);
        assert!(LiveView::new(&r, &l, 0, &[], 2_000).eligible(0));
        record_failure(&r, 0, &l, 3_000);
        assert!(!LiveView::new(&r, &l, 0, &[], 3_000).eligible(0));
        assert!(!LiveView::new(&r, &l, 0, &[], 12_999).eligible(0));
        assert!(LiveView::new(&r, &l, 0, &[], 13_000).eligible(0));
        // Failures spread wider than the window never add up.
        record_failure(&r, 1, &l, 20_000);
        record_failure(&r, 1, &l, 31_000);
        record_failure(&r, 1, &l, 42_000);
        assert!(LiveView::new(&r, &l, 0, &[], 42_000).eligible(1));
    }
}
