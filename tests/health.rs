//! Owns the health-check tests: an active tcp check takes a dead server out of
//! rotation (status "down") and brings it back when it answers again.

use crate::util::backend::{Backend, refusing_addr};
use crate::util::json::{servers, str_of};
use crate::util::{Conf, Lbctl, Master, TempDir, WAIT, fetch, wait_until};

fn server_state(lbctl: &Lbctl, addr: &str) -> Option<String> {
    let st = lbctl.try_status_json()?;
    servers(&st, 0)
        .iter()
        .find(|s| str_of(s, "addr") == addr)
        .map(|s| str_of(s, "state").to_string())
}

#[test]
fn tcp_health_check_marks_a_dead_server_down_and_back_up() {
    let dir = TempDir::new();
    let good = Backend::fixed("good");
    let dead = refusing_addr();
    // No retries: only the health check keeps connections off the dead server.
    let conf = Conf::new(&dir, &[dead, good.addr()])
        .workers(2)
        .listen(|l| {
            l.retries(0).health(
                "{ kind = \"tcp\", interval = \"100ms\", timeout = \"200ms\", rise = 1, fall = 1 }",
            )
        });
    let path = conf.write(&dir);
    let _master = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);
    let dead_s = dead.to_string();

    let mut last = None;
    assert!(
        wait_until(WAIT, || {
            last = server_state(&lbctl, &dead_s);
            last.as_deref() == Some("down")
        }),
        "dead server never marked down; last state {last:?}"
    );
    assert_eq!(
        server_state(&lbctl, &good.addr().to_string()).as_deref(),
        Some("up")
    );
    for i in 0..10 {
        match fetch(conf.bind()) {
            Ok(r) => assert_eq!(r, "good", "conn {i}"),
            Err(e) => panic!("conn {i} failed with the dead server marked down: {e}"),
        }
    }

    // The server comes back on the same address.
    let revived = Backend::fixed_at(dead, "revived");
    assert!(
        wait_until(WAIT, || {
            last = server_state(&lbctl, &dead_s);
            last.as_deref() == Some("up")
        }),
        "revived server never marked up; last state {last:?}"
    );
    assert!(
        wait_until(WAIT, || fetch(conf.bind()).is_ok_and(|r| r == "revived")),
        "revived server never got traffic"
    );
    assert!(revived.accepted() >= 1);
}
