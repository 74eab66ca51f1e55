//! Owns binary upgrade (`lbctl upgrade`, SIGUSR2): the running master forks
//! and executes the `lbctl` binary now on disk, handing it every listening
//! socket as an inherited fd described in [`ENV`], plus two socketpair ends:
//! *ready* (the new master writes "ok" once its workers accept, or its error)
//! and *handover* (the old master closes it once it has released the pid
//! file, the control socket and the `[admin]` listener, which the new master
//! then takes). The old
//! master then drains its workers and exits; if the new binary fails, the
//! old master keeps serving and `upgrade` reports the failure.

use super::listeners::Listeners;
use std::ffi::CString;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Environment variable describing inherited fds:
/// `ready=FD;handover=FD;ADDR=FD,FD;ADDR=FD...`.
pub const ENV: &str = "LBCTL_UPGRADE";

/// What a new master inherited.
#[derive(Debug)]
pub struct Inherited {
    /// Where to write "ok" or the error.
    pub ready: OwnedFd,
    /// EOF here means the old master released the pid file and socket.
    pub handover: UnixStream,
    /// The listening sockets.
    pub listeners: Listeners,
}

/// The binary to execute: the path this process was started from (the
/// kernel appends " (deleted)" once the file was replaced on disk).
pub fn current_exe() -> io::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let s = exe.to_string_lossy();
    Ok(match s.strip_suffix(" (deleted)") {
        Some(p) => p.into(),
        None => exe,
    })
}

/// Sets or clears close-on-exec on `fd`.
fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    // SAFETY: fd is a descriptor this process owns for the whole call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(fd, FcntlArg::F_SETFD(flags))?;
    Ok(())
}

/// Forks and executes `exe start -c config` with the sockets inherited.
/// Returns the child's pid and the old master's ends of ready/handover.
pub fn spawn_new_master(
    exe: &Path,
    config: &Path,
    listeners: &Listeners,
) -> io::Result<(nix::unistd::Pid, UnixStream, UnixStream)> {
    let (ready_old, ready_new) = UnixStream::pair()?;
    let (hand_old, hand_new) = UnixStream::pair()?;
    let mut spec = format!(
        "ready={};handover={}",
        ready_new.as_raw_fd(),
        hand_new.as_raw_fd()
    );
    for (addr, fds) in listeners.fds() {
        let list: Vec<String> = fds.iter().map(|f| f.to_string()).collect();
        spec.push_str(&format!(";{addr}={}", list.join(",")));
    }
    let c = |s: &str| CString::new(s).map_err(io::Error::other);
    let path = c(&exe.to_string_lossy())?;
    let args = [
        c("lbctl")?,
        c("start")?,
        c("-c")?,
        c(&config.to_string_lossy())?,
    ];
    let env_entry = c(&format!("{ENV}={spec}"))?;
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != ENV)
        .filter_map(|(k, v)| {
            let mut e = k.into_encoded_bytes();
            e.push(b'=');
            e.extend(v.into_encoded_bytes());
            CString::new(e).ok()
        })
        .collect();
    env.push(env_entry);
    let mut inherit: Vec<RawFd> = vec![ready_new.as_raw_fd(), hand_new.as_raw_fd()];
    for (_, fds) in listeners.fds() {
        inherit.extend(fds);
    }
    // SAFETY: the master is single-threaded; the child only adjusts fd
    // flags, resets signals and calls execve (or _exit).
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => {
            drop(ready_new);
            drop(hand_new);
            ready_old.set_nonblocking(true)?;
            hand_old.set_nonblocking(true)?;
            Ok((child, ready_old, hand_old))
        }
        nix::unistd::ForkResult::Child => {
            super::signals::reset_in_child();
            for fd in &inherit {
                let _ = set_cloexec(*fd, false);
            }
            let err = nix::unistd::execve(&path, &args, &env).err();
            let msg = format!(
                "cannot execute {}: {}",
                exe.display(),
                err.map_or_else(|| "unknown error".to_string(), |e| e.desc().to_string())
            );
            let _ = nix::unistd::write(&ready_new, msg.as_bytes());
            // SAFETY: leave without running the old master's destructors.
            unsafe { nix::libc::_exit(127) }
        }
    }
}

/// In a master started by an upgrade: takes the inherited fds described in
/// [`ENV`] (and removes the variable so its own children do not see it).
pub fn inherited() -> Option<Result<Inherited, String>> {
    let spec = std::env::var(ENV).ok()?;
    // SAFETY: called at startup while the process is single-threaded.
    unsafe { std::env::remove_var(ENV) };
    Some(parse_and_adopt(&spec))
}

fn parse_fd(s: &str) -> Result<RawFd, String> {
    s.parse::<RawFd>()
        .map_err(|_| format!("{ENV}: bad fd '{s}'"))
        .and_then(|fd| {
            if fd > 2 {
                Ok(fd)
            } else {
                Err(format!("{ENV}: fd {fd} is not an inherited socket"))
            }
        })
}

fn parse_and_adopt(spec: &str) -> Result<Inherited, String> {
    let mut ready = None;
    let mut handover = None;
    let mut listeners = Listeners::new();
    for part in spec.split(';') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{ENV}: bad entry '{part}'"))?;
        match k {
            "ready" => {
                let fd = parse_fd(v)?;
                // SAFETY: the old master passed this fd to us for our sole use.
                ready = Some(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            "handover" => {
                let fd = parse_fd(v)?;
                // SAFETY: as above.
                let s = unsafe { UnixStream::from_raw_fd(fd) };
                s.set_nonblocking(true).map_err(|e| e.to_string())?;
                handover = Some(s);
            }
            addr => {
                let addr: SocketAddr = addr
                    .parse()
                    .map_err(|_| format!("{ENV}: bad address '{addr}'"))?;
                let mut socks = Vec::new();
                for f in v.split(',') {
                    let fd = parse_fd(f)?;
                    // SAFETY: as above; each fd is a listening TCP socket.
                    let l = unsafe { TcpListener::from_raw_fd(fd) };
                    set_cloexec(fd, true).map_err(|e| e.to_string())?;
                    socks.push(l);
                }
                listeners.adopt(addr, socks);
            }
        }
    }
    Ok(Inherited {
        ready: ready.ok_or_else(|| format!("{ENV}: no ready fd"))?,
        handover: handover.ok_or_else(|| format!("{ENV}: no handover fd"))?,
        listeners,
    })
}

/// An upgrade the old master is waiting on.
#[derive(Debug)]
pub struct InProgress {
    /// The new master's pid.
    pub child: nix::unistd::Pid,
    /// Its readiness answer arrives here.
    pub ready: mio::net::UnixStream,
    /// Closed by us to hand over the pid file and control socket.
    pub handover: UnixStream,
    /// Bytes read from `ready` so far.
    pub answer: Vec<u8>,
    /// Control clients waiting for the outcome.
    pub waiters: Vec<mio::Token>,
    /// Given up at this time.
    pub deadline: std::time::Instant,
    /// The child was reaped (its pid must not be signalled).
    pub exited: bool,
}

/// How long a new master may take to get its workers accepting.
pub const UPGRADE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

use super::{Master, MasterPhase, UPGRADE_READY, log};
use crate::control::Response;
use mio::Interest;

impl Master {
    /// Starts a binary upgrade (control request or SIGUSR2).
    pub(super) fn begin_upgrade(&mut self, waiter: Option<mio::Token>, now: std::time::Instant) {
        if let Some(up) = &mut self.upgrade {
            up.waiters.extend(waiter);
            return;
        }
        if self.phase != MasterPhase::Running {
            if let Some(w) = waiter {
                self.respond(
                    w,
                    Response::Error {
                        message: format!("cannot upgrade while {}", self.phase.name()),
                    },
                );
            }
            return;
        }
        log(&format!("upgrade: executing {}", self.exe.display()));
        match spawn_new_master(&self.exe, &self.config_path, &self.listeners) {
            Ok((child, ready, handover)) => {
                let mut ready = mio::net::UnixStream::from_std(ready);
                if let Err(e) =
                    self.poll
                        .registry()
                        .register(&mut ready, UPGRADE_READY, Interest::READABLE)
                {
                    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                    return self.upgrade_answer(waiter.into_iter().collect(), Err(e.to_string()));
                }
                self.upgrade = Some(InProgress {
                    child,
                    ready,
                    handover,
                    answer: Vec::new(),
                    waiters: waiter.into_iter().collect(),
                    deadline: now + UPGRADE_TIMEOUT,
                    exited: false,
                });
            }
            Err(e) => self.upgrade_answer(
                waiter.into_iter().collect(),
                Err(format!("cannot start the new binary: {e}")),
            ),
        }
    }

    /// The new master said something (or exited).
    pub(super) fn on_upgrade_ready(&mut self, now: std::time::Instant) {
        use std::io::Read;
        let Some(up) = &mut self.upgrade else {
            return;
        };
        let mut buf = [0u8; 1024];
        let mut eof = false;
        loop {
            match up.ready.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => up.answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        if up.answer.starts_with(b"ok") {
            self.complete_upgrade(now);
        } else if eof {
            let msg = String::from_utf8_lossy(&up.answer).trim().to_string();
            let msg = if msg.is_empty() {
                "the new master exited during startup (see the log)".to_string()
            } else {
                msg
            };
            self.fail_upgrade(msg);
        }
    }

    /// Gives up on an upgrade past its deadline.
    pub(super) fn check_upgrade_deadline(&mut self, now: std::time::Instant) {
        if self.upgrade.as_ref().is_some_and(|u| now >= u.deadline) {
            self.fail_upgrade(format!(
                "the new master did not get its workers accepting within {}s",
                UPGRADE_TIMEOUT.as_secs()
            ));
        }
    }

    pub(super) fn fail_upgrade(&mut self, msg: String) {
        let Some(mut up) = self.upgrade.take() else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut up.ready);
        if !up.exited {
            let _ = nix::sys::signal::kill(up.child, nix::sys::signal::Signal::SIGKILL);
        }
        log(&format!("upgrade failed, this master keeps serving: {msg}"));
        self.upgrade_answer(up.waiters, Err(msg));
    }

    fn upgrade_answer(&mut self, waiters: Vec<mio::Token>, result: Result<String, String>) {
        let resp = match result {
            Ok(message) => Response::Done { message },
            Err(e) => Response::Error {
                message: format!("upgrade failed, old master keeps serving: {e}"),
            },
        };
        self.respond_all(waiters, resp);
    }

    /// The new master accepts: hand over the pid file and control socket,
    /// then drain our workers and exit.
    fn complete_upgrade(&mut self, now: std::time::Instant) {
        let Some(mut up) = self.upgrade.take() else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut up.ready);
        let msg = format!(
            "upgraded: new master pid {} accepting; old master {} draining",
            up.child, self.pid
        );
        log(&msg);
        self.upgrade_answer(std::mem::take(&mut up.waiters), Ok(msg));
        if let Some(mut c) = self.control.take() {
            let _ = self.poll.registry().deregister(&mut c);
        }
        self.admin_release();
        if let Some(p) = self.pid_file.take() {
            p.release();
        }
        self.handed_over = true;
        drop(up.handover);
        self.begin_stop(true, now);
    }

    /// In a new master: the old one released the pid file and control
    /// socket; take them.
    pub(super) fn on_handover(&mut self) {
        use std::io::Read;
        let Some(h) = &mut self.handover else {
            return;
        };
        let mut buf = [0u8; 16];
        loop {
            match h.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if let Some(mut h) = self.handover.take() {
            let _ = self.poll.registry().deregister(&mut h);
        }
        let config = self.gens.last().map(|g| g.config.clone());
        if let Some(cfg) = config {
            match super::lock_pid_file(&cfg) {
                Ok(p) => self.pid_file = Some(p),
                Err(e) => log(&format!("upgrade: cannot take the pid file: {e}")),
            }
        }
        match super::bind_control(&self.control_path) {
            Ok(mut c) => {
                if self
                    .poll
                    .registry()
                    .register(&mut c, super::CONTROL, Interest::READABLE)
                    .is_ok()
                {
                    self.control = Some(c);
                }
            }
            Err(e) => log(&format!(
                "upgrade: cannot create control socket {}: {e}",
                self.control_path.display()
            )),
        }
        self.admin_take_over();
        super::daemon::sd_notify(&format!("MAINPID={}\nREADY=1", self.pid));
        log("upgrade: took over the pid file and control socket");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_upgrade_specs_are_rejected_with_the_reason() {
        assert!(parse_and_adopt("ready=x").is_err());
        assert!(parse_and_adopt("ready=1;handover=9").is_err());
        let e = parse_and_adopt("nonsense").err().unwrap_or_default();
        assert!(e.contains("bad entry"), "{e}");
    }
}
