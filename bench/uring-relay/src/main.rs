//! uring-relay: a bench-only TCP relay, written to answer one question of issue 15 (item 3):
//! does an io_uring loop (multishot accept, multishot recv into a registered buffer ring,
//! send, shutdown and close as ring operations) cost the proxy less CPU per new connection
//! than an epoll loop that does the same relaying with one syscall per step?
//!
//! Both loops relay bytes both ways between each accepted client and a backend picked round
//! robin, forward each half-close as `shutdown(SHUT_WR)`, and close both sockets when both
//! directions are done; nothing else (no health checks, counters or timeouts), so the
//! difference between them is the loop. `bench/uring.sh` runs both beside lbctl and HAProxy.
//!
//! usage: uring-relay epoll|uring LISTEN BACKEND [BACKEND...]   (addresses as 127.0.0.1:port)
//!
//! Experiment knobs of the epoll loop (each `=1`; measured for lbctl's `defer_accept`):
//! RELAY_DEFER_ACCEPT (TCP_DEFER_ACCEPT on the listener), RELAY_SMART_CONNECT (read the
//! client before connecting; with bytes in hand, TCP_QUICKACK 0 so they carry the
//! handshake's last ACK), RELAY_FIN_MERGE (MSG_MORE on the last bytes before a FIN that
//! has already arrived, so data and FIN leave in one segment).

mod epoll;
mod sys;
mod uring;

use std::net::SocketAddrV4;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: uring-relay epoll|uring LISTEN BACKEND [BACKEND...]");
        return ExitCode::from(2);
    }
    let parse = |s: &String| -> Result<SocketAddrV4, String> {
        s.parse()
            .map_err(|e| format!("{s}: {e} (want an IPv4 address:port)"))
    };
    let listen = match parse(&args[1]) {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    let backends: Result<Vec<_>, _> = args[2..].iter().map(parse).collect();
    let backends = match backends {
        Ok(b) => b,
        Err(e) => return fail(&e),
    };
    // SAFETY: ignoring SIGPIPE touches no memory; a write to a closed peer then fails with EPIPE.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let listener = match sys::listen(listen) {
        Ok(fd) => fd,
        Err(e) => return fail(&format!("listen on {listen}: {e}")),
    };
    let result = match args[0].as_str() {
        "epoll" => epoll::run(listener, &backends),
        "uring" => uring::run(listener, &backends),
        other => return fail(&format!("{other}: the loop is epoll or uring")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("uring-relay: {msg}");
    ExitCode::FAILURE
}
