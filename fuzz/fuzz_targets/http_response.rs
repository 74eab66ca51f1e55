//! `lbctl::http::parse_response` (after a GET and after a HEAD, default and
//! small limits) and `write_response` on every head it returns. Checks: no
//! panic; errors are 502; a head stays within its limits; bodiless statuses
//! and HEAD answers have no body; the head alone parses the same and a
//! prefix of it is incomplete; what we forward parses again with the same
//! status and body framing, and says `Connection: close` when it must.
#![no_main]

use lbctl::http::{BodyKind, Limits, ResponseHead, Version, parse_response, write_response};
use lbctl_fuzz::Prng;
use libfuzzer_sys::fuzz_target;

fn check(data: &[u8], limits: &Limits, is_head: bool, rng: &mut Prng) {
    let head = match parse_response(data, limits, is_head) {
        Ok(Some(head)) => head,
        Ok(None) => {
            assert!(data.len() < limits.header_bytes.max(1), "waits forever");
            return;
        }
        Err(e) => {
            assert_eq!(e.status, 502, "{e}");
            return;
        }
    };
    assert!(head.head_len <= data.len() && head.head_len <= limits.header_bytes);
    assert!(head.headers.len() <= limits.headers);
    assert!((100..=599).contains(&head.status));
    if is_head || head.status < 200 || head.status == 204 || head.status == 304 {
        assert_eq!(head.body, BodyKind::None);
    }
    if head.body == BodyKind::UntilClose || head.is_switching_protocols() {
        assert!(!head.keep_alive);
    }

    let alone = &data[..head.head_len];
    assert_eq!(
        parse_response(alone, limits, is_head),
        Ok(Some(head.clone()))
    );
    let cut = rng.below(head.head_len);
    let prefix = parse_response(&data[..cut], limits, is_head);
    assert_eq!(prefix, Ok(None), "prefix {cut}");

    forward(&head, is_head, rng);
}

fn forward(head: &ResponseHead, is_head: bool, rng: &mut Prng) {
    let client_keep_alive = rng.flip();
    let client_version = if rng.flip() {
        Version::Http11
    } else {
        Version::Http10
    };
    let mut out = Vec::new();
    write_response(head, &mut out, client_keep_alive, client_version);
    let roomy = Limits {
        header_bytes: out.len().max(1),
        headers: head.headers.len() + 2,
        uri_bytes: 1,
    };
    let again = match parse_response(&out, &roomy, is_head) {
        Ok(Some(again)) => again,
        other => panic!(
            "forwarded head does not parse: {other:?}\n{:?}",
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(again.head_len, out.len());
    assert_eq!(again.status, head.status);
    assert_eq!(again.body, head.body, "forwarding changed the body framing");
    let final_head = !head.is_interim() && !head.is_switching_protocols();
    if final_head && (!client_keep_alive || head.body == BodyKind::UntilClose) {
        assert!(
            !again.keep_alive,
            "the client is not told the connection closes"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut rng = Prng::from_input(data);
    let small = Limits {
        header_bytes: 1 + rng.below(96),
        headers: rng.below(6),
        uri_bytes: 1,
    };
    for is_head in [false, true] {
        check(data, &Limits::default(), is_head, &mut rng);
        check(data, &small, is_head, &mut rng);
    }
});
