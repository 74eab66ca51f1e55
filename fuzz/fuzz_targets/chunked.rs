//! `ChunkedScanner` and `BodyTracker` fed the input whole, byte by byte and
//! cut at points derived from the input. Checks: no panic; a call never
//! consumes more than it was given, and all of it unless the body ended;
//! every way of cutting ends at the same byte (or fails with the same
//! error); a finished or failed scanner stays so. Then the input is encoded
//! as a valid chunked body (chunk sizes, hex case and extensions derived
//! from it) and the scanner must end exactly after it.
#![no_main]

use lbctl::http::{BodyKind, BodyTracker, ChunkError, ChunkedScanner};
use lbctl_fuzz::{Prng, pieces};
use libfuzzer_sys::fuzz_target;

/// Where a body fed in pieces ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Done after this many bytes.
    At(usize),
    /// Every byte was body and it has not ended.
    Open,
    Failed(ChunkError),
}

/// Feeds `cuts` in order to `advance`, checking each call's contract.
fn feed(
    cuts: &[&[u8]],
    mut advance: impl FnMut(&[u8]) -> Result<lbctl::http::Scan, ChunkError>,
) -> End {
    let mut pos = 0usize;
    for piece in cuts {
        match advance(piece) {
            Err(e) => {
                assert_eq!(advance(b"0\r\n\r\n"), Err(e), "a failure is final");
                return End::Failed(e);
            }
            Ok(scan) => {
                assert!(scan.consumed <= piece.len(), "consumed more than given");
                pos += scan.consumed;
                if scan.done {
                    let after = advance(b"0\r\n\r\n").expect("done stays done");
                    assert!(after.done && after.consumed == 0, "done stays done");
                    return End::At(pos);
                }
                assert_eq!(scan.consumed, piece.len(), "an open body takes all");
            }
        }
    }
    End::Open
}

fn scanner(cuts: &[&[u8]]) -> End {
    let mut s = ChunkedScanner::new();
    let end = feed(cuts, |b| s.scan(b));
    assert_eq!(s.is_done(), matches!(end, End::At(_)));
    end
}

fn tracker(kind: BodyKind, cuts: &[&[u8]]) -> End {
    let mut t = BodyTracker::new(kind);
    let end = feed(cuts, |b| t.advance(b));
    if matches!(end, End::At(_)) {
        assert!(t.is_done() && t.eof_is_end());
    }
    end
}

/// `data` as a well-formed chunked body, then `0`, trailers and the end.
fn encode(data: &[u8], rng: &mut Prng) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in pieces(data, rng, 64) {
        if chunk.is_empty() {
            continue; // a zero-size chunk would end the body
        }
        let size = if rng.flip() {
            format!("{:x}", chunk.len())
        } else {
            format!("{:0w$X}", chunk.len(), w = rng.below(6))
        };
        out.extend_from_slice(size.as_bytes());
        match rng.below(4) {
            0 => out.extend_from_slice(b";name=value"),
            1 => out.extend_from_slice(b" ;q=\"a b\""),
            _ => {}
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    if rng.flip() {
        out.extend_from_slice(b"X-Sum: 1\r\nExpires: never\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return; // no call at all: nothing to check
    }
    let mut rng = Prng::from_input(data);
    let whole: Vec<&[u8]> = vec![data];
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    let max_piece = 1 + rng.below(32);
    let cut = pieces(data, &mut rng, max_piece);

    let end = scanner(&whole);
    assert_eq!(scanner(&bytes), end, "byte by byte");
    assert_eq!(scanner(&cut), end, "in pieces");
    assert_eq!(tracker(BodyKind::Chunked, &cut), end, "tracker");

    let n = rng.below(data.len() + 2);
    let length = if n <= data.len() {
        End::At(n)
    } else {
        End::Open
    };
    assert_eq!(tracker(BodyKind::Length(n as u64), &cut), length, "length");
    assert_eq!(tracker(BodyKind::None, &cut), End::At(0), "none");
    assert_eq!(
        tracker(BodyKind::UntilClose, &cut),
        End::Open,
        "until close"
    );

    let mut body = encode(data, &mut rng);
    let len = body.len();
    body.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
    let max_piece = 1 + rng.below(128);
    let cut = pieces(&body, &mut rng, max_piece);
    assert_eq!(scanner(&cut), End::At(len), "a valid body ends at its end");
});
