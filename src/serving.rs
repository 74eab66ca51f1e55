//! Owns the verdict of `lbctl status --check` (for keepalived's
//! `track_script`): whether a [`Status`] snapshot says this balancer serves —
//! the master runs, every worker of the serving generation accepts, and every
//! listen has a usable server — decided by the pure [`verdict`], worded in one
//! line, with its exit code (0 serving, 1 not serving; "not running" never gets
//! this far and keeps its own code, 2).

use crate::stats::{ListenRow, Status};
use std::fmt;
use std::process::ExitCode;

/// At most this many problems are named; the rest are counted.
const MAX_NAMED: usize = 3;

/// What `status --check` concludes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Serving: every worker of the serving generation runs, every listen
    /// has a usable server.
    Serving {
        /// Running workers of the serving generation.
        workers: usize,
        /// Listens of the serving generation.
        listens: usize,
    },
    /// Not serving, with every problem found (in words, most basic first).
    NotServing(Vec<String>),
}

impl Verdict {
    /// 0 when serving, 1 when not.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Verdict::Serving { .. } => ExitCode::SUCCESS,
            Verdict::NotServing(_) => ExitCode::from(1),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Serving { workers, listens } => write!(
                f,
                "ok: {workers} worker{}, {listens} listen{} serving",
                plural(*workers),
                plural(*listens)
            ),
            Verdict::NotServing(problems) => {
                let named = problems.len().min(MAX_NAMED);
                write!(f, "not serving: {}", problems[..named].join("; "))?;
                if problems.len() > named {
                    write!(f, "; and {} more", problems.len() - named)?;
                }
                Ok(())
            }
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Decides from one snapshot. A worker must be `running` (`busy` — its loop
/// has not turned for 3s — and `starting`/`restarting` are not); only the
/// serving generation counts, so a reload in progress or old workers still
/// draining do not matter. A server is usable when it is `up` (healthy,
/// enabled, not passively down) with a weight above 0, as the workers judge
/// eligibility (`worker::view`); a backup counts, a server merely at its
/// `max_conns` counts (clients queue).
pub fn verdict(s: &Status) -> Verdict {
    let mut problems = Vec::new();
    if s.phase != "running" && s.phase != "reloading" {
        problems.push(format!("master is {}", s.phase));
    }
    let mut serving: Vec<_> = s
        .workers
        .iter()
        .filter(|w| w.generation == s.generation)
        .collect();
    serving.sort_by_key(|w| w.slot);
    for w in &serving {
        if w.state != "running" {
            problems.push(format!("worker slot {} is {}", w.slot, w.state));
        }
    }
    let running = serving.iter().filter(|w| w.state == "running").count();
    if serving.len() < s.workers_configured {
        problems.push(format!(
            "{running} of {} workers running",
            s.workers_configured
        ));
    }
    if s.listens.is_empty() {
        problems.push("no listen in the serving generation".to_string());
    }
    for l in &s.listens {
        if let Some(why) = unusable(l) {
            problems.push(format!("listen {} has no usable server ({why})", l.name));
        }
    }
    if problems.is_empty() {
        Verdict::Serving {
            workers: running,
            listens: s.listens.len(),
        }
    } else {
        Verdict::NotServing(problems)
    }
}

/// `None` when some server of `l` is usable, else why none is, counted by
/// state (`2 down, 1 disabled`, `1 weight 0`).
fn unusable(l: &ListenRow) -> Option<String> {
    if l.servers.iter().any(|s| s.state == "up" && s.weight > 0) {
        return None;
    }
    if l.servers.is_empty() {
        return Some("no servers".to_string());
    }
    let mut counts: Vec<(String, usize)> = Vec::new();
    for srv in &l.servers {
        let why = if srv.state == "up" {
            "weight 0".to_string()
        } else {
            srv.state.clone()
        };
        match counts.iter_mut().find(|(w, _)| *w == why) {
            Some((_, n)) => *n += 1,
            None => counts.push((why, 1)),
        }
    }
    let words: Vec<String> = counts.iter().map(|(w, n)| format!("{n} {w}")).collect();
    Some(words.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Classes, ServerRow, WorkerRow};

    fn worker(slot: usize, generation: u64, state: &str) -> WorkerRow {
        WorkerRow {
            slot,
            pid: if state == "restarting" {
                0
            } else {
                100 + slot as u32
            },
            generation,
            state: state.into(),
            memory_kb: 0,
            active: 0,
            total: 0,
            bytes_in: 0,
            bytes_out: 0,
            errors: 0,
            restarts: 0,
            requests: 0,
            responses: Classes::default(),
            reused: 0,
            access_log_dropped: 0,
            retries: 0,
        }
    }

    fn server(port: u16, state: &str, weight: u32, backup: bool) -> ServerRow {
        let addr = format!("127.0.0.1:{port}");
        ServerRow {
            name: addr.clone(),
            addr,
            state: state.into(),
            check: String::new(),
            since_secs: 0,
            checks_ok: 0,
            checks_failed: 0,
            weight,
            backup,
            active: 0,
            total: 0,
            failures: 0,
            pool: None,
            requests: 0,
            responses: Classes::default(),
        }
    }

    fn listen(name: &str, servers: Vec<ServerRow>) -> ListenRow {
        ListenRow {
            name: name.into(),
            bind: "127.0.0.1:8080".into(),
            balance: "round_robin".into(),
            queued: 0,
            refused: 0,
            limited: 0,
            proxy: None,
            mode: "tcp".into(),
            requests: 0,
            responses: Classes::default(),
            local: Classes::default(),
            dataplane: String::new(),
            servers,
            tls_certificates: Vec::new(),
        }
    }

    /// Generation 2 serving with two running workers and two listens whose
    /// servers are all up.
    fn healthy() -> Status {
        Status {
            dns: Vec::new(),
            version: "0.1.0".into(),
            master_pid: 10,
            generation: 2,
            phase: "running".into(),
            uptime_secs: 5,
            config: "/etc/lbctl/lbctl.toml".into(),
            workers_configured: 2,
            workers: vec![worker(1, 2, "running"), worker(0, 2, "running")],
            listens: vec![
                listen(
                    "web",
                    vec![server(1, "up", 1, false), server(2, "up", 1, false)],
                ),
                listen("api", vec![server(3, "up", 1, false)]),
            ],
        }
    }

    fn line(s: &Status) -> String {
        verdict(s).to_string()
    }

    #[test]
    fn a_healthy_snapshot_is_serving() {
        let s = healthy();
        assert_eq!(
            verdict(&s),
            Verdict::Serving {
                workers: 2,
                listens: 2
            }
        );
        assert_eq!(line(&s), "ok: 2 workers, 2 listens serving");
        assert_eq!(verdict(&s).exit_code(), ExitCode::SUCCESS);
    }

    #[test]
    fn one_worker_one_listen_is_singular() {
        let mut s = healthy();
        s.workers_configured = 1;
        s.workers.truncate(1);
        s.listens.truncate(1);
        assert_eq!(line(&s), "ok: 1 worker, 1 listen serving");
    }

    #[test]
    fn a_listen_whose_servers_are_all_down_is_not_serving() {
        let mut s = healthy();
        s.listens[0].servers = vec![server(1, "down", 1, false), server(2, "down", 1, false)];
        let v = verdict(&s);
        assert_eq!(v.exit_code(), ExitCode::from(1));
        assert_eq!(
            v.to_string(),
            "not serving: listen web has no usable server (2 down)"
        );
    }

    #[test]
    fn disabled_draining_and_weight_zero_servers_are_not_usable() {
        let mut s = healthy();
        s.listens[1].servers = vec![
            server(3, "disabled", 1, false),
            server(4, "down", 1, false),
            server(5, "draining", 1, false),
            server(6, "up", 0, false),
            server(7, "down", 1, true),
        ];
        assert_eq!(
            line(&s),
            "not serving: listen api has no usable server (1 disabled, 2 down, 1 draining, 1 weight 0)"
        );
    }

    #[test]
    fn one_usable_server_is_enough_even_a_backup() {
        let mut s = healthy();
        s.listens[0].servers = vec![server(1, "down", 1, false), server(2, "up", 1, true)];
        assert!(
            matches!(verdict(&s), Verdict::Serving { .. }),
            "{}",
            line(&s)
        );
        s.listens[0].servers = vec![server(1, "down", 1, false), server(2, "up", 3, false)];
        assert!(
            matches!(verdict(&s), Verdict::Serving { .. }),
            "{}",
            line(&s)
        );
    }

    #[test]
    fn a_worker_of_the_serving_generation_that_is_not_running_is_not_serving() {
        for state in ["restarting", "starting", "busy", "draining"] {
            let mut s = healthy();
            s.workers[0].state = state.into();
            assert_eq!(
                line(&s),
                format!("not serving: worker slot 1 is {state}"),
                "{state}"
            );
        }
    }

    #[test]
    fn a_missing_worker_slot_is_not_serving() {
        let mut s = healthy();
        s.workers.remove(0);
        assert_eq!(line(&s), "not serving: 1 of 2 workers running");
    }

    #[test]
    fn other_generations_do_not_count() {
        let mut s = healthy();
        // A reload in progress: generation 3 starting, and generation 1
        // draining away.
        s.phase = "reloading".into();
        s.workers.push(worker(0, 3, "starting"));
        s.workers.push(worker(0, 1, "draining"));
        assert_eq!(line(&s), "ok: 2 workers, 2 listens serving");
    }

    #[test]
    fn a_master_starting_or_stopping_is_not_serving() {
        for phase in ["starting", "stopping"] {
            let mut s = healthy();
            s.phase = phase.into();
            assert_eq!(line(&s), format!("not serving: master is {phase}"));
        }
    }

    #[test]
    fn every_problem_is_found_and_the_line_stays_short() {
        let mut s = healthy();
        s.phase = "stopping".into();
        s.workers[0].state = "busy".into();
        s.workers[1].state = "restarting".into();
        s.listens[0].servers = vec![server(1, "down", 1, false)];
        s.listens[1].servers = vec![server(3, "disabled", 1, false)];
        let Verdict::NotServing(problems) = verdict(&s) else {
            panic!("serving: {}", line(&s));
        };
        assert_eq!(
            problems,
            vec![
                "master is stopping",
                "worker slot 0 is restarting",
                "worker slot 1 is busy",
                "listen web has no usable server (1 down)",
                "listen api has no usable server (1 disabled)",
            ]
        );
        assert_eq!(
            line(&s),
            "not serving: master is stopping; worker slot 0 is restarting; worker slot 1 is busy; and 2 more"
        );
    }

    #[test]
    fn a_snapshot_without_listens_is_not_serving() {
        let mut s = healthy();
        s.listens.clear();
        assert_eq!(line(&s), "not serving: no listen in the serving generation");
    }
}
