//! Owns the `status` and `connections` tests: the text report names workers and
//! servers, `--json` has the contract's shape and live counters, and
//! `connections --json` lists an open relayed connection.

use std::io::{Read, Write};

use serde_json::Value;

use crate::util::backend::Backend;
use crate::util::json::{
    array_of, bool_of, field, servers, str_of, u64_of, worker_pids, worker_sum, workers,
};
use crate::util::{Conf, Lbctl, Master, ServerConf, TempDir, WAIT, connect, exchange, wait_until};

#[test]
fn status_text_names_every_worker_pid_and_server_address() {
    let dir = TempDir::new();
    let a = Backend::echo();
    let b = Backend::echo();
    let conf = Conf::new(&dir, &[a.addr(), b.addr()]).workers(2);
    let path = conf.write(&dir);
    let master = Master::start(&dir, &path);
    assert!(
        wait_until(WAIT, || master.workers().len() == 2),
        "expected 2 workers, found {:?}",
        master.workers()
    );
    let out = Lbctl::new(&dir, &path).run("status", &[]);
    out.assert_success();
    for pid in master.workers() {
        out.assert_contains(&pid.to_string());
    }
    out.assert_contains(&a.addr().to_string());
    out.assert_contains(&b.addr().to_string());
    out.assert_contains(&master.pid().to_string());
}

fn check_worker_shape(w: &Value) {
    for key in [
        "slot",
        "pid",
        "generation",
        "memory_kb",
        "active",
        "total",
        "bytes_in",
        "bytes_out",
        "errors",
        "restarts",
    ] {
        u64_of(w, key);
    }
    let state = str_of(w, "state");
    assert!(
        ["starting", "running", "draining", "busy"].contains(&state),
        "worker state {state:?} not in the contract: {w:#}"
    );
}

fn check_server_shape(s: &Value) {
    for key in ["weight", "active", "total", "failures"] {
        u64_of(s, key);
    }
    str_of(s, "name");
    str_of(s, "addr");
    bool_of(s, "backup");
    let state = str_of(s, "state");
    assert!(
        ["up", "down", "disabled", "draining"].contains(&state),
        "server state {state:?} not in the contract: {s:#}"
    );
}

#[test]
fn status_json_has_the_contract_shape_and_counters_grow_with_traffic() {
    let dir = TempDir::new();
    let a = Backend::echo();
    let b = Backend::echo();
    let conf = Conf::new(&dir, &[a.addr(), b.addr()])
        .workers(2)
        .listen(|l| {
            l.servers(vec![
                ServerConf::new(a.addr()),
                ServerConf::new(b.addr()).weight(2).name("b"),
            ])
        });
    let path = conf.write(&dir);
    let master = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);

    let st = lbctl.status_json();
    assert_eq!(u64_of(&st, "master_pid"), master.pid() as u64, "{st:#}");
    assert_eq!(u64_of(&st, "generation"), 1, "{st:#}");
    assert_eq!(str_of(&st, "phase"), "running", "{st:#}");
    u64_of(&st, "uptime_secs");
    assert_eq!(u64_of(&st, "workers_configured"), 2, "{st:#}");

    let ws = workers(&st);
    assert_eq!(ws.len(), 2, "{st:#}");
    let mut slots: Vec<u64> = ws.iter().map(|w| u64_of(w, "slot")).collect();
    slots.sort_unstable();
    assert_eq!(slots, vec![0, 1], "{st:#}");
    for w in ws {
        check_worker_shape(w);
        assert_eq!(u64_of(w, "generation"), 1, "{w:#}");
    }
    let mut pids = worker_pids(&st);
    pids.sort_unstable();
    let mut children = master.workers();
    children.sort_unstable();
    assert_eq!(pids, children, "status pids vs the master's children");

    let listens = array_of(&st, "listens");
    assert_eq!(listens.len(), 1, "{st:#}");
    let l = &listens[0];
    assert_eq!(str_of(l, "name"), "web");
    assert_eq!(str_of(l, "bind"), conf.bind().to_string());
    assert_eq!(str_of(l, "balance"), "round_robin");
    // The max_conns queue belongs to the listen (HAProxy's backend queue).
    u64_of(l, "queued");
    u64_of(l, "refused");
    let ss = servers(&st, 0);
    assert_eq!(ss.len(), 2, "{st:#}");
    for s in ss {
        check_server_shape(s);
        assert_eq!(str_of(s, "state"), "up", "{s:#}");
        assert!(!bool_of(s, "backup"));
    }
    assert_eq!(str_of(&ss[0], "addr"), a.addr().to_string());
    assert_eq!(str_of(&ss[0], "name"), a.addr().to_string());
    assert_eq!(u64_of(&ss[0], "weight"), 1);
    assert_eq!(str_of(&ss[1], "addr"), b.addr().to_string());
    assert_eq!(str_of(&ss[1], "name"), "b");
    assert_eq!(u64_of(&ss[1], "weight"), 2);

    let total0 = worker_sum(&st, "total");
    let in0 = worker_sum(&st, "bytes_in");
    let out0 = worker_sum(&st, "bytes_out");
    let server_total0: u64 = ss.iter().map(|s| u64_of(s, "total")).sum();

    for i in 0..10 {
        let reply = exchange(conf.bind(), b"ping-ping-ping").expect("exchange");
        assert_eq!(reply, b"ping-ping-ping", "conn {i}");
    }

    let mut last = st.clone();
    let grew = wait_until(WAIT, || {
        let Some(now) = lbctl.try_status_json() else {
            return false;
        };
        let server_total: u64 = servers(&now, 0).iter().map(|s| u64_of(s, "total")).sum();
        let ok = worker_sum(&now, "total") >= total0 + 10
            && worker_sum(&now, "bytes_in") >= in0 + 140
            && worker_sum(&now, "bytes_out") >= out0 + 140
            && server_total >= server_total0 + 10
            && worker_sum(&now, "active") == 0;
        last = now;
        ok
    });
    assert!(
        grew,
        "counters did not reflect 10 connections of 14 bytes each way.\nbefore: {st:#}\nafter: {last:#}"
    );
    assert!(u64_of(&last, "uptime_secs") >= u64_of(&st, "uptime_secs"));
}

#[test]
fn connections_json_lists_an_open_connection() {
    let dir = TempDir::new();
    let echo = Backend::echo();
    let conf = Conf::new(&dir, &[echo.addr()]).workers(2);
    let path = conf.write(&dir);
    let master = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);

    let mut s = connect(conf.bind()).expect("connect to balancer");
    s.write_all(b"hi").expect("write");
    let mut buf = [0u8; 2];
    s.read_exact(&mut buf).expect("echo");
    let client = s.local_addr().expect("local addr").to_string();

    let mut last = Value::Null;
    let listed = wait_until(WAIT, || {
        let out = lbctl.run("connections", &["--json"]);
        if out.code != Some(0) {
            last = Value::String(out.describe());
            return false;
        }
        last = out.json();
        array_of(&last, "connections")
            .iter()
            .any(|c| c.get("client").and_then(Value::as_str) == Some(client.as_str()))
    });
    assert!(
        listed,
        "connection from {client} not listed; last: {last:#}"
    );

    let conns = array_of(&last, "connections");
    let c = conns
        .iter()
        .find(|c| str_of(c, "client") == client)
        .expect("listed");
    assert_eq!(str_of(c, "server"), echo.addr().to_string(), "{c:#}");
    assert_eq!(str_of(c, "state"), "relaying", "{c:#}");
    let wpid = u64_of(c, "worker_pid") as i32;
    assert!(
        master.workers().contains(&wpid),
        "worker_pid {wpid} is not a worker of the master: {:?}",
        master.workers()
    );
    u64_of(c, "bytes_in");
    u64_of(c, "bytes_out");
    u64_of(c, "age_secs");
    field(c, "client");
    drop(s);
}
