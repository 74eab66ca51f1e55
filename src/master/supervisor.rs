//! Owns worker processes: the per-generation slot table ([`Generation`],
//! [`Slot`], [`WorkerState`]), forking a worker into a slot (fds it must not
//! keep are closed, signals reset, privileges dropped, parent-death signal
//! set), describing how a worker ended, and the crash back-off.

use super::listeners::Listeners;
use crate::channel::{LineConn, MAX_WORKER_LINE};
use crate::config::Config;
use crate::health::Checker;
use crate::shm::Region;
use crate::worker::{self, WorkerCtx};
use mio::net::UnixStream;
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Gid, Pid, Uid};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Life of one worker slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Forked, not accepting yet.
    Starting,
    /// Accepting.
    Running,
    /// Told to drain; killed at the deadline.
    Draining {
        /// When it is killed.
        deadline: Instant,
    },
    /// Crashed; respawned at this time.
    Restarting {
        /// When.
        at: Instant,
    },
    /// Gone for good.
    Exited,
}

impl WorkerState {
    /// The word shown in `status`.
    pub fn name(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Running => "running",
            WorkerState::Draining { .. } => "draining",
            WorkerState::Restarting { .. } => "restarting",
            WorkerState::Exited => "exited",
        }
    }
}

/// One worker slot of a generation.
#[derive(Debug)]
pub struct Slot {
    /// The worker's pid while it lives.
    pub pid: Option<Pid>,
    /// Its state.
    pub state: WorkerState,
    /// The channel to it.
    pub channel: Option<LineConn<UnixStream>>,
    /// Crashes since the slot was created.
    pub restarts: u64,
    /// Consecutive quick crashes (drives the back-off).
    pub streak: u32,
    /// When the current process was forked.
    pub started: Instant,
}

/// Per-server health bookkeeping the master shows in `status`.
#[derive(Debug, Clone)]
pub struct ServerNote {
    /// Last check result or state reason.
    pub check: String,
    /// Since when the state holds.
    pub since: Instant,
    /// Consecutive passed checks.
    pub ok_in_row: u32,
    /// Consecutive failed checks.
    pub failed_in_row: u32,
}

/// One configuration generation: its config, shared region, workers and
/// health checker.
#[derive(Debug)]
pub struct Generation {
    /// Generation number (1, 2, ...).
    pub number: u64,
    /// Its config.
    pub config: Arc<Config>,
    /// Its shared region.
    pub region: Arc<Region>,
    /// Its worker slots.
    pub slots: Vec<Slot>,
    /// Its health checker, if any server has a check.
    pub checker: Option<Checker>,
    /// Per global server index: what `status` says about its state.
    pub notes: Vec<ServerNote>,
    /// True once it has been told to drain (a newer one serves).
    pub retiring: bool,
    /// Sockets bound for it (undone if it never starts).
    pub binds: Vec<(std::net::SocketAddr, usize)>,
    /// Privileges its workers drop to, resolved from its config's
    /// `user`/`group` (kept per generation: a reload that never starts must
    /// not change who the serving generation's respawned workers run as).
    pub identity: Identity,
}

impl Generation {
    /// True when every slot has accepted (or the generation has none left).
    pub fn all_running(&self) -> bool {
        self.slots.iter().all(|s| s.state == WorkerState::Running)
    }

    /// True when no worker of it is alive or pending.
    pub fn all_exited(&self) -> bool {
        self.slots.iter().all(|s| s.state == WorkerState::Exited)
    }
}

/// Crash back-off: the first crash of a worker that had been running for a
/// while respawns at once; quick crashes in a row wait 100ms, 200ms, ... up
/// to 30s.
pub fn backoff(streak: u32) -> Duration {
    if streak <= 1 {
        Duration::ZERO
    } else {
        let exp = (streak - 2).min(9);
        (Duration::from_millis(100) * (1u32 << exp)).min(Duration::from_secs(30))
    }
}

/// A worker lived this long counts as healthy: its crash resets the streak.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

/// How a worker ended, in words.
pub fn describe_exit(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, 0) => "exited normally".to_string(),
        WaitStatus::Exited(_, code) => format!("exited with code {code}"),
        WaitStatus::Signaled(_, sig, core) => format!(
            "killed by signal {} ({}){}",
            *sig as i32,
            sig.as_str(),
            if *core { ", core dumped" } else { "" }
        ),
        other => format!("{other:?}"),
    }
}

/// Privileges the workers drop to after fork.
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity {
    /// Group to switch to.
    pub gid: Option<Gid>,
    /// User to switch to.
    pub uid: Option<Uid>,
}

/// Resolves `user`/`group` names (done by the master before forking).
pub fn resolve_identity(config: &Config) -> Result<Identity, String> {
    let mut id = Identity::default();
    if let Some(name) = &config.master.user {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => {
                id.uid = Some(u.uid);
                id.gid = Some(u.gid);
            }
            Ok(None) => return Err(format!("master.user: no such user '{name}'")),
            Err(e) => return Err(format!("master.user: cannot look up '{name}': {e}")),
        }
    }
    if let Some(name) = &config.master.group {
        match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => id.gid = Some(g.gid),
            Ok(None) => return Err(format!("master.group: no such group '{name}'")),
            Err(e) => return Err(format!("master.group: cannot look up '{name}': {e}")),
        }
    }
    Ok(id)
}

/// The identity `config`'s workers run as. When its `user` and `group` are
/// the names `running`'s identity was resolved from, that identity is reused
/// without a lookup (user and group databases may sit behind NSS on the
/// network, and the master's loop must not wait on them); otherwise the
/// names are looked up now.
pub fn identity_for(
    config: &Config,
    running: Option<(&Config, Identity)>,
) -> Result<Identity, String> {
    match running {
        Some((old, identity)) if !identity_changed(old, config) => Ok(identity),
        _ => resolve_identity(config),
    }
}

/// Whether `new` names another user or group than `old` (so the names must
/// be resolved again).
pub fn identity_changed(old: &Config, new: &Config) -> bool {
    !old.master.same_accounts(&new.master)
}

/// Everything [`spawn`] needs besides the generation.
#[derive(Debug)]
pub struct SpawnEnv<'a> {
    /// The master's listening sockets.
    pub listeners: &'a Listeners,
    /// The master's pid (a worker whose parent changed exits).
    pub master_pid: Pid,
}

/// Forks a worker into `slot` of `generation`. Returns the pid and the master's end
/// of the channel. The child never returns from this function.
pub fn spawn(
    generation: &Generation,
    slot: usize,
    env: &SpawnEnv<'_>,
) -> std::io::Result<(Pid, LineConn<UnixStream>)> {
    let (master_end, worker_end) = std::os::unix::net::UnixStream::pair()?;
    let mut listeners = Vec::new();
    for (i, l) in generation.config.listens.iter().enumerate() {
        for sock in env
            .listeners
            .for_worker(l.bind, slot, generation.config.master.workers.get())
        {
            listeners.push((i, sock.try_clone()?));
        }
    }
    // SAFETY: the master is single-threaded, so the child is a consistent
    // copy; it runs only the worker loop and exits without returning.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => {
            drop(worker_end);
            drop(listeners);
            master_end.set_nonblocking(true)?;
            Ok((
                child,
                LineConn::new(UnixStream::from_std(master_end), MAX_WORKER_LINE),
            ))
        }
        ForkResult::Child => {
            drop(master_end);
            let code = child_main(generation, slot, env, listeners, worker_end);
            std::process::exit(code);
        }
    }
}

fn child_main(
    generation: &Generation,
    slot: usize,
    env: &SpawnEnv<'_>,
    listeners: Vec<(usize, std::net::TcpListener)>,
    channel: std::os::unix::net::UnixStream,
) -> i32 {
    super::signals::reset_in_child();
    let mut keep: Vec<RawFd> = vec![0, 1, 2, channel.as_raw_fd()];
    keep.extend(listeners.iter().map(|(_, l)| l.as_raw_fd()));
    close_other_fds(&keep);
    if let Some(gid) = generation.identity.gid {
        let _ = nix::unistd::setgroups(&[gid]);
        if let Err(e) = nix::unistd::setgid(gid) {
            eprintln!("lbctl worker: cannot switch to group {gid}: {e}");
            return 4;
        }
    }
    if let Some(uid) = generation.identity.uid
        && let Err(e) = nix::unistd::setuid(uid)
    {
        eprintln!("lbctl worker: cannot switch to user {uid}: {e}");
        return 4;
    }
    // After the privilege drop: changing uid/gid clears the death signal.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    if nix::unistd::getppid() != env.master_pid {
        return 0;
    }
    let _ = nix::sys::prctl::set_name(c"lbctl: worker");
    worker::run(WorkerCtx {
        slot,
        generation: generation.number,
        config: generation.config.clone(),
        listeners,
        region: generation.region.clone(),
        channel,
    })
}

/// Closes every fd of this process except `keep` (the master's control
/// socket, signal pipes, epoll, pid file lock, other workers' channels).
fn close_other_fds(keep: &[RawFd]) {
    let fds: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
            .collect(),
        Err(_) => return,
    };
    for fd in fds {
        if !keep.contains(&fd) {
            // SAFETY: closing a descriptor this process owns; nothing in the
            // child uses the closed ones (they belong to the master's loop).
            unsafe { nix::libc::close(fd) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        assert_eq!(backoff(1), Duration::ZERO);
        assert_eq!(backoff(2), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(200));
        assert_eq!(backoff(6), Duration::from_millis(1600));
        assert_eq!(backoff(50), Duration::from_secs(30));
    }

    fn config_as(user: Option<&str>, group: Option<&str>) -> Config {
        let mut master = String::new();
        if let Some(u) = user {
            master.push_str(&format!("user = \"{u}\"\n"));
        }
        if let Some(g) = group {
            master.push_str(&format!("group = \"{g}\"\n"));
        }
        let src = format!(
            "[master]\nworkers = 1\n{master}\n[[listen]]\nname = \"web\"\nbind = \"127.0.0.1:1\"\n\n[[listen.servers]]\naddr = \"127.0.0.1:2\"\n"
        );
        crate::config::parse(&src, std::path::Path::new("/")).expect("config")
    }

    #[test]
    fn identity_is_not_resolved_again_when_user_and_group_are_unchanged() {
        // Names no host has: a lookup would fail, so Ok proves none was made.
        let old = config_as(
            Some("lbctl-test-no-such-user"),
            Some("lbctl-test-no-such-group"),
        );
        let running = Identity {
            uid: Some(Uid::from_raw(4242)),
            gid: Some(Gid::from_raw(4343)),
        };
        let same = config_as(
            Some("lbctl-test-no-such-user"),
            Some("lbctl-test-no-such-group"),
        );
        let got = identity_for(&same, Some((&old, running))).expect("reused, not looked up");
        assert_eq!((got.uid, got.gid), (running.uid, running.gid));
        assert!(!identity_changed(&old, &same));
    }

    #[test]
    fn identity_is_resolved_when_user_or_group_changed() {
        let old = config_as(Some("lbctl-test-no-such-user"), None);
        let running = Identity {
            uid: Some(Uid::from_raw(4242)),
            gid: Some(Gid::from_raw(4242)),
        };
        for new in [
            config_as(Some("lbctl-test-other-user"), None),
            config_as(
                Some("lbctl-test-no-such-user"),
                Some("lbctl-test-no-such-group"),
            ),
        ] {
            assert!(identity_changed(&old, &new));
            let err = identity_for(&new, Some((&old, running))).expect_err("looked up, not found");
            assert!(err.contains("no such"), "{err}");
        }
        // Dropping user and group resolves to "stay as the master is".
        let none = config_as(None, None);
        assert!(identity_changed(&old, &none));
        let got = identity_for(&none, Some((&old, running))).expect("nothing to look up");
        assert_eq!((got.uid, got.gid), (None, None));
        // With no running generation the names are always resolved.
        assert!(identity_for(&old, None).is_err());
    }

    #[test]
    fn exits_are_described_in_words() {
        let pid = Pid::from_raw(1);
        assert_eq!(
            describe_exit(&WaitStatus::Exited(pid, 3)),
            "exited with code 3"
        );
        assert_eq!(
            describe_exit(&WaitStatus::Signaled(
                pid,
                nix::sys::signal::Signal::SIGKILL,
                false
            )),
            "killed by signal 9 (SIGKILL)"
        );
    }
}
