//! Owns the `/metrics` families of servers found by DNS: per `resolve`
//! entry (`listen`, `name`), its active and draining addresses, whether the
//! last lookup was good, when it finished and how many failed.

use super::{Labels, Snapshot, counters, gauges};
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Unit;
use std::fmt;

impl Snapshot {
    pub(super) fn dns(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let rows = &self.status.dns;
        let labels = |d: &crate::stats::DnsRow| -> Labels {
            vec![("listen", d.listen.clone()), ("name", d.name.clone())]
        };
        let each = |f: &dyn Fn(&crate::stats::DnsRow) -> i64| -> Vec<(Labels, i64)> {
            rows.iter().map(|d| (labels(d), f(d))).collect()
        };
        gauges(
            enc,
            "dns_addresses",
            "Addresses of a resolve entry taking new connections",
            None,
            each(&|d| d.addresses.len() as i64),
        )?;
        gauges(
            enc,
            "dns_draining_addresses",
            "Addresses that left a resolve entry's answer, finishing their connections",
            None,
            each(&|d| d.draining.len() as i64),
        )?;
        gauges(
            enc,
            "dns_lookup_ok",
            "1 when the entry's last lookup gave a non-empty answer (0: failed, or none yet)",
            None,
            each(&|d| i64::from(d.result == "ok")),
        )?;
        gauges(
            enc,
            "dns_last_lookup_timestamp",
            "When the entry's last lookup finished (Unix time; 0: none yet)",
            Some(Unit::Seconds),
            each(&|d| d.last_resolve.map_or(0, |t| t as i64)),
        )?;
        counters(
            enc,
            "dns_lookup_failures",
            "Lookups of the entry that failed or came back empty (the last good set was kept)",
            None,
            rows.iter().map(|d| (labels(d), d.failures)).collect(),
        )
    }
}
