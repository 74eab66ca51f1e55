//! Owns the per-client limits: `max_conns_per_client` and `rate` counted per
//! source address across all workers, with many source addresses on
//! loopback (127.0.0.x); a refused client is closed at once, others are not
//! affected, and refusals are counted in `status`.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::Duration;

use crate::util::backend::Backend;
use crate::util::loadgen::connect_from;
use crate::util::{Conf, Lbctl, Master, TempDir, WAIT, wait_until};

fn src(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, n])
}

/// True when the balancer relays on `s` (an echo comes back); false when it
/// closed the connection at once.
fn served(s: &mut TcpStream) -> bool {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"ping").is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    matches!(s.read_exact(&mut buf), Ok(()) if &buf == b"ping")
}

#[test]
fn max_conns_per_client_is_global_across_workers_and_per_address() {
    let dir = TempDir::new();
    let echo = Backend::echo();
    let conf = Conf::new(&dir, &[echo.addr()])
        .workers(2)
        .listen(|l| l.line("max_conns_per_client = 3"));
    let path = conf.write(&dir);
    let _m = Master::start(&dir, &path);
    let bind = conf.bind();

    let mut held: Vec<TcpStream> = (0..3)
        .map(|i| {
            let mut s = connect_from(src(2), bind).expect("connect");
            assert!(served(&mut s), "connection {i} of 127.0.0.2 was refused");
            s
        })
        .collect();
    let mut extra = connect_from(src(2), bind).expect("connect");
    assert!(
        !served(&mut extra),
        "a fourth connection of 127.0.0.2 was served"
    );
    for n in 3..6 {
        let mut s = connect_from(src(n), bind).expect("connect");
        assert!(served(&mut s), "127.0.0.{n} suffered for 127.0.0.2");
    }
    drop(held.pop());
    assert!(
        wait_until(WAIT, || {
            let mut s = match connect_from(src(2), bind) {
                Ok(s) => s,
                Err(_) => return false,
            };
            served(&mut s)
        }),
        "127.0.0.2 was not admitted again after closing one"
    );
    let lbctl = Lbctl::new(&dir, &path);
    let st = lbctl.run("status", &["--json"]).json();
    assert!(
        st["listens"][0]["limited"].as_u64().unwrap_or(0) >= 1,
        "{st:#}"
    );
}

#[test]
fn rate_limits_new_connections_per_address_per_window() {
    let dir = TempDir::new();
    let echo = Backend::echo();
    let conf = Conf::new(&dir, &[echo.addr()])
        .workers(2)
        .listen(|l| l.line(r#"rate = { conns = 4, per = "1h" }"#));
    let _m = Master::start(&dir, &conf.write(&dir));
    let bind = conf.bind();
    for i in 0..4 {
        let mut s = connect_from(src(7), bind).expect("connect");
        assert!(served(&mut s), "connection {i} of 127.0.0.7 refused");
    }
    let mut s = connect_from(src(7), bind).expect("connect");
    assert!(
        !served(&mut s),
        "a fifth new connection within the window was served"
    );
    let mut other = connect_from(src(8), bind).expect("connect");
    assert!(served(&mut other), "another address was limited too");
}
