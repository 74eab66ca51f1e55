//! Owns the master process: one single-threaded mio loop over the signal
//! pipes, the control socket and its clients, the worker channels and the
//! health probes, run by reconciliation (each turn respawns what is due,
//! kills drains past their deadline, retires finished generations). Commands
//! from signals and from the control socket end up in the same methods. The
//! admin listener (`[admin]`: metrics, status page) is served in the same loop.

mod admin;
mod commands;
pub mod daemon;
mod dns;
mod health_sync;
mod lifecycle;
pub mod listeners;
mod ratelog;
pub mod reload;
mod reopen;
pub mod report;
pub mod signals;
pub mod supervisor;
mod tokens;
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
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use supervisor::{Generation, SpawnEnv, WorkerState};

use tokens::{CONTROL, HANDOVER, UPGRADE_READY};
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
    /// Its one request arrived (later bytes are ignored).
    asked: bool,
    /// Accepted at; a client that asks nothing in time is dropped.
    opened: Instant,
    /// When its answer was queued (close once written); one not written
    /// in time is dropped.
    answered: Option<Instant>,
    /// Its peer credentials (`SO_PEERCRED`, taken at accept), if readable:
    /// they decide whether it may change state (see [`crate::control::allowed`]).
    peer: Option<Peer>,
}

/// Who is at the other end of a control connection.
#[derive(Debug, Clone, Copy)]
struct Peer {
    uid: u32,
    pid: i32,
}

/// Control clients served at once; a new one beyond them evicts the one
/// that has waited longest without asking (see `evict_silent_client`).
const MAX_CLIENTS: usize = 256;
/// A control client must send its request within this time.
const CLIENT_IDLE: Duration = Duration::from_secs(10);

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
    ready: Option<OwnedFd>,
    pid_file: Option<PidFile>,
    exe: PathBuf,
    upgrade: Option<upgrade::InProgress>,
    handover: Option<UnixStream>,
    handed_over: bool,
    /// The `[admin]` listener and its connections.
    admin: admin::Admin,
    /// 0, or 2 when the first generation never got its workers accepting.
    exit_code: i32,
    /// Servers found by DNS: the resolver thread and each lookup's state.
    dns: dns::Dns,
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

/// Runs a master in the foreground (stderr is its log) until it stops:
/// `lbctl start` without `-d`, and `lbctl demo`.
pub fn run_foreground(path: &Path, cfg: Config) -> Result<ExitCode, MasterError> {
    let pid_file = lock_pid_file(&cfg)?;
    let startup = Startup::Fresh {
        pid_file,
        ready: None,
    };
    let m = Master::start(path, cfg, startup)?;
    Ok(ExitCode::from(m.run() as u8))
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
        // Like the control socket, an upgraded master binds it at handover.
        let admin = match handover {
            None => admin::Admin::open(config.admin.as_ref())?,
            Some(_) => admin::Admin::later(config.admin.as_ref()),
        };
        let identity = supervisor::resolve_identity(&config).map_err(MasterError::Setup)?;
        let nofile = raise_nofile_limit();
        let epoll_err = |e: std::io::Error| MasterError::Setup(format!("epoll: {e}"));
        let poll = Poll::new().map_err(epoll_err)?;
        let mut signals = SignalPipes::install()
            .map_err(|e| MasterError::Setup(format!("signal handlers: {e}")))?;
        for (i, r) in signals.readers.iter_mut().enumerate() {
            poll.registry()
                .register(r, Token(i), Interest::READABLE)
                .map_err(epoll_err)?;
        }
        reload::bind_all(&mut listeners, &config)
            .map_err(|(addr, source)| MasterError::Bind { addr, source })?;
        // After an upgrade: sockets of listens the file no longer has close.
        let binds: Vec<_> = config.listens.iter().map(|l| l.bind).collect();
        listeners.retain(&binds);
        let control_path = config.master.control_socket.clone();
        let mut control = None;
        let mut handover = handover;
        match &mut handover {
            // The old master still owns the control socket until handover.
            Some(h) => poll
                .registry()
                .register(h, HANDOVER, Interest::READABLE)
                .map_err(epoll_err)?,
            None => {
                let mut c = bind_control(&control_path).map_err(|source| MasterError::Control {
                    path: control_path.clone(),
                    source,
                })?;
                poll.registry()
                    .register(&mut c, CONTROL, Interest::READABLE)
                    .map_err(epoll_err)?;
                control = Some(c);
            }
        }
        let now = Instant::now();
        let generation = reload::new_generation(1, Arc::new(config), identity, now)
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
            ready,
            pid_file,
            exe: upgrade::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
            upgrade: None,
            handover,
            handed_over: false,
            admin,
            exit_code: 0,
            dns: dns::Dns::default(),
        };
        m.admin_register();
        log(&format!(
            "master started (pid {}, config {}, {} workers, fd limit {nofile})",
            m.pid,
            m.config_path.display(),
            m.gens[0].config.master.workers
        ));
        if let Some(a) = &m.gens[0].config.admin
            && m.handover.is_none()
        {
            log(&format!("admin listener on http://{}/status", a.bind));
        }
        m.dns_sync(now);
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
        }
        self.finish_stop();
        self.exit_code
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
        } else if t == tokens::DNS_WAKE {
            self.on_dns(now);
        } else if t == tokens::ADMIN_LISTENER {
            self.admin_accept(now);
        } else if tokens::ADMIN_CONNS.contains(&t.0) {
            self.admin_event(t, now);
        } else if tokens::CLIENTS.contains(&t.0) {
            self.on_client(t, now);
        } else if tokens::CHANNELS.contains(&t.0) {
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
                if matches!(self.phase, MasterPhase::Stopping { .. }) {
                    log("reload signal ignored: stopping");
                } else if matches!(
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
    daemon::create_parent_dir(path)?;
    // Only a stale socket is removed; any other file at that path is kept
    // and reported (a misconfigured path must never destroy data).
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ));
        }
        Err(_) => {}
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}
