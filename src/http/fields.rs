//! Owns the field-value grammar shared by requests and responses: comma
//! lists and their tokens, `Content-Length` (with the duplicate rules of RFC
//! 9112 §6.3) and `Transfer-Encoding` (is `chunked` the final coding?), and
//! the checks on a start line that turn obsolete line folding and over-long
//! targets into precise errors. Also the header slots handed to httparse.

use std::mem::MaybeUninit;

/// Header slots kept on the stack; a larger `Limits::headers` uses the heap.
pub(crate) const STACK_HEADERS: usize = 128;

/// Uninitialized httparse header slots: on the stack up to [`STACK_HEADERS`],
/// else on the heap, so a default parse allocates nothing for them.
pub(crate) struct HeaderSlots<'b> {
    stack: [MaybeUninit<httparse::Header<'b>>; STACK_HEADERS],
    heap: Vec<MaybeUninit<httparse::Header<'b>>>,
}

impl<'b> HeaderSlots<'b> {
    pub(crate) fn new() -> Self {
        HeaderSlots {
            stack: [MaybeUninit::uninit(); STACK_HEADERS],
            heap: Vec::new(),
        }
    }

    /// `n` slots.
    pub(crate) fn get(&mut self, n: usize) -> &mut [MaybeUninit<httparse::Header<'b>>] {
        match self.stack.get_mut(..n) {
            Some(slots) => slots,
            None => {
                self.heap.resize(n, MaybeUninit::uninit());
                self.heap.as_mut_slice()
            }
        }
    }
}

/// One field of a head, borrowed from the head's bytes: name as received
/// (case kept), value as received (OWS trimmed by the parser).
pub type Field<'a> = (&'a str, &'a [u8]);

/// A head's fields, in order.
pub(crate) type Fields<'a> = [Field<'a>];

/// An empty field list whose allocation outlived the head it was filled
/// for: handed to the next parse ([`crate::http::parse_request_in`],
/// [`crate::http::parse_response_in`]) so a kept-alive session parses
/// every head without allocating.
#[derive(Debug, Default)]
pub struct SpareFields(Vec<Field<'static>>);

impl SpareFields {
    /// No allocation yet.
    pub fn new() -> SpareFields {
        SpareFields(Vec::new())
    }

    /// Keeps the allocation of a head's field list (its fields are dropped).
    pub fn keep(fields: Vec<Field<'_>>) -> SpareFields {
        SpareFields(relabel(fields))
    }

    /// The empty list, ready for fields borrowed from new bytes.
    pub(crate) fn take<'a>(self) -> Vec<Field<'a>> {
        relabel(self.0)
    }
}

/// An emptied list with another lifetime, in the same allocation: nothing
/// survives the `filter_map`, and collecting an iterator of a `Vec` into a
/// `Vec` of the same layout reuses its buffer (std's in-place collect).
// `filter` cannot change the element type (its lifetime), which is the point.
#[allow(clippy::unnecessary_filter_map)]
fn relabel<'b>(mut v: Vec<Field<'_>>) -> Vec<Field<'b>> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

/// What `Transfer-Encoding` says about the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Coding {
    /// `chunked` is the final coding, and the only `chunked`.
    Chunked,
    /// Some other final coding (or `chunked` applied twice / with parameters).
    Other,
}

/// The framing fields of a head, parsed but not yet judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Framing {
    pub(crate) length: Option<u64>,
    pub(crate) coding: Option<Coding>,
}

/// `SP` / `HTAB` trimmed from both ends.
pub(crate) fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let end = v.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
    match (start, end) {
        (Some(s), Some(e)) => v.get(s..=e).unwrap_or_default(),
        _ => &[],
    }
}

/// The elements of a comma list, OWS-trimmed, empty elements included.
pub(crate) fn elements(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim_ows)
}

/// Whether `b` may appear in a token (RFC 9110 §5.6.2).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `v` is a non-empty token.
pub(crate) fn is_token(v: &[u8]) -> bool {
    !v.is_empty() && v.iter().all(|&b| is_tchar(b))
}

/// The values of every field called `name`, in order.
pub(crate) fn values<'a>(fields: &Fields<'a>, name: &str) -> impl Iterator<Item = &'a [u8]> {
    fields
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, v)| v)
}

/// Whether any field called `name` lists `token` (ASCII case-insensitive),
/// e.g. `has_token(fields, "connection", b"close")`.
pub(crate) fn has_token(fields: &Fields, name: &str, token: &[u8]) -> bool {
    values(fields, name).any(|v| elements(v).any(|e| e.eq_ignore_ascii_case(token)))
}

/// Parses `Content-Length` and `Transfer-Encoding`. Several `Content-Length`
/// values (separate fields or a comma list) are one length when they are all
/// the same number; differing, empty, non-numeric or overflowing values are an
/// error. A `Transfer-Encoding` with an empty or non-token element is an error.
pub(crate) fn framing(fields: &Fields) -> Result<Framing, &'static str> {
    let mut length: Option<u64> = None;
    let mut codings = 0usize;
    let mut chunked = 0usize;
    let mut last_is_chunked = false;
    let mut te_seen = false;
    for &(name, value) in fields {
        if name.eq_ignore_ascii_case("content-length") {
            for e in elements(value) {
                let n = parse_decimal(e).ok_or("invalid Content-Length")?;
                match length {
                    Some(prev) if prev != n => return Err("conflicting Content-Length values"),
                    _ => length = Some(n),
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            te_seen = true;
            for e in elements(value) {
                let coding = e.split(|&b| b == b';').next().map(trim_ows);
                let coding = coding
                    .filter(|c| is_token(c))
                    .ok_or("invalid Transfer-Encoding")?;
                codings += 1;
                // `chunked` takes no parameters: "chunked;x=y" is another coding.
                last_is_chunked = e.eq_ignore_ascii_case(b"chunked");
                if coding.eq_ignore_ascii_case(b"chunked") {
                    chunked += 1;
                }
            }
        }
    }
    let coding = match (te_seen, codings) {
        (false, _) => None,
        (true, 0) => return Err("empty Transfer-Encoding"),
        (true, _) if last_is_chunked && chunked == 1 => Some(Coding::Chunked),
        (true, _) => Some(Coding::Other),
    };
    Ok(Framing { length, coding })
}

/// A non-empty run of ASCII digits as a `u64`, or `None` (also on overflow).
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Whether a head uses obsolete line folding: a field line (after the start
/// line, before the empty line ending the head) that starts with SP or HTAB.
pub(crate) fn has_obs_fold(head: &[u8]) -> bool {
    let mut start_line_seen = false;
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !start_line_seen {
            // Empty lines before the start line are skipped by the parser.
            start_line_seen = !line.is_empty();
            continue;
        }
        match line.first() {
            None => return false,
            Some(b' ' | b'\t') => return true,
            Some(_) => {}
        }
    }
    false
}

/// The length of the request-target on a (possibly partial) request line,
/// or `None` when the line has not reached the target yet.
pub(crate) fn target_len(head: &[u8]) -> Option<usize> {
    let start = head.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let line = head.get(start..)?;
    let method_end = line.iter().position(|&b| b == b' ')?;
    let target = line.get(method_end.checked_add(1)?..)?;
    let end = target
        .iter()
        .position(|&b| matches!(b, b' ' | b'\r' | b'\n'))
        .unwrap_or(target.len());
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spare_field_list_keeps_its_allocation_across_lifetimes() {
        let bytes = b"value".to_vec();
        let mut v: Vec<Field<'_>> = Vec::with_capacity(16);
        v.push(("name", &bytes[..]));
        let at = v.as_ptr() as usize;
        let spare = SpareFields::keep(v);
        drop(bytes);
        let again: Vec<Field<'_>> = spare.take();
        assert!(again.is_empty() && again.capacity() >= 16);
        assert_eq!(again.as_ptr() as usize, at, "no new allocation");
    }

    fn fields<'a>(list: &[(&'a str, &'a str)]) -> Vec<Field<'a>> {
        list.iter().map(|&(n, v)| (n, v.as_bytes())).collect()
    }

    fn framing_of(list: &[(&str, &str)]) -> Result<Framing, &'static str> {
        framing(&fields(list))
    }

    #[test]
    fn identical_content_lengths_in_a_list_or_in_several_fields_are_one() {
        for f in [
            &[("Content-Length", "5, 5")][..],
            &[("Content-Length", "5"), ("content-length", "5")][..],
        ] {
            assert_eq!(framing_of(f).map(|f| f.length), Ok(Some(5)));
        }
    }

    #[test]
    fn differing_empty_signed_or_overflowing_content_lengths_are_errors() {
        for v in [
            "5, 6",
            "",
            "5,",
            "+5",
            "-1",
            "0x10",
            "1 2",
            "18446744073709551616",
        ] {
            assert!(framing_of(&[("Content-Length", v)]).is_err(), "{v:?}");
        }
        assert!(framing_of(&[("Content-Length", "5"), ("Content-Length", "6")]).is_err());
        assert_eq!(
            framing_of(&[("Content-Length", "18446744073709551615")]).map(|f| f.length),
            Ok(Some(u64::MAX))
        );
    }

    #[test]
    fn transfer_encoding_is_chunked_only_when_chunked_is_final_and_single() {
        let coding = |v: &str| framing_of(&[("Transfer-Encoding", v)]).map(|f| f.coding);
        assert_eq!(coding("chunked"), Ok(Some(Coding::Chunked)));
        assert_eq!(coding("gzip, CHUNKED"), Ok(Some(Coding::Chunked)));
        assert_eq!(coding("chunked, gzip"), Ok(Some(Coding::Other)));
        assert_eq!(coding("chunked, chunked"), Ok(Some(Coding::Other)));
        assert_eq!(coding("chunked;x=1"), Ok(Some(Coding::Other)));
        assert_eq!(coding("identity"), Ok(Some(Coding::Other)));
        for bad in ["", "chunked,", "ch unked", "\"chunked\""] {
            assert!(coding(bad).is_err(), "{bad:?}");
        }
        let split = fields(&[
            ("Transfer-Encoding", "gzip"),
            ("Transfer-Encoding", "chunked"),
        ]);
        assert_eq!(framing(&split).map(|f| f.coding), Ok(Some(Coding::Chunked)));
    }

    #[test]
    fn connection_tokens_match_case_insensitively_across_fields() {
        let f = fields(&[("Connection", "keep-alive"), ("connection", " Upgrade , x")]);
        assert!(has_token(&f, "Connection", b"upgrade"));
        assert!(has_token(&f, "connection", b"X"));
        assert!(!has_token(&f, "connection", b"close"));
    }

    #[test]
    fn obs_fold_is_a_field_line_starting_with_whitespace() {
        assert!(has_obs_fold(b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"));
        assert!(has_obs_fold(b"\r\nGET / HTTP/1.1\r\n\tA: b\r\n\r\n"));
        assert!(!has_obs_fold(b"GET / HTTP/1.1\r\nA: b c\r\n\r\n body"));
        assert!(!has_obs_fold(b""));
    }

    #[test]
    fn target_length_is_known_once_the_method_ends() {
        assert_eq!(target_len(b"GET"), None);
        assert_eq!(target_len(b"GET /abc"), Some(4));
        assert_eq!(target_len(b"\r\nGET /a HTTP/1.1"), Some(2));
        assert_eq!(trim_ows(b" \t "), b"");
    }
}
