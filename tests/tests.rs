//! Integration tests: the real `lbctl` binary, real sockets, 127.0.0.1 only
//! (ha_pair: 10.99.0.0/24 inside network namespaces it makes and deletes).
//! Every test owns its temp dir, ports and processes, and leaves none behind.

// The harness, one file per concern: temp dir, free ports, wait_until, config
// writer, Lbctl wrapper, Master guard, /proc helpers, clients, JSON, loopback
// backends and client load, the HTTP backend and client.
mod util;
// Self-tests of the harness (no lbctl).
mod harness;

// Access logs: tcp and http lines in both formats, reopen-logs under load
// after a logrotate rename (no line lost or split), a full tmpfs (lines
// dropped and counted, traffic unaffected), the shipped conf/logrotate run for real.
mod access_log;
// `[admin]`: /metrics parsed by the Prometheus client's parsers,
// /status.json, token-guarded actions, bad and idle requests, reloads
// (api.rs), the status page in headless Chromium (page.rs).
mod admin;
// Balancing strategies, weights, backups, max_conns and the queue.
mod balance;
// Bounds of the threat model not covered elsewhere: a full listen queue.
mod bounds;
// Per-client limits: max_conns_per_client and rate, across workers, by source address.
mod client_limits;
// `check`, exit codes, `status`/`stop` with nothing running, second `start`.
mod cli;
// `defer_accept = true` and `smart_connect = true`: the first bytes carry
// the handshake's last ACK to the server; a server that speaks first still
// gets its client.
mod defer_accept;
// Servers found by DNS: a real dnsmasq on loopback, records changed live.
mod dns;
// `mode = "http"`: per-request balancing, pipelining, bodies, websocket,
// lbctl's own answers, forwarded headers, failover, routing.
mod http_mode;
// LB-node failover: two nodes with keepalived in the test's own network
// namespaces; the VIP moves when lb1's lbctl is killed, stopped or cannot serve.
mod ha_pair;
// Backend HA: kill under load, http/send_expect/timeout checks, runtime
// disable/drain/enable, respawn vs reload.
mod ha;
// Active health checks: down and back up.
mod health;
// `start -d` / `status` / `stop`, graceful stop with an open connection.
mod lifecycle;
// Control socket credentials: other users may read, not change state.
mod peer_credentials;
// `user`/`group`: workers drop privileges after the master bound the ports.
mod privileges;
// PROXY protocol v1/v2: send_proxy to a parsing backend and to HAProxy
// (accept-proxy), accept_proxy with good, bad, missing and slow headers.
mod proxy_protocol;
// Forwarding: large payloads, half-close, round robin, random, retry.
mod proxy_tcp;
// Regressions found in review: connections listing, signals during stop,
// stop during upgrade, queued client across a reload.
mod regressions;
// `reload`: invalid file keeps serving, generations, zero failures under load.
mod reload;
// `dataplane = "sockmap"`: the kernel relays (1 and 48 MiB, half-close,
// counters), and falls back to splice where it refuses.
mod sockmap;
// `status` text and JSON shape, counters, `connections --json`.
mod status;
// TLS termination: SNI, versions, offload, handshake timeout, certificates.
mod tls;
// `status --check`: keepalived's verdict and its exit codes.
mod status_check;
// kill -9 a worker (respawn) and the master (workers follow it).
mod supervise;
// systemd notifications: READY, RELOADING/READY around a reload, STOPPING.
mod systemd_notify;
// TCP urgent data: every in-band byte around it is relayed, by copy and by splice.
mod urgent;
// Zero-downtime operations under load, one file per kind: reload variants,
// listeners added and removed, worker count changes, 20 reloads (reload.rs),
// binary upgrade (upgrade.rs), worker crash (crash.rs), fd flood (fd_flood.rs).
mod zero_downtime;
