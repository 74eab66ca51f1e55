//! `lbctl::http::parse_request` under the default limits and small ones, and
//! `write_request` on every head it returns. Checks: no panic; a head stays
//! within its limits and its buffer; the head alone parses the same as the
//! head followed by anything, and a prefix of it is incomplete; what we
//! forward parses again with the same method, target, Host and body framing
//! (a proxy that reframes a request is a request-smuggling hole).
#![no_main]

use lbctl::http::{BodyKind, Forwarding, Limits, RequestHead, parse_request, write_request};
use lbctl_fuzz::Prng;
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn check(data: &[u8], limits: &Limits, rng: &mut Prng) {
    let head = match parse_request(data, limits) {
        Ok(Some(head)) => head,
        Ok(None) => {
            assert!(data.len() < limits.header_bytes.max(1), "waits forever");
            return;
        }
        Err(e) => {
            assert!(matches!(e.status, 400 | 414 | 431), "{e}");
            return;
        }
    };
    assert!(head.head_len <= data.len() && head.head_len <= limits.header_bytes);
    assert!(head.headers.len() <= limits.headers);
    assert!(head.uri.len() <= limits.uri_bytes);
    assert_ne!(head.body, BodyKind::UntilClose);

    // The head is self-contained: what follows it is not looked at, and
    // any shorter prefix is still incomplete.
    let alone = &data[..head.head_len];
    assert_eq!(parse_request(alone, limits), Ok(Some(head.clone())));
    let cut = rng.below(head.head_len);
    assert_eq!(
        parse_request(&data[..cut], limits),
        Ok(None),
        "prefix {cut}"
    );

    forward(&head, rng);
}

fn forward(head: &RequestHead, rng: &mut Prng) {
    let client_ip = match rng.below(3) {
        0 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        1 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        _ => IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped()),
    };
    let fwd = Forwarding {
        client_ip,
        proto: if rng.flip() { "http" } else { "https" },
        xff: rng.flip(),
        xfp: rng.flip(),
        forwarded: rng.flip(),
        upgrade: rng.flip(),
    };
    let mut out = Vec::new();
    write_request(head, &mut out, &fwd);
    let roomy = Limits {
        header_bytes: out.len().max(1),
        headers: head.headers.len() + 8,
        uri_bytes: head.uri.len().max(1),
    };
    let again = match parse_request(&out, &roomy) {
        Ok(Some(again)) => again,
        other => panic!(
            "forwarded head does not parse: {other:?}\n{:?}",
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(again.head_len, out.len());
    assert_eq!((&again.method, &again.uri), (&head.method, &head.uri));
    // An HTTP/1.0 request without Host is given an empty one.
    let host = head.host.or(Some(""));
    assert_eq!(again.host, host);
    assert_eq!(again.body, head.body, "forwarding changed the body framing");
    if fwd.upgrade {
        assert_eq!(again.upgrade, head.upgrade);
    } else {
        assert_eq!(again.upgrade, None);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut rng = Prng::from_input(data);
    check(data, &Limits::default(), &mut rng);
    let small = Limits {
        header_bytes: 1 + rng.below(96),
        headers: rng.below(6),
        uri_bytes: rng.below(24),
    };
    check(data, &small, &mut rng);
});
