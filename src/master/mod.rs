//! Owns the master process: one single-threaded mio loop over the signal
//! pipes, the control socket and its clients, the worker channels and the
//! health probes, run by reconciliation (each turn respawns what is due,
//! kills drains past their deadline, retires finished generations). Commands
//! from signals and from the control socket end up in the same methods.

pub mod daemon;
pub mod listeners;
pub mod reload;
pub mod report;
pub mod signals;
pub mod supervisor;
pub mod upgrade;

use crate::channel::{LineConn, MAX_LINE, ReadOutcome};
use crate::config::{self, Config};
use crate::control::{FromWorker, Request, Response, ServerAction, ToWorker};
use crate::health::{HealthState, Report, Transition};
use crate::shm::{self, ADMIN_DISABLED, ADMIN_DRAINING, ADMIN_ENABLED, HEALTH_DOWN, HEALTH_UP};
use crate::stats::ConnRow;
use daemon::PidFile;
use listeners::Listeners;
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use signals::{Command, SignalPipes};
use std::collections::HashMap;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use supervisor::{Generation, Identity, SpawnEnv, WorkerState};

const CONTROL: Token = Token(100);
const UPGRADE_READY: Token = Token(101);
const HANDOVER: Token = Token(102);
const CLIENT_BASE: usize = 1 << 16;
const CLIENT_SPAN: usize = 1 << 20;
const CHAN_BASE: usize = 1 << 32;
const TICK: Duration = Duration::from_millis(250);
const RELOAD_TIMEOUT: Duration = Duration::from_secs(15);
const FAST_STOP_GRACE: Duration = Duration::from_secs(5);
const CONNECTIONS_TIMEOUT: Duration = Duration::from_secs(1);

/// Logs one line to stderr (the log file in daemon mode).
pub fn log(msg: &str) {
    let line = daemon::log_line(msg);
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Why the master could not start.
#[derive(Debug)]
pub enum MasterError {
    /// Another master runs with this pid file.
    AlreadyRunning {
        /// Its pid, when readable.
        pid: Option<i32>,
        /// The pid file.
        pid_file: PathBuf,
    },
    /// The pid file could not be written.
    PidFile {
        /// The pid file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A listening address could not be bound.
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The control socket could not be created.
    Control {
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Any other setup step (names the step).
    Setup(String),
}

impl std::fmt::Display for MasterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MasterError::AlreadyRunning { pid, pid_file } => match pid {
                Some(p) => write!(
                    f,
                    "lbctl is already running (pid {p}, pid file {})",
                    pid_file.display()
                ),
                None => write!(
                    f,
                    "lbctl is already running (pid file {} is locked)",
                    pid_file.display()
                ),
            },
            MasterError::PidFile { path, source } => {
                write!(f, "cannot write pid file {}: {source}", path.display())
            }
            MasterError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            MasterError::Control { path, source } => write!(
                f,
                "cannot create control socket {}: {source}",
                path.display()
            ),
            MasterError::Setup(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for MasterError {}

/// The master's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterPhase {
    /// Generation 1's workers are starting.
    Starting,
    /// Serving.
    Running,
    /// A new generation is starting.
    Reloading {
        /// Its number.
        generation: u64,
    },
    /// Stopping.
    Stopping {
        /// Draining first.
        graceful: bool,
    },
}

impl MasterPhase {
    fn name(self) -> &'static str {
        match self {
            MasterPhase::Starting => "starting",
            MasterPhase::Running => "running",
            MasterPhase::Reloading { .. } => "reloading",
            MasterPhase::Stopping { .. } => "stopping",
        }
    }
}

struct ControlClient {
    conn: LineConn<UnixStream>,
    closing: bool,
}

struct PendingConns {
    client: Token,
    waiting: Vec<u32>,
    rows: Vec<ConnRow>,
    deadline: Instant,
}

/// The running master.
pub struct Master {
    config_path: PathBuf,
    poll: Poll,
    signals: SignalPipes,
    control: Option<UnixListener>,
    control_path: PathBuf,
    clients: HashMap<Token, ControlClient>,
    next_client: usize,
    listeners: Listeners,
    gens: Vec<Generation>,
    serving: u64,
    next_gen: u64,
    phase: MasterPhase,
    reload_waiters: Vec<Token>,
    reload_deadline: Option<Instant>,
    queued_reloads: Vec<Token>,
    queued_signal_reload: bool,
    stop_waiters: Vec<Token>,
    stop_deadline: Option<Instant>,
    killed_on_stop: usize,
    pending_conns: HashMap<u64, PendingConns>,
    next_req: u64,
    started: Instant,
    pid: Pid,
    identity: Identity,
    ready: Option<OwnedFd>,
    pid_file: Option<PidFile>,
    exe: PathBuf,
    upgrade: Option<upgrade::InProgress>,
    handover: Option<UnixStream>,
    handed_over: bool,
}

/// How a master comes to life.
#[derive(Debug)]
pub enum Startup {
    /// A fresh start: the pid file is locked; `ready` (daemon mode) gets
    /// "ok" once the workers accept, or the error.
    Fresh {
        /// The locked pid file.
        pid_file: PidFile,
        /// Readiness pipe of `start -d`.
        ready: Option<OwnedFd>,
    },
    /// Started by a binary upgrade: sockets inherited from the old master.
    Upgrade(upgrade::Inherited),
}

impl std::fmt::Debug for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Master")
            .field("config_path", &self.config_path)
            .field("phase", &self.phase)
            .field("serving", &self.serving)
            .finish()
    }
}

/// Takes the pid file lock for `config`.
pub fn lock_pid_file(config: &Config) -> Result<PidFile, MasterError> {
    let path = &config.master.pid_file;
    PidFile::acquire(path).map_err(|e| match e {
        daemon::PidError::Running(pid) => MasterError::AlreadyRunning {
            pid,
            pid_file: path.clone(),
        },
        daemon::PidError::Io(source) => MasterError::PidFile {
            path: path.clone(),
            source,
        },
    })
}

impl Master {
    /// Sets up everything (pid file already locked), forks generation 1.
    /// `ready` receives "ok" once the workers accept, or the error.
    pub fn start(
        config_path: &Path,
        config: Config,
        startup: Startup,
    ) -> Result<Master, MasterError> {
        let (pid_file, ready, mut listeners, handover) = match startup {
            Startup::Fresh { pid_file, ready } => (Some(pid_file), ready, Listeners::new(), None),
            Startup::Upgrade(inh) => (
                None,
                Some(inh.ready),
                inh.listeners,
                Some(UnixStream::from_std(inh.handover)),
            ),
        };
        let identity = supervisor::resolve_identity(&config).map_err(MasterError::Setup)?;
        let nofile = raise_nofile_limit();
        let poll = Poll::new().map_err(|e| MasterError::Setup(format!("epoll: {e}")))?;
        let mut signals = SignalPipes::install()
            .map_err(|e| MasterError::Setup(format!("signal handlers: {e}")))?;
        for (i, r) in signals.readers.iter_mut().enumerate() {
            poll.registry()
                .register(r, Token(i), Interest::READABLE)
                .map_err(|e| MasterError::Setup(format!("epoll: {e}")))?;
        }
        reload::bind_all(&mut listeners, &config)
            .map_err(|(addr, source)| MasterError::Bind { addr, source })?;
        let control_path = config.master.control_socket.clone();
        let mut control = None;
        let mut handover = handover;
        match &mut handover {
            // The old master still owns the control socket until handover.
            Some(h) => poll
                .registry()
                .register(h, HANDOVER, Interest::READABLE)
                .map_err(|e| MasterError::Setup(format!("epoll: {e}")))?,
            None => {
                let mut c = bind_control(&control_path).map_err(|source| MasterError::Control {
                    path: control_path.clone(),
                    source,
                })?;
                poll.registry()
                    .register(&mut c, CONTROL, Interest::READABLE)
                    .map_err(|e| MasterError::Setup(format!("epoll: {e}")))?;
                control = Some(c);
            }
        }
        let now = Instant::now();
        let generation = reload::new_generation(1, Arc::new(config), now)
            .map_err(|e| MasterError::Setup(e.to_string()))?;
        let mut m = Master {
            config_path: config_path.to_path_buf(),
            poll,
            signals,
            control,
            control_path,
            clients: HashMap::new(),
            next_client: 0,
            listeners,
            gens: vec![generation],
            serving: 1,
            next_gen: 2,
            phase: MasterPhase::Starting,
            reload_waiters: Vec::new(),
            reload_deadline: Some(now + RELOAD_TIMEOUT),
            queued_reloads: Vec::new(),
            queued_signal_reload: false,
            stop_waiters: Vec::new(),
            stop_deadline: None,
            killed_on_stop: 0,
            pending_conns: HashMap::new(),
            next_req: 1,
            started: now,
            pid: nix::unistd::getpid(),
            identity,
            ready,
            pid_file,
            exe: upgrade::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
            upgrade: None,
            handover,
            handed_over: false,
        };
        log(&format!(
            "master started (pid {}, config {}, {} workers, fd limit {nofile})",
            m.pid,
            m.config_path.display(),
            m.gens[0].config.master.workers
        ));
        m.reconcile(now);
        Ok(m)
    }

    /// Runs the loop until stopped; returns the exit code.
    pub fn run(mut self) -> i32 {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.next_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                log(&format!("poll failed: {e}"));
                return 2;
            }
            let now = Instant::now();
            for ev in events.iter() {
                self.on_event(ev, now);
            }
            self.reconcile(now);
            if matches!(self.phase, MasterPhase::Stopping { .. })
                && self.gens.iter().all(Generation::all_exited)
            {
                break;
            }
            if self.phase == MasterPhase::Starting && self.failed_start(now) {
                return 2;
            }
        }
        self.finish_stop();
        0
    }

    fn next_timeout(&self, now: Instant) -> Duration {
        let mut t = TICK;
        for g in &self.gens {
            if let Some(c) = &g.checker
                && let Some(d) = c.timeout(now)
            {
                t = t.min(d);
            }
            for s in &g.slots {
                if let WorkerState::Restarting { at } = s.state {
                    t = t.min(at.saturating_duration_since(now));
                }
            }
        }
        t
    }

    fn on_event(&mut self, ev: &mio::event::Event, now: Instant) {
        let t = ev.token();
        if t.0 < signals::SIGNALS.len() {
            if self.signals.drain(t.0) {
                self.on_command(signals::signal_to_command(signals::SIGNALS[t.0]), now);
            }
        } else if t == CONTROL {
            self.accept_clients();
        } else if t == UPGRADE_READY {
            self.on_upgrade_ready(now);
        } else if t == HANDOVER {
            self.on_handover();
        } else if (CLIENT_BASE..CLIENT_BASE + CLIENT_SPAN).contains(&t.0) {
            self.on_client(t, now);
        } else if t.0 >= CHAN_BASE && t.0 < reload::health_token_base(0) {
            self.on_channel(t, now);
        } else {
            let mut reports = Vec::new();
            for g in &mut self.gens {
                if let Some(c) = &mut g.checker
                    && c.owns(t)
                {
                    c.event(self.poll.registry(), ev, now, &mut reports);
                    let n = g.number;
                    self.apply_reports(n, reports, now);
                    return;
                }
            }
        }
    }

    fn on_command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::StopFast => self.begin_stop(false, now),
            Command::StopGraceful => self.begin_stop(true, now),
            Command::Reload => {
                if matches!(
                    self.phase,
                    MasterPhase::Reloading { .. } | MasterPhase::Starting
                ) {
                    self.queued_signal_reload = true;
                } else {
                    self.begin_reload(Vec::new(), now);
                }
            }
            Command::Reap => self.reap(now),
            Command::Upgrade => self.begin_upgrade(None, now),
            Command::Ignore => {}
        }
    }

    // ---- control socket -------------------------------------------------

    fn accept_clients(&mut self) {
        loop {
            let Some(control) = &self.control else {
                return;
            };
            match control.accept() {
                Ok((stream, _)) => {
                    let token = Token(CLIENT_BASE + self.next_client % CLIENT_SPAN);
                    self.next_client += 1;
                    let mut conn = LineConn::new(stream, MAX_LINE);
                    if self
                        .poll
                        .registry()
                        .register(
                            conn.stream_mut(),
                            token,
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_ok()
                    {
                        self.clients.insert(
                            token,
                            ControlClient {
                                conn,
                                closing: false,
                            },
                        );
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log(&format!("control socket accept failed: {e}"));
                    return;
                }
            }
        }
    }

    fn on_client(&mut self, token: Token, now: Instant) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        if client.closing {
            match client.conn.flush() {
                Ok(false) => return,
                _ => {
                    self.drop_client(token);
                    return;
                }
            }
        }
        let mut msgs: Vec<Result<Request, String>> = Vec::new();
        let outcome = client.conn.read_msgs(&mut msgs);
        match outcome {
            ReadOutcome::TooLong => {
                self.respond(
                    token,
                    Response::Error {
                        message: format!("request longer than {MAX_LINE} bytes"),
                    },
                );
                return;
            }
            ReadOutcome::Closed if msgs.is_empty() => {
                self.drop_client(token);
                return;
            }
            _ => {}
        }
        if let Some(msg) = msgs.into_iter().next() {
            match msg {
                Ok(req) => self.on_request(token, req, now),
                Err(e) => self.respond(
                    token,
                    Response::Error {
                        message: format!("bad request: {e}"),
                    },
                ),
            }
        }
    }

    fn drop_client(&mut self, token: Token) {
        if let Some(mut c) = self.clients.remove(&token) {
            let _ = self.poll.registry().deregister(c.conn.stream_mut());
        }
    }

    /// Sends the one answer of a control conversation, then closes it.
    fn respond(&mut self, token: Token, resp: Response) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        client.closing = true;
        match client.conn.send(&resp) {
            Ok(()) if !client.conn.has_pending_writes() => self.drop_client(token),
            Ok(()) => {}
            Err(_) => self.drop_client(token),
        }
    }

    fn on_request(&mut self, token: Token, req: Request, now: Instant) {
        match req {
            Request::Status => {
                let status = report::status(self, now);
                self.respond(
                    token,
                    Response::Status {
                        status: Box::new(status),
                    },
                );
            }
            Request::Reload => match self.phase {
                MasterPhase::Stopping { .. } => self.respond(
                    token,
                    Response::Error {
                        message: "lbctl is stopping".into(),
                    },
                ),
                MasterPhase::Reloading { .. } | MasterPhase::Starting => {
                    self.queued_reloads.push(token)
                }
                MasterPhase::Running => self.begin_reload(vec![token], now),
            },
            Request::Stop { graceful } => {
                self.stop_waiters.push(token);
                self.begin_stop(graceful, now);
            }
            Request::Connections => self.begin_connections(token, now),
            Request::Upgrade => self.begin_upgrade(Some(token), now),
            Request::Server { action, target } => {
                let resp = self.server_action(action, &target, now);
                self.respond(token, resp);
            }
        }
    }

    // ---- worker channels ------------------------------------------------

    fn chan_token(generation: u64, slot: usize) -> Token {
        Token(CHAN_BASE + ((generation % 256) as usize) * (1 << 16) + slot)
    }

    fn on_channel(&mut self, token: Token, now: Instant) {
        let rel = token.0 - CHAN_BASE;
        let (gen_mod, slot) = ((rel >> 16) as u64, rel & 0xffff);
        let Some(gi) = self.gens.iter().position(|g| g.number % 256 == gen_mod) else {
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
        self.finish_connections(now, false);
    }

    fn send_to(&mut self, gi: usize, slot: usize, msg: &ToWorker) -> bool {
        match self.gens[gi].slots[slot].channel.as_mut() {
            Some(c) => c.send(msg).is_ok(),
            None => false,
        }
    }

    // ---- supervision ----------------------------------------------------

    /// One reconciliation turn: respawn what is due, enforce deadlines,
    /// run health checks, retire finished generations.
    fn reconcile(&mut self, now: Instant) {
        self.respawn_due(now);
        self.enforce_deadlines(now);
        self.run_health(now);
        self.retire_finished();
        self.finish_connections(now, false);
        if self.phase == MasterPhase::Running && self.queued_signal_reload {
            self.queued_signal_reload = false;
            self.begin_reload(Vec::new(), now);
        }
    }

    fn respawn_due(&mut self, now: Instant) {
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

    fn spawn_slot(&mut self, gi: usize, k: usize, now: Instant) {
        let env = SpawnEnv {
            listeners: &self.listeners,
            identity: self.identity,
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

    fn reap(&mut self, now: Instant) {
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

    fn on_worker_exit(&mut self, pid: Pid, status: &WaitStatus, now: Instant) {
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

    fn enforce_deadlines(&mut self, now: Instant) {
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
                        self.killed_on_stop += 1;
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

    /// True once startup has clearly failed (reported to `start -d`).
    fn failed_start(&mut self, _now: Instant) -> bool {
        false
    }

    /// A new generation did not get all its workers accepting in time.
    fn abort_start(&mut self, now: Instant) {
        let MasterPhase::Reloading { generation } = self.phase else {
            if self.phase == MasterPhase::Starting {
                log("workers did not start in time; stopping");
                self.notify_ready(Err("workers did not start in time; see the log"));
                self.begin_stop(false, now);
            }
            return;
        };
        log(&format!(
            "generation {generation} did not start in time; keeping generation {}",
            self.serving
        ));
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
        for w in waiters {
            self.respond(
                w,
                Response::Error {
                    message: format!(
                        "generation {generation}: workers did not start within {}s; generation {} keeps serving (see the log)",
                        RELOAD_TIMEOUT.as_secs(),
                        self.serving
                    ),
                },
            );
        }
        daemon::sd_notify("READY=1");
    }

    fn retire_finished(&mut self) {
        let serving = self.serving;
        self.gens
            .retain(|g| !(g.retiring && g.all_exited() && g.number != serving));
    }

    // ---- readiness and reload -------------------------------------------

    fn check_ready(&mut self, now: Instant) {
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
                if !self.queued_reloads.is_empty() {
                    let w = std::mem::take(&mut self.queued_reloads);
                    self.begin_reload(w, now);
                }
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

    fn notify_ready(&mut self, result: Result<(), &str>) {
        if let Some(fd) = self.ready.take() {
            let mut f = std::fs::File::from(fd);
            let msg = match result {
                Ok(()) => "ok".to_string(),
                Err(e) => e.to_string(),
            };
            let _ = f.write_all(msg.as_bytes());
        }
    }

    fn begin_reload(&mut self, waiters: Vec<Token>, now: Instant) {
        daemon::sd_notify("RELOADING=1");
        let config = match config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                log(&format!("reload rejected, configuration unchanged: {e}"));
                for w in waiters {
                    self.respond(
                        w,
                        Response::Error {
                            message: format!("reload rejected, old configuration kept: {e}"),
                        },
                    );
                }
                daemon::sd_notify("READY=1");
                return;
            }
        };
        let fail = |m: &mut Master, waiters: Vec<Token>, msg: String| {
            log(&format!("reload failed, configuration unchanged: {msg}"));
            for w in waiters {
                m.respond(
                    w,
                    Response::Error {
                        message: format!("reload failed, old configuration kept: {msg}"),
                    },
                );
            }
            daemon::sd_notify("READY=1");
        };
        let identity = match supervisor::resolve_identity(&config) {
            Ok(i) => i,
            Err(e) => return fail(self, waiters, e),
        };
        let made = match reload::bind_all(&mut self.listeners, &config) {
            Ok(m) => m,
            Err((addr, e)) => return fail(self, waiters, format!("cannot listen on {addr}: {e}")),
        };
        let number = self.next_gen;
        let mut generation = match reload::new_generation(number, Arc::new(config), now) {
            Ok(g) => g,
            Err(e) => {
                reload::undo_binds(&mut self.listeners, &made);
                return fail(self, waiters, e.to_string());
            }
        };
        generation.binds = made;
        self.next_gen += 1;
        self.identity = identity;
        self.gens.push(generation);
        self.phase = MasterPhase::Reloading { generation: number };
        self.reload_waiters = waiters;
        self.reload_deadline = Some(now + RELOAD_TIMEOUT);
        log(&format!("reloading: starting generation {number}"));
        self.respawn_due(now);
    }

    fn finish_reload(&mut self, number: u64, now: Instant) {
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
                    self.send_to(gi, k, &ToWorker::Drain);
                    self.gens[gi].slots[k].state = WorkerState::Draining {
                        deadline: now + drain,
                    };
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
        log(&format!(
            "reloaded: generation {number} accepting; {drained} old workers draining"
        ));
        daemon::sd_notify("READY=1");
        let waiters = std::mem::take(&mut self.reload_waiters);
        for w in waiters {
            self.respond(
                w,
                Response::Done {
                    message: format!("reloaded: generation {number}"),
                },
            );
        }
        if !self.queued_reloads.is_empty() {
            let w = std::mem::take(&mut self.queued_reloads);
            self.begin_reload(w, now);
        } else if self.queued_signal_reload {
            self.queued_signal_reload = false;
            self.begin_reload(Vec::new(), now);
        }
    }

    // ---- stop -----------------------------------------------------------

    fn begin_stop(&mut self, graceful: bool, now: Instant) {
        if let MasterPhase::Stopping { graceful: g } = self.phase {
            if g && !graceful {
                // A fast stop overrides a graceful one in progress.
                self.phase = MasterPhase::Stopping { graceful: false };
                self.stop_deadline = Some(now);
            }
            return;
        }
        daemon::sd_notify("STOPPING=1");
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
                                self.send_to(gi, k, &ToWorker::Drain);
                                self.gens[gi].slots[k].state = WorkerState::Draining {
                                    deadline: now + drain,
                                };
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
        let waiters = std::mem::take(&mut self.reload_waiters);
        for w in waiters {
            self.respond(
                w,
                Response::Error {
                    message: "lbctl is stopping".into(),
                },
            );
        }
    }

    fn finish_stop(&mut self) {
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
        for w in waiters {
            self.respond(
                w,
                Response::Done {
                    message: msg.clone(),
                },
            );
        }
    }

    // ---- health ---------------------------------------------------------

    fn run_health(&mut self, now: Instant) {
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
            let mut idx = 0;
            for l in &g.config.listens {
                for s in &l.servers {
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
                            g.notes[idx].check =
                                format!("{} connect failures (passive)", l.max_fails);
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
                    idx += 1;
                }
            }
            let n = g.number;
            self.apply_reports(n, reports, now);
        }
    }

    fn apply_reports(&mut self, number: u64, reports: Vec<Report>, now: Instant) {
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

    // ---- connections and runtime server control ---------------------------

    fn begin_connections(&mut self, token: Token, now: Instant) {
        let id = self.next_req;
        self.next_req += 1;
        let mut waiting = Vec::new();
        for gi in 0..self.gens.len() {
            for k in 0..self.gens[gi].slots.len() {
                let pid = self.gens[gi].slots[k].pid;
                if let Some(pid) = pid
                    && self.send_to(gi, k, &ToWorker::Connections { id })
                {
                    waiting.push(pid.as_raw() as u32);
                }
            }
        }
        self.pending_conns.insert(
            id,
            PendingConns {
                client: token,
                waiting,
                rows: Vec::new(),
                deadline: now + CONNECTIONS_TIMEOUT,
            },
        );
        self.finish_connections(now, false);
    }

    fn finish_connections(&mut self, now: Instant, _force: bool) {
        let done: Vec<u64> = self
            .pending_conns
            .iter()
            .filter(|(_, p)| p.waiting.is_empty() || now >= p.deadline)
            .map(|(&id, _)| id)
            .collect();
        for id in done {
            if let Some(p) = self.pending_conns.remove(&id) {
                self.respond(
                    p.client,
                    Response::Connections {
                        connections: p.rows,
                        busy: p.waiting,
                    },
                );
            }
        }
    }

    fn server_action(&mut self, action: ServerAction, target: &str, now: Instant) -> Response {
        let Some((listen_name, server_name)) = target.split_once('/') else {
            return Response::Error {
                message: format!("'{target}': expected LISTEN/SERVER, e.g. web/10.0.0.11:6001"),
            };
        };
        let mut found = None;
        for g in self.gens.iter_mut().filter(|g| !g.retiring) {
            let mut idx = 0;
            for l in &g.config.listens {
                for s in &l.servers {
                    if l.name == listen_name
                        && (s.name.as_deref() == Some(server_name)
                            || s.addr.to_string() == server_name)
                    {
                        let cell = g.region.server(idx);
                        match action {
                            ServerAction::Enable => cell.admin.store(ADMIN_ENABLED, Relaxed),
                            ServerAction::Disable => cell.admin.store(ADMIN_DISABLED, Relaxed),
                            ServerAction::Drain => cell.admin.store(ADMIN_DRAINING, Relaxed),
                            ServerAction::Weight(w) => cell.weight.store(w, Relaxed),
                        }
                        g.notes[idx].since = now;
                        found = Some(format!("{}/{}", l.name, s.label()));
                    }
                    idx += 1;
                }
            }
        }
        match found {
            Some(name) => {
                let what = match action {
                    ServerAction::Enable => "enabled".to_string(),
                    ServerAction::Disable => "disabled".to_string(),
                    ServerAction::Drain => "draining".to_string(),
                    ServerAction::Weight(w) => format!("weight set to {w}"),
                };
                log(&format!(
                    "server {name} {what} (runtime change; a reload resets it)"
                ));
                Response::Done {
                    message: format!("{name}: {what}"),
                }
            }
            None => Response::Error {
                message: format!("no server '{server_name}' in listen '{listen_name}'"),
            },
        }
    }
}

/// (listen name, server label) of global server index `idx`.
fn server_at(config: &Config, mut idx: usize) -> (String, String) {
    for l in &config.listens {
        if idx < l.servers.len() {
            return (l.name.clone(), l.servers[idx].label());
        }
        idx -= l.servers.len();
    }
    (String::new(), String::new())
}

/// Raises the soft open-files limit to the hard limit (inherited by the
/// workers) and returns the limit in force.
fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 0,
    }
}

/// Binds the control socket (mode 0600), replacing a stale one: the caller
/// holds the pid file lock, so no live master owns it.
fn bind_control(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}
