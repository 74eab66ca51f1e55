//! Owns raw -> typed validation: the one step that applies every default,
//! checks every range and cross-field rule, and freezes a [`RawConfig`] into a
//! [`Config`]. Each rejection is a [`ConfigError::Invalid`] whose key is the full
//! path (`listen[0].servers[1].addr`), whose message names the bad value and what
//! is accepted, and whose line is where the value (or its table) was written.
//!
//! This file holds the entry point, the [`validate`] pass state and the limits
//! shared by several sections. Each section of the config file is validated in
//! its own file, which is where a new key of that section is added:
//! `master.rs` (`[master]`), `admin.rs` (`[admin]`), `listen.rs`
//! (`[[listen]]`), `http.rs` (a listen's `mode = "http"` settings), `pools.rs`
//! (a listen's own servers and named pools), `server.rs` (one list of
//! servers), `routes.rs` (`[[listen.route]]`) and `health.rs` (`health`
//! tables), `proxy.rs` (the PROXY protocol keys `accept_proxy`,
//! `timeouts.proxy`, `send_proxy`). `located.rs` reads the scalar values (durations, integers, names,
//! addresses) and builds the located errors.
//!
//! Decisions beyond the doc comments in `config/mod.rs`:
//! - A `health` table without `kind` is `kind = "tcp"`.
//! - A server's `health` is merged key by key over its listen's. If the server
//!   switches `kind`, only the common keys (`interval`, `timeout`, `rise`,
//!   `fall`) are inherited, never the other kind's keys. Keys of one kind written
//!   in a table of another kind are rejected.
//! - `send = ""` is allowed (read the banner only); `expect` must not be empty.
//! - `slow_start = "0s"` means no slow start (`None`).
//! - Zero is rejected for every duration except `slow_start`.
//! - Binds must not repeat or overlap: a wildcard (`0.0.0.0:P`, `[::]:P`) clashes
//!   with any address of the same family on the same port. Port 0 is rejected.
//! - A server address must not be unspecified, port 0, or a listen's own bind.
//! - Server labels (name, else address) and addresses are unique within a
//!   listen, over its own servers and every named pool's, so a name cannot
//!   shadow another server's address.
//! - Every http-only key (`limits`, `forwarded`, `pool`/`idle_pool`, a
//!   `hash_key` other than `"client"`, `timeouts.header`, `timeouts.server`,
//!   named pools, routes) is rejected in a listen that is not `mode = "http"`.
//! - A listen's own servers may be missing or empty when it has named pools;
//!   every non-empty list of servers needs one that is not a backup. A route
//!   may not name an empty `"default"` pool.
//! - A pool's `health` merges over the listen's as a server's does; its
//!   servers' own tables merge over that result.
//! - `limits.uri_bytes` defaults to 8KiB, or to `header_bytes` if smaller.
//! - `forwarded` names a header at most once; a route may not repeat an
//!   earlier route's host and path_prefix (it could never match).
//! - `pid_file`, `control_socket` and `log_file` must be three different files.
//! - `timeouts.proxy` is rejected without `accept_proxy = true` (it could
//!   never apply); `accept_proxy = false` is the same as leaving it out.
//! - A server with `resolve` becomes `max` slots named `LABEL#1` ..
//!   `LABEL#max` (LABEL: its `name`, else its `addr`); their placeholder
//!   addresses are exempt from the unique-address rule. (`resolve.rs`)
//! - `[admin]` needs a `bind`, which must not clash with a listen's bind as
//!   two listens' binds must not.

mod access_log;
mod admin;
mod client_limits;
mod dataplane;
mod health;
mod http;
mod listen;
mod located;
mod master;
mod origin;
mod pools;
mod proxy;
mod resolve;
mod routes;
mod server;
#[cfg(test)]
mod tests;
mod tls;

pub use admin::{MAX_TOKEN, MIN_TOKEN};
pub use health::HEALTH_KINDS;
pub use http::{FORWARDED_HEADERS, HEADER_BYTES, MAX_HEADERS, MAX_IDLE_CONNS, MIN_URI_BYTES};
pub use listen::{MAX_QUEUE, MAX_RETRIES, MODES};
pub use master::MAX_WORKERS;
pub use pools::DEFAULT_POOL;
pub use resolve::{DEFAULT_SLOTS, MAX_SLOTS, MIN_RESOLVE};
pub use server::MAX_WEIGHT;

use super::raw::RawConfig;
use super::{Config, ConfigError};
use std::path::Path;

/// Upper bound of `max_fails`, `rise` and `fall`.
pub const MAX_COUNT: i64 = 1000;

/// What an address field accepts, quoted by the listen and server errors.
const ADDR_EXPECTED: &str = "expected IP:PORT such as 127.0.0.1:6001";

/// Validates the raw config into a typed [`Config`]; `src` is the text `raw`
/// was parsed from (for line numbers), `base` the directory relative paths are
/// resolved against.
pub fn validate(raw: RawConfig, src: &str, base: &Path) -> Result<Config> {
    let v = Validator { src, base };
    let master = v.master(raw.master.unwrap_or_default())?;
    let listens = v.listens(raw.listen.as_ref())?;
    let admin = v.admin(raw.admin.as_ref(), &listens)?;
    let resolver = v.resolver(raw.resolver.as_ref())?;
    Ok(Config {
        master,
        listens,
        admin,
        resolver,
    })
}

/// One validation pass: the source text (for line numbers) and the directory
/// relative paths are resolved against. Its methods are spread over the
/// section files, one `impl` block each.
struct Validator<'a> {
    src: &'a str,
    base: &'a Path,
}

type Result<T> = std::result::Result<T, ConfigError>;
