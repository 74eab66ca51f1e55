//! Owns the control protocol: the typed [`Request`]/[`Response`] spoken on the
//! master's unix control socket (mode 0600, one JSON object per line, see
//! [`crate::channel`]), the [`ToWorker`]/[`FromWorker`] messages of the
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
    /// Runtime change of one server: `LISTEN/SERVER`.
    Server {
        /// `enable`, `disable`, `drain` or `weight`.
        action: ServerAction,
        /// `LISTEN/SERVER` (server name or address as written).
        target: String,
    },
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
