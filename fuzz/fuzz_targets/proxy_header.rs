//! `lbctl::proxy_protocol::parse` on arbitrary bytes, and `encode` on every
//! address it returns. Checks: no panic; "incomplete" only below the
//! bound; a header is self-contained (it parses the same alone, and what
//! follows it is never looked at); every shorter prefix of a header is
//! incomplete; the decision is monotonic (a prefix that is refused or
//! complete stays so however many bytes follow); what lbctl sends for an
//! address parses back to the same address, in both versions.
#![no_main]

use lbctl::proxy_protocol::{Header, MAX_HEADER, Parsed, V1_MAX, Version, encode, parse};
use lbctl_fuzz::Prng;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rng = Prng::from_input(data);
    let full = parse(data);
    // A prefix's decision holds for the whole input.
    let cut = rng.below(data.len() + 1);
    match parse(&data[..cut]) {
        Ok(Parsed::Incomplete) => {}
        Err(_) => assert!(full.is_err(), "prefix {cut} refused, whole accepted"),
        done => assert_eq!(done, full, "prefix {cut} decided otherwise"),
    }
    match full {
        Err(_) => {}
        Ok(Parsed::Incomplete) => assert!(data.len() < MAX_HEADER, "waits forever"),
        Ok(Parsed::Done { header, len }) => {
            assert!(len <= data.len() && len <= MAX_HEADER);
            if data[0] == b'P' {
                assert!(len <= V1_MAX);
            }
            assert_eq!(parse(&data[..len]), full);
            let short = rng.below(len);
            assert_eq!(
                parse(&data[..short]),
                Ok(Parsed::Incomplete),
                "prefix {short}"
            );
            if let Header::Proxy { src, dst } = header {
                for v in [Version::V1, Version::V2] {
                    let e = encode(v, src, dst);
                    let back = parse(e.as_bytes());
                    assert_eq!(
                        back,
                        Ok(Parsed::Done {
                            header,
                            len: e.as_bytes().len()
                        }),
                        "{v:?} {e:?}"
                    );
                }
            }
        }
    }
});
