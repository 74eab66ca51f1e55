//! Owns signal handling of the master: every handled signal writes into its
//! own self-pipe (signal-hook), whose read end is registered in the master's
//! mio loop, and [`signal_to_command`] is the one place a signal becomes a
//! [`Command`] — the same commands the control socket produces.

use mio::net::UnixStream;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use std::io::{self, Read};

/// What a signal asks of the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Stop now (TERM, INT).
    StopFast,
    /// Drain, then stop (QUIT).
    StopGraceful,
    /// Re-read the config (HUP, USR1).
    Reload,
    /// Reap exited workers (CHLD).
    Reap,
    /// Nothing (USR2 is reserved for binary upgrade).
    Ignore,
}

/// The signals the master handles, in token order.
pub const SIGNALS: [i32; 7] = [SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGCHLD, SIGUSR2];

/// The one mapping from signal to command.
pub fn signal_to_command(sig: i32) -> Command {
    match sig {
        SIGTERM | SIGINT => Command::StopFast,
        SIGQUIT => Command::StopGraceful,
        SIGHUP | SIGUSR1 => Command::Reload,
        SIGCHLD => Command::Reap,
        _ => Command::Ignore,
    }
}

/// The read ends of the self-pipes, one per signal in [`SIGNALS`] order.
#[derive(Debug)]
pub struct SignalPipes {
    /// Read ends to register with mio.
    pub readers: Vec<UnixStream>,
}

impl SignalPipes {
    /// Installs the handlers.
    pub fn install() -> io::Result<SignalPipes> {
        let mut readers = Vec::new();
        for &sig in &SIGNALS {
            let (read, write) = std::os::unix::net::UnixStream::pair()?;
            read.set_nonblocking(true)?;
            write.set_nonblocking(true)?;
            signal_hook::low_level::pipe::register(sig, write)?;
            readers.push(UnixStream::from_std(read));
        }
        Ok(SignalPipes { readers })
    }

    /// Empties pipe `i`; true if the signal arrived at least once.
    pub fn drain(&mut self, i: usize) -> bool {
        let mut got = false;
        let mut buf = [0u8; 64];
        let Some(r) = self.readers.get_mut(i) else {
            return false;
        };
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => got = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        got
    }
}

/// In a freshly forked worker: back to default dispositions for every
/// signal the master handles, and nothing blocked.
pub fn reset_in_child() {
    use nix::sys::signal::{
        SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, sigaction, sigprocmask,
    };
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for &sig in &SIGNALS {
        if let Ok(s) = nix::sys::signal::Signal::try_from(sig) {
            // SAFETY: installing SIG_DFL has no handler code to be unsafe.
            let _ = unsafe { sigaction(s, &dfl) };
        }
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_map_to_the_documented_commands() {
        assert_eq!(signal_to_command(SIGTERM), Command::StopFast);
        assert_eq!(signal_to_command(SIGINT), Command::StopFast);
        assert_eq!(signal_to_command(SIGQUIT), Command::StopGraceful);
        assert_eq!(signal_to_command(SIGHUP), Command::Reload);
        assert_eq!(signal_to_command(SIGUSR1), Command::Reload);
        assert_eq!(signal_to_command(SIGCHLD), Command::Reap);
    }
}
