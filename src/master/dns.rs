//! Owns servers found by DNS on the master's side: starting the resolver
//! thread (only when a config has a `resolve` entry), giving it each
//! generation's lookups, and applying every outcome to the generations'
//! DNS slots in the shared region without a reload — new addresses fill
//! empty slots, gone ones drain and are emptied once their connections are
//! done, health checks follow the slots' addresses. A failed or empty answer
//! keeps the last good set and is logged (at most once a minute per entry
//! while it keeps failing, and once when it recovers). The entries' state is
//! what `status` and `/metrics` show.

use super::ratelog::RateLog;
use super::{Master, log};
use crate::config::{Config, Lookup};
use crate::resolve::slots::{Change, SlotState, assign};
use crate::resolve::{Member, Outcome, Plan, Resolver};
use crate::shm::{
    self, ADMIN_ENABLED, HEALTH_UP, MEMBER_ACTIVE, MEMBER_DRAINING, MEMBER_EMPTY, Region,
};
use crate::stats::DnsRow;
use mio::Waker;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::time::{Duration, Instant, SystemTime};

/// A drained slot is emptied (and may take another address) only after it
/// drained this long with no connection left, so a worker that picked it
/// just before it drained never connects to a new address by mistake.
const EMPTY_AFTER: Duration = Duration::from_secs(1);

/// Failures of an entry are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The state of one lookup (shared by every entry that asks it).
#[derive(Debug, Clone)]
pub struct EntryState {
    /// The last good answer (kept while lookups fail or come back empty).
    pub members: Vec<Member>,
    /// When the last lookup finished, and whether it was good.
    pub last: Option<(SystemTime, bool)>,
    /// The last failure's words ("" after a good answer).
    pub error: String,
    /// Lookups that failed (or were empty), since the master started.
    pub failures: u64,
    /// Members that found no free slot in the last good answer.
    pub overflow: usize,
    /// Its failure lines: the first after a good answer at once, then at
    /// most one per [`LOG_EVERY`].
    failure_log: RateLog,
}

impl Default for EntryState {
    fn default() -> EntryState {
        EntryState {
            members: Vec::new(),
            last: None,
            error: String::new(),
            failures: 0,
            overflow: 0,
            failure_log: RateLog::every(LOG_EVERY),
        }
    }
}

/// The master's DNS bookkeeping.
#[derive(Debug, Default)]
pub struct Dns {
    resolver: Option<Resolver>,
    waker: Option<Arc<Waker>>,
    /// Per lookup.
    pub entries: HashMap<Lookup, EntryState>,
    plan: Option<Plan>,
}

/// Every DNS entry of `config`: (listen index, first global server index of
/// its slots, the slots' count, the lookup).
pub fn entries(config: &Config) -> Vec<(usize, usize, usize, Lookup)> {
    let mut out = Vec::new();
    let mut g = 0;
    for (li, l) in config.listens.iter().enumerate() {
        for s in &l.servers {
            if let Some(d) = &s.dns
                && d.nth == 0
            {
                out.push((li, g, d.spec.max, d.spec.lookup.clone()));
            }
            g += 1;
        }
    }
    out
}

fn plan_of(configs: &[&Config]) -> Plan {
    let mut lookups: Vec<(Lookup, Duration)> = Vec::new();
    for c in configs {
        for l in &c.listens {
            for s in &l.servers {
                let Some(d) = &s.dns else { continue };
                match lookups.iter_mut().find(|(k, _)| *k == d.spec.lookup) {
                    Some((_, every)) => *every = (*every).min(d.spec.every),
                    None => lookups.push((d.spec.lookup.clone(), d.spec.every)),
                }
            }
        }
    }
    let resolver = configs
        .last()
        .map(|c| c.resolver.clone())
        .unwrap_or_default();
    Plan {
        lookups,
        nameservers: resolver.nameservers,
        timeout: resolver.timeout,
    }
}

fn slot_state(cell: &shm::ServerCell) -> SlotState {
    match (cell.member.load(Relaxed), cell.member_addr()) {
        (MEMBER_ACTIVE, Some(a)) => SlotState::Active(a),
        (MEMBER_DRAINING, Some(a)) => SlotState::Draining(a),
        _ => SlotState::Empty,
    }
}

impl Master {
    /// Gives the resolver the lookups of the live generations (starting the
    /// thread the first time there is one) and fills new generations' slots
    /// from the last good answers. Called at start and after each reload.
    pub(super) fn dns_sync(&mut self, now: Instant) {
        let configs: Vec<&Config> = self
            .gens
            .iter()
            .filter(|g| !g.retiring)
            .map(|g| g.config.as_ref())
            .collect();
        let plan = plan_of(&configs);
        if plan.lookups.is_empty() && self.dns.resolver.is_none() {
            return;
        }
        if self.dns.resolver.is_none() {
            let waker = match Waker::new(self.poll.registry(), super::tokens::DNS_WAKE) {
                Ok(w) => Arc::new(w),
                Err(e) => return log(&format!("dns: cannot make the resolver's waker: {e}")),
            };
            let w = waker.clone();
            match Resolver::spawn(Arc::new(move || {
                let _ = w.wake();
            })) {
                Ok(r) => self.dns.resolver = Some(r),
                Err(e) => return log(&format!("dns: cannot start the resolver thread: {e}")),
            }
            self.dns.waker = Some(waker);
        }
        if self.dns.plan.as_ref() != Some(&plan) {
            if let Some(r) = &self.dns.resolver {
                r.set_plan(plan.clone());
            }
            self.dns.plan = Some(plan);
        }
        let known: Vec<(Lookup, Vec<Member>)> = self
            .dns
            .entries
            .iter()
            .filter(|(_, e)| !e.members.is_empty())
            .map(|(l, e)| (l.clone(), e.members.clone()))
            .collect();
        for (lookup, members) in known {
            self.dns_apply(&lookup, &members, now);
        }
    }

    /// Takes every outcome the resolver has sent.
    pub(super) fn on_dns(&mut self, now: Instant) {
        let outcomes: Vec<Outcome> = match &self.dns.resolver {
            Some(r) => r.outcomes.try_iter().collect(),
            None => return,
        };
        for o in outcomes {
            self.dns_outcome(o, now);
        }
    }

    fn dns_outcome(&mut self, o: Outcome, now: Instant) {
        let name = o.lookup.text();
        let e = self.dns.entries.entry(o.lookup.clone()).or_default();
        let failure = match &o.result {
            Ok(m) if m.is_empty() => Some("empty answer".to_string()),
            Ok(_) => None,
            Err(why) => Some(why.clone()),
        };
        match failure {
            Some(why) => {
                e.last = Some((o.at, false));
                e.failures += 1;
                e.error = why.clone();
                let kept = e.members.len();
                e.failure_log.log(now, || {
                    format!(
                        "dns: lookup of {name} failed: {why}; keeping the last good set ({kept} addresses)"
                    )
                });
            }
            None => {
                let Ok(members) = o.result else { return };
                if e.last.is_some_and(|(_, ok)| !ok) {
                    log(&format!("dns: lookup of {name} answers again"));
                }
                let changed = e.members != members;
                e.last = Some((o.at, true));
                e.error.clear();
                e.failure_log = RateLog::every(LOG_EVERY);
                if changed {
                    let list: Vec<String> = members.iter().map(|m| m.addr.to_string()).collect();
                    log(&format!("dns: {name} is {}", list.join(", ")));
                    e.members = members.clone();
                }
                self.dns_apply(&o.lookup, &members, now);
            }
        }
    }

    /// Maps `members` onto the slots of every entry asking `lookup`.
    fn dns_apply(&mut self, lookup: &Lookup, members: &[Member], now: Instant) {
        let mut overflow = 0;
        for g in self.gens.iter_mut().filter(|g| !g.retiring) {
            for (li, first, max, l) in entries(&g.config) {
                if l != *lookup {
                    continue;
                }
                let region = g.region.clone();
                let states: Vec<SlotState> = (first..first + max)
                    .map(|i| slot_state(region.server(i)))
                    .collect();
                let (changes, over) = assign(&states, members);
                overflow = overflow.max(over);
                let listen = &g.config.listens[li];
                for c in changes {
                    let (i, member) = match c {
                        Change::Drain(i) => {
                            let cell = region.server(first + i);
                            cell.member.store(MEMBER_DRAINING, Release);
                            cell.member_since_ms.store(shm::now_ms(), Relaxed);
                            continue;
                        }
                        Change::Keep(i, m) | Change::Fill(i, m) => (i, m),
                    };
                    let gi = first + i;
                    let cell = region.server(gi);
                    let server = &listen.servers[gi - first_of_listen(&g.config, li)];
                    // An SRV weight follows the records; an A/AAAA slot keeps
                    // a runtime `server weight` until its address changes.
                    if let Some(w) = member.weight {
                        cell.weight.store(w, Relaxed);
                    }
                    cell.member_backup.store(u32::from(member.backup), Relaxed);
                    if cell.member.load(Relaxed) == MEMBER_EMPTY {
                        // A new address: the slot's runtime state starts over.
                        cell.weight
                            .store(member.weight.unwrap_or(server.weight), Relaxed);
                        cell.admin.store(ADMIN_ENABLED, Relaxed);
                        cell.set_member_addr(member.addr);
                        cell.health.store(HEALTH_UP, Relaxed);
                        cell.down_until_ms.store(0, Relaxed);
                        cell.up_since_ms.store(0, Relaxed);
                        if let Some(c) = &mut g.checker {
                            c.retarget(self.poll.registry(), gi, Some(member.addr), now);
                        }
                        if let Some(n) = g.notes.get_mut(gi) {
                            n.since = now;
                            n.check = if server.health.is_some() {
                                "not checked yet".into()
                            } else {
                                "no check".into()
                            };
                        }
                    }
                    if cell.member.load(Relaxed) != MEMBER_ACTIVE {
                        cell.member.store(MEMBER_ACTIVE, Release);
                        cell.member_since_ms.store(shm::now_ms(), Relaxed);
                    }
                }
            }
        }
        if let Some(e) = self.dns.entries.get_mut(lookup) {
            if overflow > 0 && e.overflow != overflow {
                log(&format!(
                    "dns: {} has {overflow} addresses more than its max slots; raise max",
                    lookup.text()
                ));
            }
            e.overflow = overflow;
        }
    }

    /// Empties drained slots with no connection left (each turn).
    pub(super) fn dns_tick(&mut self, now: Instant) {
        if self.dns.resolver.is_none() {
            return;
        }
        let now_ms = shm::now_ms();
        for g in self.gens.iter_mut() {
            for (_, first, max, _) in entries(&g.config) {
                for gi in first..first + max {
                    let cell = g.region.server(gi);
                    if cell.member.load(Relaxed) == MEMBER_DRAINING
                        && now_ms.saturating_sub(cell.member_since_ms.load(Relaxed))
                            >= EMPTY_AFTER.as_millis() as u64
                        && g.region.server_active(gi) == 0
                    {
                        cell.member.store(MEMBER_EMPTY, Release);
                        cell.member_since_ms.store(now_ms, Relaxed);
                        if let Some(c) = &mut g.checker {
                            c.retarget(self.poll.registry(), gi, None, now);
                        }
                    }
                }
            }
        }
    }

    /// One row per DNS entry of `config` (the serving one), for status.
    pub(super) fn dns_rows(&self, config: &Config, region: &Region) -> Vec<DnsRow> {
        entries(config)
            .into_iter()
            .map(|(li, first, max, lookup)| {
                let e = self.dns.entries.get(&lookup).cloned().unwrap_or_default();
                let addresses = (first..first + max)
                    .filter_map(|i| match slot_state(region.server(i)) {
                        SlotState::Active(a) => Some(a.to_string()),
                        _ => None,
                    })
                    .collect();
                let draining = (first..first + max)
                    .filter_map(|i| match slot_state(region.server(i)) {
                        SlotState::Draining(a) => Some(a.to_string()),
                        _ => None,
                    })
                    .collect();
                DnsRow {
                    listen: config.listens[li].name.clone(),
                    name: lookup.text(),
                    kind: match lookup {
                        Lookup::Host { .. } => "a".into(),
                        Lookup::Srv { .. } => "srv".into(),
                    },
                    max,
                    last_resolve: e.last.and_then(|(t, _)| {
                        t.duration_since(SystemTime::UNIX_EPOCH)
                            .ok()
                            .map(|d| d.as_secs())
                    }),
                    result: match e.last {
                        None => "pending".into(),
                        Some((_, true)) => "ok".into(),
                        Some((_, false)) => format!("failed: {}", e.error),
                    },
                    failures: e.failures,
                    addresses,
                    draining,
                }
            })
            .collect()
    }
}

/// The global index of listen `li`'s first server.
fn first_of_listen(config: &Config, li: usize) -> usize {
    config.listens[..li].iter().map(|l| l.servers.len()).sum()
}
