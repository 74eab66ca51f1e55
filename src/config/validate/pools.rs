//! Owns validation of a listen's server pools: its own `servers` (pool
//! `"default"`, required unless there are named pools) and, with
//! `mode = "http"`, the named pools `[[listen.backend]]` (or `[[listen.pool]]`,
//! see `raw/http.rs`): each pool's `name` (unique, not `"default"`),
//! `balance` (default: the listen's), `health` (merged over the listen's, and
//! under its servers' own) and `servers` (required, checked by `server.rs`).
//! Every pool's servers are appended to one flat list, the listen's
//! `servers`, and each [`PoolConfig`] keeps its range of it. A new key of a
//! named pool is added here (field in `raw/http.rs` `RawBackend`, typed field
//! in `mod.rs` `PoolConfig`).

use super::health::merge_health;
use super::server::{Flat, Inherit};
use super::{Result, Validator};
use crate::config::raw::{RawBackend, RawHealth, RawListen, RawPool};
use crate::config::{BalanceKind, HealthConfig, Mode, PoolConfig, ServerConfig};
use std::net::SocketAddr;
use toml::Spanned;

/// The name of `pools[0]`, the listen's own servers.
pub const DEFAULT_POOL: &str = "default";

const SERVERS_EXPECTED: &str =
    "expected at least one server such as servers = [{ addr = \"127.0.0.1:6001\" }]";

/// What a listen balances to, before routes.
pub(super) struct Backends {
    /// Every server, flattened: the listen's own, then each pool's.
    pub servers: Vec<ServerConfig>,
    /// `pools[0]` is the listen's own servers.
    pub pools: Vec<PoolConfig>,
}

impl Validator<'_> {
    pub(super) fn backends(
        &self,
        p: &str,
        listen: &Spanned<RawListen>,
        mode: Mode,
        balance: BalanceKind,
        listen_health: Option<&HealthConfig>,
        binds: &[Option<SocketAddr>],
    ) -> Result<Backends> {
        let l = listen.get_ref();
        let (spelling, named) = self.named_pools(p, l, mode)?;
        let empty = RawHealth::default();
        let listen_raw_health = l.health.as_ref().map_or(&empty, Spanned::get_ref);
        let mut flat = Flat::default();
        let key = format!("{p}.servers");
        match &l.servers {
            Some(s) if !s.get_ref().is_empty() => {
                let inherit = Inherit {
                    raw_health: listen_raw_health,
                    health: listen_health,
                    pool: None,
                    tls: None,
                };
                self.server_list(&key, s, &inherit, binds, &mut flat)?;
            }
            // With named pools the listen's own servers may be left out.
            _ if !named.is_empty() => {}
            Some(s) => return Err(self.invalid(&key, s, format!("empty, {SERVERS_EXPECTED}"))),
            None => {
                return Err(self.invalid(&key, listen, format!("missing, {SERVERS_EXPECTED}")));
            }
        }
        let mut pools = vec![PoolConfig {
            name: DEFAULT_POOL.to_string(),
            balance,
            servers: 0..flat.servers.len(),
        }];
        for (j, b) in named.iter().enumerate() {
            let bp = format!("{p}.{spelling}[{j}]");
            let pool = self.named_pool(&bp, b, &pools, balance, listen_raw_health, listen_health);
            let (name, balance, raw_health, health) = pool?;
            let br = b.get_ref();
            let key = format!("{bp}.servers");
            let raw = match &br.servers {
                Some(s) if !s.get_ref().is_empty() => s,
                Some(s) => return Err(self.invalid(&key, s, format!("empty, {SERVERS_EXPECTED}"))),
                None => return Err(self.invalid(&key, b, format!("missing, {SERVERS_EXPECTED}"))),
            };
            let pool_tls = self.origin_tls(&bp, br.tls.as_ref())?;
            let inherit = Inherit {
                raw_health: &raw_health,
                health: health.as_ref(),
                pool: Some(&name),
                tls: pool_tls.as_ref(),
            };
            let start = flat.servers.len();
            self.server_list(&key, raw, &inherit, binds, &mut flat)?;
            pools.push(PoolConfig {
                name,
                balance,
                servers: start..flat.servers.len(),
            });
        }
        Ok(Backends {
            servers: flat.servers,
            pools,
        })
    }

    /// The named pools as written, with the key they were written under
    /// (`backend` or `pool`); none for a listen without them.
    fn named_pools<'l>(
        &self,
        p: &str,
        l: &'l RawListen,
        mode: Mode,
    ) -> Result<(&'static str, &'l [Spanned<RawBackend>])> {
        let as_pool = match &l.pool {
            Some(s) => match s.get_ref() {
                RawPool::Named(list) => Some((s, list.as_slice())),
                RawPool::Conn(_) => None,
            },
            None => None,
        };
        match (&l.backend, as_pool) {
            (Some(_), Some((at, _))) => Err(self.invalid(
                &format!("{p}.pool"),
                at,
                "both [[listen.backend]] and [[listen.pool]] are given, they are one list by two names: keep one".into(),
            )),
            (Some(b), None) => {
                self.http_only(&format!("{p}.backend"), b, mode)?;
                Ok(("backend", b.get_ref().as_slice()))
            }
            (None, Some((at, list))) => {
                self.http_only(&format!("{p}.pool"), at, mode)?;
                Ok(("pool", list))
            }
            (None, None) => Ok(("backend", &[])),
        }
    }

    /// A named pool's `name`, `balance` and `health` (typed, and raw for its
    /// servers to merge over).
    fn named_pool(
        &self,
        bp: &str,
        b: &Spanned<RawBackend>,
        earlier: &[PoolConfig],
        listen_balance: BalanceKind,
        listen_raw_health: &RawHealth,
        listen_health: Option<&HealthConfig>,
    ) -> Result<(String, BalanceKind, RawHealth, Option<HealthConfig>)> {
        let br = b.get_ref();
        let key = format!("{bp}.name");
        let Some(raw_name) = &br.name else {
            return Err(self.invalid(
                &key,
                b,
                "missing, expected a pool name such as name = \"api\"".into(),
            ));
        };
        let name = self.name(&key, raw_name)?;
        if name == DEFAULT_POOL {
            return Err(self.invalid(
                &key,
                raw_name,
                "'default' is the name of the listen's own servers, expected another name".into(),
            ));
        }
        if earlier.iter().any(|e| e.name == name) {
            return Err(self.invalid(
                &key,
                raw_name,
                format!("duplicate pool name '{name}', already used by an earlier pool"),
            ));
        }
        let balance = match &br.balance {
            Some(s) => self.balance(&format!("{bp}.balance"), s)?,
            None => listen_balance,
        };
        let (raw_health, health) = match &br.health {
            Some(h) => {
                let merged = merge_health(listen_raw_health, h.get_ref());
                let typed = self.health(&format!("{bp}.health"), h, &merged)?;
                (merged, Some(typed))
            }
            None => (listen_raw_health.clone(), listen_health.cloned()),
        };
        Ok((name, balance, raw_health, health))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthKind;
    use crate::config::validate::tests::{http_with, listen_with, ok, rejected};
    use std::time::Duration;

    /// An http listen without its own servers (lines 1-3), then `extra`.
    fn pools_only(extra: &str) -> String {
        format!("[[listen]]\nbind = \"127.0.0.1:8080\"\nmode = \"http\"\n{extra}\n")
    }

    const API: &str = "[[listen.backend]]\nname = \"api\"\nservers = [{ addr = \"127.0.0.1:7001\" }, { addr = \"127.0.0.1:7002\" }]";

    #[test]
    fn a_tcp_listen_has_one_default_pool_of_its_servers() {
        let c = ok(&listen_with(""));
        let l = &c.listens[0];
        assert_eq!(
            l.pools,
            [PoolConfig {
                name: "default".into(),
                balance: BalanceKind::RoundRobin,
                servers: 0..1
            }]
        );
        assert_eq!(l.servers[0].pool, None);
    }

    #[test]
    fn pool_servers_are_appended_after_the_listen_servers() {
        let c = ok(&http_with(&format!(
            "balance = \"least_connections\"\n{API}"
        )));
        let l = &c.listens[0];
        let addrs: Vec<String> = l.servers.iter().map(|s| s.addr.to_string()).collect();
        assert_eq!(
            addrs,
            ["127.0.0.1:6001", "127.0.0.1:7001", "127.0.0.1:7002"]
        );
        assert_eq!(
            l.pools[1],
            PoolConfig {
                name: "api".into(),
                balance: BalanceKind::LeastConnections,
                servers: 1..3
            }
        );
        assert_eq!(l.pools[0].servers, 0..1);
        assert_eq!(l.servers[0].pool, None);
        assert_eq!(l.servers[2].pool.as_deref(), Some("api"));
    }

    #[test]
    fn pools_are_also_read_as_listen_pool_with_their_own_balance() {
        let src = pools_only(concat!(
            "[[listen.pool]]\nname = \"a\"\nbalance = \"first\"\nservers = [{ addr = \"127.0.0.1:7001\" }]\n",
            "[[listen.pool]]\nname = \"b\"\nservers = [{ addr = \"127.0.0.1:7002\" }]",
        ));
        let c = ok(&src);
        let l = &c.listens[0];
        let names: Vec<&str> = l.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["default", "a", "b"]);
        assert_eq!(l.pools[0].servers, 0..0);
        assert_eq!(l.pools[1].balance, BalanceKind::First);
        assert_eq!(l.pools[2].balance, BalanceKind::RoundRobin);
        assert_eq!(l.pools[2].servers, 1..2);
        // The connection pool stays at its defaults.
        assert_eq!(l.http.pool.max_idle, 64);
    }

    #[test]
    fn listen_pool_array_and_idle_pool_table_may_coexist() {
        let src = pools_only(
            "idle_pool = { max_idle = 5 }\n[[listen.pool]]\nname = \"a\"\nservers = [{ addr = \"127.0.0.1:7001\" }]",
        );
        let c = ok(&src);
        assert_eq!(c.listens[0].http.pool.max_idle, 5);
        assert_eq!(c.listens[0].pools.len(), 2);
    }

    #[test]
    fn pool_health_merges_over_the_listen_and_under_its_servers() {
        let src = http_with(concat!(
            "health = { kind = \"http\", path = \"/h\", interval = \"5s\" }\n",
            "[[listen.backend]]\nname = \"api\"\nhealth = { path = \"/api/h\" }\n",
            "servers = [{ addr = \"127.0.0.1:7001\" }, { addr = \"127.0.0.1:7002\", health = { rise = 7 } }]",
        ));
        let c = ok(&src);
        let l = &c.listens[0];
        let path = |i: usize| match l.servers[i].health.as_ref().map(|h| &h.kind) {
            Some(HealthKind::Http(h)) => h.path.clone(),
            other => panic!("expected http, got {other:?}"),
        };
        assert_eq!(
            (path(0), path(1), path(2)),
            ("/h".into(), "/api/h".into(), "/api/h".into())
        );
        let h2 = l.servers[2].health.clone().expect("health");
        assert_eq!((h2.interval, h2.rise), (Duration::from_secs(5), 7));
        // A pool without health inherits the listen's as is.
        let c = ok(&http_with(&format!(
            "health = {{ kind = \"tcp\", rise = 4 }}\n{API}"
        )));
        assert_eq!(
            c.listens[0].servers[2].health.as_ref().map(|h| h.rise),
            Some(4)
        );
    }

    #[test]
    fn a_listen_without_servers_or_pools_still_needs_servers() {
        let msg = rejected(&pools_only(""), "listen[0].servers", 1);
        assert!(msg.contains("missing"), "{msg}");
        rejected(&pools_only("servers = []"), "listen[0].servers", 4);
    }

    #[test]
    fn own_servers_of_only_backups_are_rejected_even_with_pools() {
        let src = pools_only(&format!(
            "servers = [{{ addr = \"127.0.0.1:6001\", backup = true }}]\n{API}"
        ));
        rejected(&src, "listen[0].servers", 4);
    }

    #[test]
    fn pool_without_servers_or_with_only_backups_is_rejected() {
        rejected(
            &http_with("[[listen.backend]]\nname = \"api\""),
            "listen[0].backend[0].servers",
            5,
        );
        rejected(
            &http_with("[[listen.backend]]\nname = \"api\"\nservers = []"),
            "listen[0].backend[0].servers",
            7,
        );
        let msg = rejected(
            &http_with(
                "[[listen.pool]]\nname = \"api\"\nservers = [{ addr = \"127.0.0.1:7001\", backup = true }]",
            ),
            "listen[0].pool[0].servers",
            7,
        );
        assert!(msg.contains("backup"), "{msg}");
    }

    #[test]
    fn pool_names_are_required_unique_and_not_default() {
        let s = "servers = [{ addr = \"127.0.0.1:7001\" }]";
        rejected(
            &http_with(&format!("[[listen.backend]]\n{s}")),
            "listen[0].backend[0].name",
            5,
        );
        let msg = rejected(
            &http_with(&format!("[[listen.backend]]\nname = \"default\"\n{s}")),
            "listen[0].backend[0].name",
            6,
        );
        assert!(msg.contains("'default'"), "{msg}");
        let msg = rejected(
            &http_with(&format!("{API}\n[[listen.backend]]\nname = \"api\"\n{s}")),
            "listen[0].backend[1].name",
            9,
        );
        assert!(msg.contains("duplicate pool name 'api'"), "{msg}");
        rejected(
            &http_with(&format!("[[listen.backend]]\nname = \"a b\"\n{s}")),
            "listen[0].backend[0].name",
            6,
        );
    }

    #[test]
    fn unknown_pool_balance_is_rejected_with_every_name() {
        let msg = rejected(
            &http_with(&format!("{API}\nbalance = \"fastest\"")),
            "listen[0].backend[0].balance",
            8,
        );
        assert!(msg.contains(&BalanceKind::NAMES.join(", ")), "{msg}");
    }

    #[test]
    fn server_labels_and_addresses_are_unique_across_pools() {
        let msg = rejected(
            &http_with(
                "[[listen.backend]]\nname = \"api\"\nservers = [{ addr = \"127.0.0.1:6001\" }]",
            ),
            "listen[0].backend[0].servers[0].addr",
            7,
        );
        assert!(
            msg.contains("already used by listen[0].servers[0]"),
            "{msg}"
        );
        let src = http_with(&format!(
            "{API}\n[[listen.backend]]\nname = \"b\"\nservers = [{{ addr = \"127.0.0.1:7003\", name = \"127.0.0.1:7002\" }}]"
        ));
        let msg = rejected(&src, "listen[0].backend[1].servers[0].name", 10);
        assert!(
            msg.contains("already used by listen[0].backend[0].servers[1]"),
            "{msg}"
        );
    }

    #[test]
    fn backend_and_pool_arrays_together_are_rejected() {
        let src = http_with(&format!(
            "{API}\n[[listen.pool]]\nname = \"b\"\nservers = [{{ addr = \"127.0.0.1:7003\" }}]"
        ));
        let msg = rejected(&src, "listen[0].pool", 8);
        assert!(msg.contains("keep one"), "{msg}");
    }

    #[test]
    fn named_pools_in_a_tcp_listen_are_rejected() {
        let s = "name = \"api\"\nservers = [{ addr = \"127.0.0.1:7001\" }]";
        for (spelling, key) in [("backend", "listen[0].backend"), ("pool", "listen[0].pool")] {
            let msg = rejected(&listen_with(&format!("[[listen.{spelling}]]\n{s}")), key, 4);
            assert!(msg.contains("only with mode = \"http\""), "{msg}");
        }
    }
}
