//! Owns the control protocol: the typed [`Request`]/[`Response`] spoken on the
//! master's unix control socket (mode 0600, one JSON object per line, see
//! [`crate::channel`]) and who may send which ([`allowed`]), the
//! [`ToWorker`]/[`FromWorker`] messages of the
//! master↔worker channels, and the blocking [`Client`] the `lbctl` commands use.

use crate::stats::{ConnRow, Status};
use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A command sent to the master.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// The status report.
    Status,
    /// Re-read the config file and replace the workers.
    Reload {
        /// The file the client means; refused if the master runs another.
        #[serde(default)]
        config: Option<std::path::PathBuf>,
    },
    /// Stop the master and its workers (`graceful`: drain first).
    Stop {
        /// Drain open connections (bounded by `drain_timeout`) before exiting.
        graceful: bool,
    },
    /// Every relayed connection of every worker.
    Connections,
    /// Execute the `lbctl` binary on disk as the new master (binary upgrade).
    Upgrade,
    /// Reopen every log file by name (logrotate's `postrotate`).
    ReopenLogs,
    /// Runtime change of one server: `LISTEN/SERVER`.
    Server {
        /// `enable`, `disable`, `drain` or `weight`.
        action: ServerAction,
        /// `LISTEN/SERVER` (server name or address as written).
        target: String,
    },
}

impl Request {
    /// True for requests that only read the master's state (`status`,
    /// `connections`); every other request changes it. No wildcard: a new
    /// request must be classified here.
    pub fn is_read_only(&self) -> bool {
        match self {
            Request::Status | Request::Connections => true,
            Request::Reload { .. }
            | Request::Stop { .. }
            | Request::Upgrade
            | Request::ReopenLogs
            | Request::Server { .. } => false,
        }
    }

    /// What the request does, as the verb of "uid N may not <action>".
    pub fn action(&self) -> String {
        match self {
            Request::Status => "read the status".into(),
            Request::Connections => "list connections".into(),
            Request::Reload { .. } => "reload".into(),
            Request::Stop { .. } => "stop".into(),
            Request::Upgrade => "upgrade".into(),
            Request::ReopenLogs => "reopen the logs".into(),
            Request::Server { action, target } => match action {
                ServerAction::Enable => format!("enable {target}"),
                ServerAction::Disable => format!("disable {target}"),
                ServerAction::Drain => format!("drain {target}"),
                ServerAction::Weight(_) => format!("set the weight of {target}"),
            },
        }
    }
}

/// Whether a control client whose peer credentials (`SO_PEERCRED`) say
/// `peer_uid` may make `req` of a master running as `master_uid`: anyone who
/// can connect may read; only root and the master's own user may change
/// state. `None` (credentials unknown) may only read.
pub fn allowed(peer_uid: Option<u32>, master_uid: u32, req: &Request) -> bool {
    req.is_read_only() || matches!(peer_uid, Some(uid) if uid == 0 || uid == master_uid)
}

/// Runtime server actions.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ServerAction {
    /// Takes traffic again.
    Enable,
    /// No new connections; open ones are left alone.
    Disable,
    /// No new connections; open ones finish (shown in status).
    Drain,
    /// Sets the runtime weight.
    Weight(u32),
}

/// The master's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    /// Done; a human-readable line.
    Done {
        /// What happened.
        message: String,
    },
    /// The status report.
    Status {
        /// The report.
        status: Box<Status>,
    },
    /// Connection listing.
    Connections {
        /// Every connection.
        connections: Vec<ConnRow>,
        /// Workers that did not answer in time (pids).
        busy: Vec<u32>,
    },
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

/// Master → worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ToWorker {
    /// Stop accepting, finish open connections, exit.
    Drain,
    /// Reopen the access logs (and stdout/stderr on the daemon log).
    ReopenLogs,
    /// List open connections; answer with the same id.
    Connections {
        /// Correlation id.
        id: u64,
    },
}

/// Worker → master.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FromWorker {
    /// The worker's listeners are registered: it accepts.
    Ready,
    /// Answer to [`ToWorker::Connections`].
    Connections {
        /// Correlation id.
        id: u64,
        /// Its connections.
        connections: Vec<ConnRow>,
    },
}

/// Why a control request failed on the client side.
#[derive(Debug)]
pub enum ClientError {
    /// No master answers on the socket.
    NotRunning {
        /// The socket path tried.
        socket: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The conversation broke.
    Io(io::Error),
    /// The master's answer could not be decoded.
    Protocol(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NotRunning { socket, source } => write!(
                f,
                "lbctl is not running (no master on {}: {})",
                socket.display(),
                source
            ),
            ClientError::Io(e) => write!(f, "control socket: {e}"),
            ClientError::Protocol(m) => write!(f, "control socket: bad answer: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Blocking client of the control socket.
#[derive(Debug)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client for the master listening on `socket`.
    pub fn new(socket: &Path) -> Client {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    /// Sends one request and waits up to `timeout` for the answer.
    pub fn call(&self, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|source| ClientError::NotRunning {
                socket: self.socket.clone(),
                source,
            })?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(ClientError::Io)?;
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .map_err(ClientError::Io)?;
        let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        stream.write_all(&line).map_err(ClientError::Io)?;
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        let n = reader.read_line(&mut answer).map_err(ClientError::Io)?;
        if n == 0 {
            return Err(ClientError::Protocol(
                "the master closed the connection without answering".into(),
            ));
        }
        serde_json::from_str(&answer).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_request() -> Vec<Request> {
        let server = |action| Request::Server {
            action,
            target: "web/a".into(),
        };
        vec![
            Request::Status,
            Request::Connections,
            Request::Reload { config: None },
            Request::Stop { graceful: true },
            Request::Stop { graceful: false },
            Request::Upgrade,
            server(ServerAction::Enable),
            server(ServerAction::Disable),
            server(ServerAction::Drain),
            server(ServerAction::Weight(3)),
        ]
    }

    #[test]
    fn any_peer_may_read_but_only_root_and_the_master_user_may_change_state() {
        for req in every_request() {
            let read = matches!(req, Request::Status | Request::Connections);
            assert_eq!(req.is_read_only(), read, "{req:?}");
            // Root and the master's own user may do anything.
            assert!(allowed(Some(0), 1000, &req), "root: {req:?}");
            assert!(allowed(Some(1000), 1000, &req), "master's uid: {req:?}");
            assert!(allowed(Some(0), 0, &req), "root master, root peer: {req:?}");
            // Anyone else, or a peer whose credentials are unknown, may only read.
            assert_eq!(allowed(Some(65534), 1000, &req), read, "other: {req:?}");
            assert_eq!(allowed(Some(65534), 0, &req), read, "other: {req:?}");
            assert_eq!(allowed(None, 1000, &req), read, "unknown: {req:?}");
        }
    }

    #[test]
    fn refused_actions_are_named_in_words() {
        let names: Vec<String> = every_request().iter().map(Request::action).collect();
        assert_eq!(
            names,
            [
                "read the status",
                "list connections",
                "reload",
                "stop",
                "stop",
                "upgrade",
                "enable web/a",
                "disable web/a",
                "drain web/a",
                "set the weight of web/a",
            ]
        );
    }

    #[test]
    fn requests_use_a_readable_wire_format() {
        let s = serde_json::to_string(&Request::Stop { graceful: true }).expect("json");
        assert_eq!(s, r#"{"cmd":"stop","graceful":true}"#);
        let s = serde_json::to_string(&Request::Server {
            action: ServerAction::Weight(3),
            target: "web/a".into(),
        })
        .expect("json");
        let back: Request = serde_json::from_str(&s).expect("parse");
        assert!(matches!(
            back,
            Request::Server {
                action: ServerAction::Weight(3),
                ..
            }
        ));
    }
}
