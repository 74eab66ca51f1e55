//! Owns `lbctl reopen-logs` (logrotate's `postrotate`): the master reopens
//! its own daemon log by name (stdout/stderr, `start -d` only) and tells
//! every live worker, over its channel, to reopen its access logs (each
//! worker's writer thread opens the files again, and its stdout/stderr on
//! the daemon log). Lines written meanwhile go to the renamed file, none is
//! lost. Workers started later open the files by name anyway.

use super::*;

impl Master {
    /// Reopens the master's log and asks every worker to reopen theirs.
    pub(super) fn reopen_logs(&mut self) -> Response {
        let own = match daemon::reopen_daemon_log() {
            Ok(true) => "the daemon log",
            Ok(false) => "no daemon log (foreground)",
            Err(e) => {
                log(&format!("reopen-logs: cannot reopen the daemon log: {e}"));
                return Response::Error {
                    message: format!("cannot reopen the daemon log: {e}"),
                };
            }
        };
        let mut told = 0;
        for gi in 0..self.gens.len() {
            for k in 0..self.gens[gi].slots.len() {
                if self.gens[gi].slots[k].pid.is_some()
                    && self.send_to(gi, k, &ToWorker::ReopenLogs)
                {
                    told += 1;
                }
            }
        }
        log(&format!("reopen-logs: reopened {own}; told {told} workers"));
        Response::Done {
            message: format!("reopened {own}; {told} workers reopen their access logs"),
        }
    }
}
