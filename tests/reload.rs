//! Owns the reload tests: an invalid file changes nothing, a valid one starts a
//! new generation on the new servers, and ten reloads under client load fail
//! no connection.

use std::path::PathBuf;
use std::time::Duration;

use crate::util::backend::Backend;
use crate::util::json::{u64_of, worker_rows};
use crate::util::load::{Load, LoadConfig};
use crate::util::{
    Conf, Lbctl, ListenConf, Master, ServerConf, TempDir, WAIT, fetch, fetch_ok, wait_until,
};

/// A foreground balancer over one backend replying "A", checked to serve.
/// Fields drop in order: the master first, the temp dir holding its log last.
struct ServingA {
    master: Master,
    lbctl: Lbctl,
    conf: Conf,
    path: PathBuf,
    a: Backend,
    _dir: TempDir,
}

impl ServingA {
    #[track_caller]
    fn start() -> ServingA {
        let dir = TempDir::new();
        let a = Backend::fixed("A");
        let conf = Conf::new(&dir, &[a.addr()]);
        let path = conf.write(&dir);
        let master = Master::start(&dir, &path);
        let lbctl = Lbctl::new(&dir, &path);
        assert_eq!(fetch_ok(conf.bind()), "A");
        ServingA {
            master,
            lbctl,
            conf,
            path,
            a,
            _dir: dir,
        }
    }

    /// Rewrites the config file with its listen edited by `f` (no reload).
    fn rewrite(&self, f: impl FnOnce(ListenConf) -> ListenConf) {
        self.conf.clone().listen(f).write_to(&self.path);
    }
}

#[test]
fn invalid_reload_is_refused_and_the_old_config_keeps_serving() {
    let s = ServingA::start();
    let (conf, lbctl) = (&s.conf, &s.lbctl);

    s.rewrite(|l| l.balance("fastest_first"));
    lbctl
        .run("reload", &[])
        .assert_code(1)
        .assert_contains("listen[0].balance");

    for _ in 0..5 {
        assert_eq!(fetch_ok(conf.bind()), "A", "old config must keep serving");
    }
    let st = lbctl.status_json();
    assert_eq!(u64_of(&st, "generation"), 1, "{st:#}");
    for (slot, pid, generation, _) in worker_rows(&st) {
        assert_eq!(generation, 1, "worker slot {slot} pid {pid}: {st:#}");
    }
}

#[test]
fn valid_reload_starts_generation_2_on_the_new_servers() {
    let b = Backend::fixed("B");
    let s = ServingA::start();
    let (conf, lbctl, a) = (&s.conf, &s.lbctl, &s.a);

    s.rewrite(|l| l.servers(vec![ServerConf::new(b.addr())]));
    lbctl
        .run("reload", &[])
        .assert_success()
        .assert_contains("reloaded: generation 2");

    assert!(
        wait_until(WAIT, || fetch_ok(conf.bind()) == "B"),
        "the new server never answered after the reload"
    );
    let mut last = None;
    let only_new = wait_until(WAIT, || {
        let Some(st) = lbctl.try_status_json() else {
            return false;
        };
        let ok = u64_of(&st, "generation") == 2
            && !worker_rows(&st).is_empty()
            && worker_rows(&st).iter().all(|r| r.2 == 2);
        last = Some(st);
        ok
    });
    assert!(
        only_new,
        "generation-1 workers remain after the reload: {last:#?}"
    );
    for i in 0..10 {
        assert_eq!(
            fetch_ok(conf.bind()),
            "B",
            "conn {i} after the old workers left"
        );
    }
    let b_before = b.accepted();
    let a_before = a.accepted();
    fetch_ok(conf.bind());
    assert_eq!(b.accepted(), b_before + 1);
    assert_eq!(
        a.accepted(),
        a_before,
        "the removed server still got traffic"
    );
}

#[test]
fn ten_reloads_under_load_fail_no_connection() {
    let dir = TempDir::new();
    let a = Backend::fixed("Hello, A!");
    let b = Backend::fixed("Hello, B!");
    let base = Conf::new(&dir, &[a.addr(), b.addr()]).workers(2);
    let path = base.write(&dir);
    let _master = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);
    let bind = base.bind();

    let load = Load::start(LoadConfig::default().short(bind, 2, &["Hello, A!", "Hello, B!"]));
    let mut reload_failures = Vec::new();
    assert!(
        load.wait_progress(10, WAIT),
        "no traffic before the first reload"
    );
    for i in 0..10u64 {
        // Alternate the strategy and the server order; both servers stay valid.
        let conf = if i % 2 == 0 {
            base.clone().listen(|l| {
                l.balance("random")
                    .servers(vec![ServerConf::new(b.addr()), ServerConf::new(a.addr())])
            })
        } else {
            base.clone()
        };
        conf.write_to(&path);
        let out = lbctl.run_timeout("reload", &[], Duration::from_secs(30));
        let expect = format!("reloaded: generation {}", i + 2);
        if out.code != Some(0) || !out.all().contains(&expect) {
            reload_failures.push(format!(
                "reload {i}: expected {expect:?}\n{}",
                out.describe()
            ));
            break;
        }
        // Let traffic run on the new generation before the next reload.
        if !load.wait_progress(10, WAIT) || !load.failures().is_empty() {
            break;
        }
    }
    let report = load.stop();
    assert!(reload_failures.is_empty(), "{}", reload_failures.join("\n"));
    report.assert_no_failures("ten reloads under load");
    assert!(
        report.short_ok >= 100,
        "too little traffic: {} connections",
        report.short_ok
    );
    let st = lbctl.status_json();
    assert_eq!(u64_of(&st, "generation"), 11, "{st:#}");
}

#[test]
fn sighup_reloads_the_changed_file() {
    let b = Backend::fixed("B");
    let s = ServingA::start();
    let (conf, lbctl) = (&s.conf, &s.lbctl);

    s.rewrite(|l| l.servers(vec![ServerConf::new(b.addr())]));
    s.master.signal(nix::sys::signal::Signal::SIGHUP);
    let mut last = None;
    assert!(
        wait_until(WAIT, || {
            last = lbctl.try_status_json();
            last.as_ref()
                .is_some_and(|st| u64_of(st, "generation") == 2)
        }),
        "SIGHUP did not start generation 2; last status {last:#?}"
    );
    assert!(
        wait_until(WAIT, || fetch_ok(conf.bind()) == "B"),
        "the new server never answered after SIGHUP"
    );
}

#[test]
fn reload_moves_a_listen_to_a_new_port() {
    let s = ServingA::start();
    let (conf, lbctl) = (&s.conf, &s.lbctl);

    let new_bind = crate::util::free_addr();
    s.rewrite(|mut l| {
        l.bind = new_bind;
        l
    });
    lbctl
        .run("reload", &[])
        .assert_success()
        .assert_contains("reloaded: generation 2");
    // The new workers accept before reload returns.
    assert_eq!(fetch_ok(new_bind), "A");
    assert!(
        wait_until(WAIT, || crate::util::connect(conf.bind()).is_err()),
        "the removed listen {} still accepts connections",
        conf.bind()
    );
    let st = lbctl.status_json();
    let listens = crate::util::json::array_of(&st, "listens");
    assert_eq!(
        crate::util::json::str_of(&listens[0], "bind"),
        new_bind.to_string()
    );
}

#[test]
fn a_server_known_to_be_down_stays_down_across_a_reload() {
    use crate::util::backend::refusing_addr;
    use crate::util::json::{servers, str_of};
    use crate::util::loadgen::Extra;
    let dir = TempDir::new();
    let good = Backend::fixed("good");
    let dead = refusing_addr();
    // No retries and no passive detection: only the active check's verdict
    // keeps clients away from the dead server.
    let conf = Conf::new(&dir, &[good.addr(), dead])
        .workers(1)
        .listen(|l| {
            l.retries(0).health(
                r#"{ kind = "tcp", interval = "300ms", timeout = "200ms", rise = 1, fall = 3 }"#,
            )
        });
    let path = Extra::new().listen("max_fails = 0").write(&conf, &dir);
    let _master = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);
    let dead_state = |lbctl: &Lbctl| {
        lbctl.try_status_json().and_then(|st| {
            servers(&st, 0)
                .iter()
                .find(|s| str_of(s, "addr") == dead.to_string())
                .map(|s| str_of(s, "state").to_string())
        })
    };
    assert!(
        wait_until(WAIT, || dead_state(&lbctl).as_deref() == Some("down")),
        "the dead server was never marked down"
    );
    lbctl.run("reload", &[]).assert_success();
    assert_eq!(
        dead_state(&lbctl).as_deref(),
        Some("down"),
        "generation 2 forgot the health verdict"
    );
    for i in 0..10 {
        match fetch(conf.bind()) {
            Ok(reply) => assert_eq!(reply, "good", "connection {i}"),
            Err(e) => panic!("connection {i} after the reload failed: {e}"),
        }
    }
}
