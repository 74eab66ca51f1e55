//! Owns the top-level [`Error`] of every `lbctl` command: it wraps the
//! subsystem errors and maps each to an exit code (0 ok, 1 invalid config or
//! usage, 2 runtime error such as "not running").

use crate::config::ConfigError;
use crate::control::ClientError;
use crate::master::MasterError;
use std::fmt;

/// Any failure of a command.
#[derive(Debug)]
pub enum Error {
    /// The config file is invalid or unreadable.
    Config(ConfigError),
    /// The master could not start.
    Master(MasterError),
    /// The control socket conversation failed (usually: not running).
    Client(ClientError),
    /// The running master refused the request.
    Remote {
        /// Its message.
        message: String,
        /// True when the cause is an invalid config (exit 1).
        config: bool,
    },
    /// Bad command-line usage.
    Usage(String),
    /// Any other runtime failure, naming the step.
    Runtime(String),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Usage(_) => 1,
            Error::Remote { config: true, .. } => 1,
            _ => 2,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "invalid configuration: {e}"),
            Error::Master(e) => write!(f, "{e}"),
            Error::Client(e) => write!(f, "{e}"),
            Error::Remote { message, .. } => write!(f, "{message}"),
            Error::Usage(m) => write!(f, "{m}"),
            Error::Runtime(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => e.source(),
            Error::Master(e) => Some(e),
            Error::Client(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

impl From<MasterError> for Error {
    fn from(e: MasterError) -> Self {
        Error::Master(e)
    }
}

impl From<ClientError> for Error {
    fn from(e: ClientError) -> Self {
        Error::Client(e)
    }
}
