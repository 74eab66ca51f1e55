//! Owns active health checking: the pure rise/fall state machine
//! ([`HealthState`]) and the non-blocking probes ([`Checker`]) that the
//! master's single-threaded mio loop drives.
//!
//! A probe is one short TCP conversation with a server: connect, then for
//! `tcp` nothing more, for `http` one `HTTP/1.0` request whose status (and
//! optionally body, as its framing delimits it) is judged with the data
//! plane's parser ([`crate::http`]), for `send_expect` some bytes out and a
//! reply prefix back. Each finished probe is fed to the server's
//! [`HealthState`] and reported; health only flips after `rise` / `fall`
//! consecutive results (pingora's `observe_health`).
//!
//! The parts, each pure except the last: `state` (the rise/fall counters),
//! `probe` (what each probe kind sends and how its reply is judged; a new
//! kind is added there), `checker` (the sockets, deadlines and schedule) and
//! `tls` (the handshake and plaintext of a probe to a server with `tls`).

mod checker;
mod probe;
mod state;
mod tls;

pub use checker::{Checker, Report, Target};
pub use probe::{MAX_RESPONSE, human_duration};
pub use state::{HealthState, Transition};
