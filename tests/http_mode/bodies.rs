//! Owns streamed bodies: 10 MiB chunked upload and download intact,
//! Content-Length uploads, `Expect: 100-continue`, and the websocket tunnel.

use super::start_http;
use crate::util::http_backend::HttpBackend;
use crate::util::http_client::HttpConn;
use crate::util::{TempDir, pseudo_random_bytes};
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;

fn hex_sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn ten_mib_chunked_upload_and_download_arrive_intact() {
    let dir = TempDir::new();
    let a = HttpBackend::start("A");
    let (_m, bind) = start_http(&dir, &[&a], |l| l);
    let mut c = HttpConn::connect(bind).expect("connect");

    let data = pseudo_random_bytes(10 * MIB, 3);
    let r = c
        .request(
            "POST",
            "/sha256",
            &[("Transfer-Encoding", "chunked")],
            Some(&data),
        )
        .expect("upload response");
    assert_eq!(r.status, 200);
    assert!(r.interim.is_empty());
    assert_eq!(r.text().trim(), hex_sha256(&data));

    let r = c
        .request(
            "GET",
            &format!("/download?bytes={}&seed=9", 10 * MIB),
            &[],
            None,
        )
        .expect("download");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 10 * MIB);
    assert!(
        r.body == pseudo_random_bytes(10 * MIB, 9),
        "download differs"
    );
}

#[test]
fn content_length_upload_with_expect_100_continue_arrives_intact() {
    let dir = TempDir::new();
    let a = HttpBackend::start("A");
    let (_m, bind) = start_http(&dir, &[&a], |l| l);
    let data = pseudo_random_bytes(MIB, 5);
    let mut c = HttpConn::connect(bind).expect("connect");
    let r = c
        .request("PUT", "/sha256", &[("Expect", "100-continue")], Some(&data))
        .expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.interim,
        vec![100],
        "the server's 100 Continue came through"
    );
    assert_eq!(String::from_utf8_lossy(&r.body).trim(), hex_sha256(&data));
}

#[test]
fn websocket_upgrade_becomes_a_tunnel_that_echoes() {
    let dir = TempDir::new();
    let a = HttpBackend::start("A");
    let (_m, bind) = start_http(&dir, &[&a], |l| l);
    let mut c = HttpConn::connect(bind).expect("connect");
    c.send_raw(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        .expect("send");
    let r = c.read_response().expect("101");
    assert_eq!(r.status, 101);
    for round in 0..20u64 {
        let msg = pseudo_random_bytes(1000 + round as usize * 997, round);
        c.send_raw(&msg).expect("write");
        let got = c.read_raw(msg.len()).expect("echo");
        assert!(got == msg, "round {round}: echo differs");
    }
}
