//! Owns the balancing key of an HTTP request (`hash_key`): the value of a
//! named header or cookie, hashed with the balancers' fixed-seed hash so
//! every worker sends the same key to the same server. A request without
//! that header or cookie falls back to the client address (None here).

use crate::balance;
use crate::config::HashKey;
use crate::http::RequestHead;

/// The key `hash_key` takes from `head`, if the request carries it.
pub fn of(hash_key: &HashKey, head: &RequestHead) -> Option<u64> {
    match hash_key {
        HashKey::Client => None,
        HashKey::Header(name) => head
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| balance::fnv1a(v)),
        HashKey::Cookie(name) => head
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            .find_map(|(_, v)| cookie(v, name.as_bytes()))
            .map(balance::fnv1a),
    }
}

/// The value of cookie `name` in a `Cookie` header value.
fn cookie<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = trim(pair);
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (k, v) = pair.split_at(eq);
        (trim(k) == name).then(|| trim(&v[1..]))
    })
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b
        && first.is_ascii_whitespace()
    {
        b = rest;
    }
    while let [rest @ .., last] = b
        && last.is_ascii_whitespace()
    {
        b = rest;
    }
    b
}

#[cfg(test)]
mod tests {
    use super::cookie;

    #[test]
    fn a_cookie_is_found_among_others_with_spaces() {
        assert_eq!(cookie(b"a=1; sid=xyz ;b=2", b"sid"), Some(&b"xyz"[..]));
        assert_eq!(cookie(b"sidx=1", b"sid"), None);
        assert_eq!(cookie(b"", b"sid"), None);
    }
}
