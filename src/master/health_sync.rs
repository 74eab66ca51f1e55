//! Owns applying health results to the shared region: running each
//! generation's checker, handing passive failures over to active checks,
//! flipping server state and logging each transition once.

use super::commands::server_at;
use super::*;

impl Master {
    // ---- health ---------------------------------------------------------

    pub(super) fn run_health(&mut self, now: Instant) {
        let now_ms = shm::now_ms();
        for gi in 0..self.gens.len() {
            if self.gens[gi].retiring {
                continue;
            }
            let mut reports = Vec::new();
            let g = &mut self.gens[gi];
            if let Some(c) = &mut g.checker {
                c.tick(self.poll.registry(), now, &mut reports);
            }
            // Passive failures of checked servers hand over to the check.
            for (idx, l, s) in reload::servers(&g.config) {
                let cell = g.region.server(idx);
                let until = cell.down_until_ms.load(Relaxed);
                if until > now_ms && s.health.is_some() {
                    if let Some(c) = &mut g.checker {
                        c.force(
                            idx,
                            HealthState {
                                up: false,
                                successes: 0,
                                failures: 0,
                            },
                        );
                    }
                    cell.down_until_ms.store(0, Relaxed);
                    if cell.health.swap(HEALTH_DOWN, Relaxed) == HEALTH_UP {
                        g.notes[idx].check = passive_note(l);
                        g.notes[idx].since = now;
                        log(&format!(
                            "server {}/{} is DOWN: {} connect failures within {} (passive check)",
                            l.name,
                            s.label(),
                            l.max_fails,
                            crate::health::human_duration(l.fail_timeout)
                        ));
                    }
                }
            }
            let n = g.number;
            self.apply_reports(n, reports, now);
        }
    }

    pub(super) fn apply_reports(&mut self, number: u64, reports: Vec<Report>, now: Instant) {
        let Some(g) = self.gens.iter_mut().find(|g| g.number == number) else {
            return;
        };
        for r in reports {
            let Some(note) = g.notes.get_mut(r.id) else {
                continue;
            };
            note.check = r.detail.clone();
            note.ok_in_row = r.state.successes;
            note.failed_in_row = r.state.failures;
            let Some(t) = r.transition else {
                continue;
            };
            note.since = now;
            let cell = g.region.server(r.id);
            let (listen, server) = server_at(&g.config, r.id);
            match t {
                Transition::Down => {
                    cell.health.store(HEALTH_DOWN, Relaxed);
                    log(&format!(
                        "server {listen}/{server} is DOWN: {} ({} failed checks)",
                        r.detail, r.state.failures
                    ));
                }
                Transition::Up => {
                    cell.up_since_ms.store(shm::now_ms(), Relaxed);
                    cell.health.store(HEALTH_UP, Relaxed);
                    log(&format!(
                        "server {listen}/{server} is UP: {} ({} passed checks)",
                        r.detail, r.state.successes
                    ));
                }
            }
        }
    }
}

/// What `status` says about a server the passive check marked down.
pub(super) fn passive_note(l: &config::ListenConfig) -> String {
    format!("{} connect failures (passive)", l.max_fails)
}
