//! Owns the master's reconciliation of worker processes: worker channel
//! messages, respawn with back-off, reaping, deadlines (drain, stop, reload),
//! readiness of a new generation, reload and stop.

use super::*;

impl Master {
    // ---- worker channels ------------------------------------------------

    pub(super) fn chan_token(generation: u64, slot: usize) -> Token {
        tokens::channel(generation, slot)
    }

    pub(super) fn on_channel(&mut self, token: Token, now: Instant) {
        let (gen_mod, slot) = tokens::channel_of(token);
        let Some(gi) = self.gens.iter().position(|g| g.number % 65_536 == gen_mod) else {
            return;
        };
        let Some(s) = self.gens[gi].slots.get_mut(slot) else {
            return;
        };
        let Some(chan) = s.channel.as_mut() else {
            return;
        };
        let mut msgs: Vec<Result<FromWorker, String>> = Vec::new();
        let outcome = chan.read_msgs(&mut msgs);
        if chan.has_pending_writes() {
            let _ = chan.flush();
        }
        let pid = s.pid.map_or(0, |p| p.as_raw() as u32);
        if outcome != ReadOutcome::Open
            && let Some(mut c) = s.channel.take()
        {
            let _ = self.poll.registry().deregister(c.stream_mut());
        }
        for msg in msgs.into_iter().flatten() {
            match msg {
                FromWorker::Ready => {
                    let g = &mut self.gens[gi];
                    if g.slots[slot].state == WorkerState::Starting {
                        g.slots[slot].state = WorkerState::Running;
                    }
                    self.check_ready(now);
                }
                FromWorker::Connections { id, connections } => {
                    if let Some(p) = self.pending_conns.get_mut(&id) {
                        p.waiting.retain(|&w| w != pid);
                        p.rows.extend(connections);
                    }
                }
            }
        }
        self.finish_connections(now);
    }

    pub(super) fn send_to(&mut self, gi: usize, slot: usize, msg: &ToWorker) -> bool {
        match self.gens[gi].slots[slot].channel.as_mut() {
            Some(c) => c.send(msg).is_ok(),
            None => false,
        }
    }

    /// Tells a live worker to drain; it is killed at `deadline`.
    pub(super) fn drain_slot(&mut self, gi: usize, slot: usize, deadline: Instant) {
        self.send_to(gi, slot, &ToWorker::Drain);
        self.gens[gi].slots[slot].state = WorkerState::Draining { deadline };
    }

    // ---- supervision ----------------------------------------------------

    /// One reconciliation turn: respawn what is due, enforce deadlines,
    /// run health checks, retire finished generations.
    pub(super) fn reconcile(&mut self, now: Instant) {
        self.respawn_due(now);
        self.enforce_deadlines(now);
        self.run_health(now);
        self.dns_tick(now);
        self.retire_finished();
        self.finish_connections(now);
        self.expire_clients(now);
        self.admin_expire(now);
        if self.phase == MasterPhase::Running && self.queued_signal_reload {
            self.queued_signal_reload = false;
            self.begin_reload(Vec::new(), now);
        }
    }

    pub(super) fn respawn_due(&mut self, now: Instant) {
        if matches!(self.phase, MasterPhase::Stopping { .. }) {
            return;
        }
        for gi in 0..self.gens.len() {
            if self.gens[gi].retiring {
                continue;
            }
            for k in 0..self.gens[gi].slots.len() {
                let due = matches!(self.gens[gi].slots[k].state,
                    WorkerState::Restarting { at } if at <= now);
                if due {
                    self.spawn_slot(gi, k, now);
                }
            }
        }
    }

    pub(super) fn spawn_slot(&mut self, gi: usize, k: usize, now: Instant) {
        let env = SpawnEnv {
            listeners: &self.listeners,
            master_pid: self.pid,
        };
        let generation = &self.gens[gi];
        match supervisor::spawn(generation, k, &env) {
            Ok((pid, mut chan)) => {
                let token = Self::chan_token(generation.number, k);
                let _ = self.poll.registry().register(
                    chan.stream_mut(),
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                );
                generation
                    .region
                    .slot(k)
                    .pid
                    .store(pid.as_raw() as u32, Relaxed);
                let s = &mut self.gens[gi].slots[k];
                s.pid = Some(pid);
                s.channel = Some(chan);
                s.state = WorkerState::Starting;
                s.started = now;
            }
            Err(e) => {
                let s = &mut self.gens[gi].slots[k];
                s.streak += 1;
                let wait = supervisor::backoff(s.streak.max(2));
                log(&format!(
                    "cannot fork worker for slot {k}: {e}; retrying in {wait:?}"
                ));
                s.state = WorkerState::Restarting { at: now + wait };
            }
        }
    }

    pub(super) fn reap(&mut self, now: Instant) {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => s,
            };
            let Some(pid) = status.pid() else {
                continue;
            };
            if !matches!(status, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
                continue;
            }
            self.on_worker_exit(pid, &status, now);
        }
    }

    pub(super) fn on_worker_exit(&mut self, pid: Pid, status: &WaitStatus, now: Instant) {
        if let Some(up) = &mut self.upgrade
            && up.child == pid
        {
            // Reaped: its pid may be reused, never signal it again.
            up.exited = true;
            return;
        }
        let stopping = matches!(self.phase, MasterPhase::Stopping { .. });
        for g in &mut self.gens {
            let Some(k) = g.slots.iter().position(|s| s.pid == Some(pid)) else {
                continue;
            };
            g.region.reset_slot(k);
            let s = &mut g.slots[k];
            s.pid = None;
            if let Some(mut c) = s.channel.take() {
                let _ = self.poll.registry().deregister(c.stream_mut());
            }
            let how = supervisor::describe_exit(status);
            if g.retiring || stopping || matches!(s.state, WorkerState::Draining { .. }) {
                s.state = WorkerState::Exited;
                return;
            }
            s.restarts += 1;
            s.streak = if now.duration_since(s.started) >= supervisor::STABLE_AFTER {
                1
            } else {
                s.streak + 1
            };
            let wait = supervisor::backoff(s.streak);
            s.state = WorkerState::Restarting { at: now + wait };
            if s.streak <= 3 || s.streak.is_multiple_of(10) {
                let extra = if s.streak > 1 {
                    format!(
                        " ({} quick crashes in a row; restarting in {})",
                        s.streak,
                        crate::health::human_duration(wait)
                    )
                } else {
                    String::new()
                };
                log(&format!(
                    "worker {pid} (slot {k}, generation {}) {how}{extra}",
                    g.number
                ));
            }
            return;
        }
    }

    pub(super) fn enforce_deadlines(&mut self, now: Instant) {
        let mut killed = 0;
        for g in &mut self.gens {
            for (k, s) in g.slots.iter_mut().enumerate() {
                if let (WorkerState::Draining { deadline }, Some(pid)) = (s.state, s.pid)
                    && now >= deadline
                {
                    let _ = kill(pid, Signal::SIGKILL);
                    log(&format!(
                        "worker {pid} (slot {k}, generation {}) still had connections at drain_timeout: killed",
                        g.number
                    ));
                    s.state = WorkerState::Draining {
                        deadline: now + Duration::from_secs(3600),
                    };
                    killed += 1;
                }
            }
        }
        self.killed_on_stop += killed;
        if let Some(d) = self.stop_deadline
            && now >= d
        {
            self.stop_deadline = None;
            for g in &mut self.gens {
                for s in &mut g.slots {
                    if let Some(pid) = s.pid {
                        let _ = kill(pid, Signal::SIGKILL);
                        // Draining ones were counted when their own
                        // deadline passed.
                        if !matches!(s.state, WorkerState::Draining { .. }) {
                            self.killed_on_stop += 1;
                        }
                    }
                }
            }
        }
        self.check_upgrade_deadline(now);
        if let Some(d) = self.reload_deadline
            && now >= d
        {
            self.reload_deadline = None;
            self.abort_start(now);
        }
    }

    /// A new generation did not get all its workers accepting in time.
    pub(super) fn abort_start(&mut self, now: Instant) {
        let MasterPhase::Reloading { generation } = self.phase else {
            if self.phase == MasterPhase::Starting {
                log("workers did not start in time; stopping");
                self.exit_code = 2;
                self.notify_ready(Err("workers did not start in time; see the log"));
                self.begin_stop(false, now);
            }
            return;
        };
        log(&format!(
            "generation {generation} did not start in time; keeping generation {}",
            self.serving
        ));
        self.admin.figures.reloads_failed += 1;
        self.admin_unstage();
        if let Some(gi) = self.gens.iter().position(|g| g.number == generation) {
            let g = &mut self.gens[gi];
            g.retiring = true;
            for s in &mut g.slots {
                match s.pid {
                    Some(pid) => {
                        let _ = kill(pid, Signal::SIGKILL);
                    }
                    None => s.state = WorkerState::Exited,
                }
            }
            if let Some(c) = &mut g.checker {
                c.shutdown(self.poll.registry());
            }
            // Sockets bound for it would collect connections nobody accepts.
            let binds = std::mem::take(&mut g.binds);
            reload::undo_binds(&mut self.listeners, &binds);
        }
        self.phase = MasterPhase::Running;
        let waiters = std::mem::take(&mut self.reload_waiters);
        let message = format!(
            "generation {generation}: workers did not start within {}s; generation {} keeps serving (see the log)",
            RELOAD_TIMEOUT.as_secs(),
            self.serving
        );
        self.respond_all(waiters, Response::Error { message });
        daemon::sd_notify("READY=1");
        // Reloads asked for meanwhile (perhaps with a fixed file) run now.
        self.start_queued_reloads(now);
    }

    pub(super) fn retire_finished(&mut self) {
        let serving = self.serving;
        self.gens
            .retain(|g| !(g.retiring && g.all_exited() && g.number != serving));
    }

    // ---- readiness and reload -------------------------------------------

    pub(super) fn check_ready(&mut self, now: Instant) {
        match self.phase {
            MasterPhase::Starting if self.gens[0].all_running() => {
                self.phase = MasterPhase::Running;
                self.reload_deadline = None;
                let g = &self.gens[0];
                let binds: Vec<String> = g
                    .config
                    .listens
                    .iter()
                    .map(|l| format!("{}={}", l.name, l.bind))
                    .collect();
                log(&format!(
                    "generation 1: {} workers accepting on {}",
                    g.slots.len(),
                    binds.join(", ")
                ));
                self.notify_ready(Ok(()));
                daemon::sd_notify("READY=1");
                self.start_queued_reloads(now);
            }
            MasterPhase::Reloading { generation }
                if self
                    .gens
                    .iter()
                    .any(|g| g.number == generation && g.all_running()) =>
            {
                self.finish_reload(generation, now);
            }
            _ => {}
        }
    }

    pub(super) fn notify_ready(&mut self, result: Result<(), &str>) {
        if let Some(fd) = self.ready.take() {
            let mut f = std::fs::File::from(fd);
            let msg = match result {
                Ok(()) => "ok".to_string(),
                Err(e) => e.to_string(),
            };
            let _ = f.write_all(msg.as_bytes());
        }
    }

    pub(super) fn begin_reload(&mut self, waiters: Vec<Token>, now: Instant) {
        if matches!(self.phase, MasterPhase::Stopping { .. }) {
            let message = "lbctl is stopping".into();
            self.respond_all(waiters, Response::Error { message });
            return;
        }
        daemon::sd_notify("RELOADING=1");
        let serving = self.gens.iter().find(|g| g.number == self.serving);
        let loaded = match serving {
            Some(g) => config::load_for_reload(&self.config_path, &g.config),
            None => config::load(&self.config_path),
        };
        let config = match loaded {
            Ok(c) => c,
            Err(e) => {
                log(&format!("reload rejected, configuration unchanged: {e}"));
                self.admin.figures.reloads_failed += 1;
                let message = format!("reload rejected, old configuration kept: {e}");
                self.respond_all(waiters, Response::Error { message });
                daemon::sd_notify("READY=1");
                return;
            }
        };
        let fail = |m: &mut Master, waiters: Vec<Token>, msg: String| {
            log(&format!("reload failed, configuration unchanged: {msg}"));
            m.admin.figures.reloads_failed += 1;
            m.admin_unstage();
            let message = format!("reload failed, old configuration kept: {msg}");
            m.respond_all(waiters, Response::Error { message });
            daemon::sd_notify("READY=1");
        };
        let running = self
            .gens
            .iter()
            .find(|g| g.number == self.serving)
            .map(|g| (&*g.config, g.identity));
        let identity = match supervisor::identity_for(&config, running) {
            Ok(i) => i,
            Err(e) => return fail(self, waiters, e),
        };
        if let Err(e) = self.admin_stage(config.admin.as_ref()) {
            return fail(self, waiters, e);
        }
        let made = match reload::bind_all(&mut self.listeners, &config) {
            Ok(m) => m,
            Err((addr, e)) => return fail(self, waiters, format!("cannot listen on {addr}: {e}")),
        };
        let number = self.next_gen;
        let mut generation = match reload::new_generation(number, Arc::new(config), identity, now) {
            Ok(g) => g,
            Err(e) => {
                reload::undo_binds(&mut self.listeners, &made);
                return fail(self, waiters, e.to_string());
            }
        };
        generation.binds = made;
        if let Some(old) = self.gens.iter().find(|g| g.number == self.serving) {
            reload::inherit_health(old, &mut generation);
        }
        self.next_gen += 1;
        self.gens.push(generation);
        self.phase = MasterPhase::Reloading { generation: number };
        self.reload_waiters = waiters;
        self.reload_deadline = Some(now + RELOAD_TIMEOUT);
        log(&format!("reloading: starting generation {number}"));
        self.dns_sync(now);
        self.respawn_due(now);
    }

    pub(super) fn finish_reload(&mut self, number: u64, now: Instant) {
        let drain = self
            .gens
            .iter()
            .find(|g| g.number == number)
            .map_or(Duration::from_secs(30), |g| g.config.master.drain_timeout);
        let mut drained = 0;
        for gi in 0..self.gens.len() {
            if self.gens[gi].number == number || self.gens[gi].retiring {
                continue;
            }
            self.gens[gi].retiring = true;
            if let Some(c) = &mut self.gens[gi].checker {
                c.shutdown(self.poll.registry());
            }
            for k in 0..self.gens[gi].slots.len() {
                let alive = self.gens[gi].slots[k].pid.is_some();
                if alive {
                    self.drain_slot(gi, k, now + drain);
                    drained += 1;
                } else {
                    self.gens[gi].slots[k].state = WorkerState::Exited;
                }
            }
        }
        self.serving = number;
        self.phase = MasterPhase::Running;
        self.reload_deadline = None;
        // Listeners the new file dropped close now (the old workers stopped
        // accepting on them), so the port refuses instead of queueing.
        let keep: Vec<_> = self
            .gens
            .iter()
            .filter(|g| g.number == number)
            .flat_map(|g| g.config.listens.iter().map(|l| l.bind))
            .collect();
        self.listeners.retain(&keep);
        self.admin.figures.reloads_ok += 1;
        self.admin_commit();
        log(&format!(
            "reloaded: generation {number} accepting; {drained} old workers draining"
        ));
        daemon::sd_notify("READY=1");
        self.dns_sync(now);
        let waiters = std::mem::take(&mut self.reload_waiters);
        let message = format!("reloaded: generation {number}");
        self.respond_all(waiters, Response::Done { message });
        if !self.start_queued_reloads(now) && self.queued_signal_reload {
            self.queued_signal_reload = false;
            self.begin_reload(Vec::new(), now);
        }
    }

    /// Starts the reload control clients asked for while another was in
    /// progress (one reload answers them all); false when none waited.
    pub(super) fn start_queued_reloads(&mut self, now: Instant) -> bool {
        if self.queued_reloads.is_empty() {
            return false;
        }
        let w = std::mem::take(&mut self.queued_reloads);
        self.begin_reload(w, now);
        true
    }

    // ---- stop -----------------------------------------------------------

    pub(super) fn begin_stop(&mut self, graceful: bool, now: Instant) {
        if let MasterPhase::Stopping { graceful: g } = self.phase {
            if g && !graceful {
                // A fast stop overrides a graceful one in progress.
                self.phase = MasterPhase::Stopping { graceful: false };
                self.stop_deadline = Some(now);
            }
            return;
        }
        if self.upgrade.is_some() {
            // The new master must not take over from a stopping one.
            self.fail_upgrade("lbctl is stopping".into());
        }
        if !self.handed_over {
            // After an upgrade handover the new master speaks to systemd.
            daemon::sd_notify("STOPPING=1");
        }
        log(if graceful {
            "stopping gracefully: draining workers"
        } else {
            "stopping"
        });
        self.phase = MasterPhase::Stopping { graceful };
        let drain = self
            .gens
            .last()
            .map_or(Duration::from_secs(30), |g| g.config.master.drain_timeout);
        for gi in 0..self.gens.len() {
            if let Some(c) = &mut self.gens[gi].checker {
                c.shutdown(self.poll.registry());
            }
            for k in 0..self.gens[gi].slots.len() {
                match self.gens[gi].slots[k].pid {
                    Some(pid) => {
                        if graceful {
                            if !matches!(self.gens[gi].slots[k].state, WorkerState::Draining { .. })
                            {
                                self.drain_slot(gi, k, now + drain);
                            }
                        } else {
                            let _ = kill(pid, Signal::SIGTERM);
                        }
                    }
                    None => self.gens[gi].slots[k].state = WorkerState::Exited,
                }
            }
        }
        self.stop_deadline = Some(now + if graceful { drain } else { FAST_STOP_GRACE });
        let mut waiters = std::mem::take(&mut self.reload_waiters);
        waiters.append(&mut self.queued_reloads);
        let message = "lbctl is stopping".into();
        self.respond_all(waiters, Response::Error { message });
    }

    pub(super) fn finish_stop(&mut self) {
        let msg = if self.killed_on_stop > 0 {
            format!(
                "stopped ({} workers killed after drain_timeout)",
                self.killed_on_stop
            )
        } else {
            "stopped".to_string()
        };
        log(&msg);
        self.notify_ready(Err("lbctl stopped during startup; see the log"));
        if !self.handed_over {
            let _ = std::fs::remove_file(&self.control_path);
        }
        let waiters = std::mem::take(&mut self.stop_waiters);
        self.respond_all(waiters, Response::Done { message: msg });
    }
}
