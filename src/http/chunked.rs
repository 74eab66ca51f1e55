//! Owns finding where a chunked body ends: [`ChunkedScanner`], a streaming
//! validator of the chunked coding (RFC 9112 §7.1) that never decodes —
//! bodies are forwarded verbatim. It accepts the body split at any byte and
//! stops exactly at its end, leaving the next pipelined message unconsumed.
//! [`super::BodyTracker`] wraps it with the other body kinds.

use std::fmt;

use super::fields::is_tchar;

/// Hex digits of a chunk size at most (16 fill a `u64`).
const MAX_SIZE_DIGITS: u8 = 16;
/// Bytes of one chunk-size line (size and extensions, CRLF excluded) at most.
const MAX_SIZE_LINE: usize = 4 * 1024;
/// Bytes of all trailer fields together (their CRLFs included) at most.
const MAX_TRAILERS: usize = 16 * 1024;

/// What one `scan` / `advance` call found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scan {
    /// How many of the given bytes belong to the body. Less than all of them
    /// only when `done`: the rest is the next message.
    pub consumed: usize,
    /// Whether the body has ended (at `consumed`).
    pub done: bool,
}

/// A chunked body that cannot be forwarded. Answer 400 for a request body,
/// 502 for a response body (or just close, if the head is already sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk size that is empty or not hexadecimal.
    InvalidSize,
    /// A chunk size of more than 16 hex digits.
    SizeOverflow,
    /// A chunk-size line longer than 4 KiB (long extensions).
    LineTooLong,
    /// A control character in a chunk extension.
    InvalidExtension,
    /// A bare LF, a CR not followed by LF, or chunk data not followed by CRLF.
    BadLineEnding,
    /// A malformed trailer field (bad name, control character, obs-fold).
    InvalidTrailer,
    /// Trailer fields of more than 16 KiB.
    TrailersTooLarge,
}

impl Scan {
    /// `consumed` bytes were body; `done` when the body ended there.
    pub const fn new(consumed: usize, done: bool) -> Self {
        Scan { consumed, done }
    }
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkError::InvalidSize => "invalid chunk size",
            ChunkError::SizeOverflow => "chunk size of more than 16 hex digits",
            ChunkError::LineTooLong => "chunk-size line longer than 4 KiB",
            ChunkError::InvalidExtension => "invalid chunk extension",
            ChunkError::BadLineEnding => "chunked body line not ended by CRLF",
            ChunkError::InvalidTrailer => "invalid trailer field",
            ChunkError::TrailersTooLarge => "trailer fields larger than 16 KiB",
        })
    }
}

impl std::error::Error for ChunkError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// In the hex digits of a chunk size (this many so far).
    Size(u8),
    /// Whitespace after the size, before a `;` (BWS).
    SizeBws,
    /// In the chunk extensions.
    Ext,
    /// After the CR of a size line.
    SizeLf,
    /// In chunk data (`ChunkedScanner::size` bytes left).
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer field or of the final empty line.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
    Failed(ChunkError),
}

/// Streaming validator of one chunked body. Feed it the bytes after the head
/// with [`scan`](Self::scan), in pieces of any size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkedScanner {
    state: State,
    /// The chunk size being read, then the data bytes still to come.
    size: u64,
    /// Bytes of the current size line so far.
    line: usize,
    /// Bytes of trailer fields so far.
    trailers: usize,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedScanner {
    /// A scanner at the start of a chunked body.
    pub fn new() -> Self {
        ChunkedScanner {
            state: State::Size(0),
            size: 0,
            line: 0,
            trailers: 0,
        }
    }

    /// Whether the final CRLF has been scanned.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes the prefix of `bytes` that belongs to the body. Once it has
    /// failed, it fails again with the same error.
    pub fn scan(&mut self, bytes: &[u8]) -> Result<Scan, ChunkError> {
        let mut i = 0;
        loop {
            match self.state {
                State::Failed(e) => return Err(e),
                State::Done => break,
                State::Data => {
                    let rest = bytes.len().saturating_sub(i);
                    if rest == 0 {
                        break;
                    }
                    let take = usize::try_from(self.size).map_or(rest, |left| left.min(rest));
                    i = i.saturating_add(take);
                    // take <= self.size: it is min(size, rest) or rest < size.
                    self.size = self.size.saturating_sub(take as u64);
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => {
                    let Some(&b) = bytes.get(i) else { break };
                    match self.step(b) {
                        Ok(next) => self.state = next,
                        Err(e) => {
                            self.state = State::Failed(e);
                            return Err(e);
                        }
                    }
                    i = i.saturating_add(1);
                }
            }
        }
        Ok(Scan::new(i, self.is_done()))
    }

    /// The state after byte `b` (everything but data, which `scan` skips).
    fn step(&mut self, b: u8) -> Result<State, ChunkError> {
        use State::*;
        if matches!(self.state, Size(_) | SizeBws | Ext) && b != b'\r' {
            self.line = self.line.saturating_add(1);
            if self.line > MAX_SIZE_LINE {
                return Err(ChunkError::LineTooLong);
            }
        }
        if matches!(
            self.state,
            TrailerStart | TrailerName | TrailerValue | TrailerLf
        ) && !(self.state == TrailerStart && b == b'\r')
        {
            self.trailers = self.trailers.saturating_add(1);
            if self.trailers > MAX_TRAILERS {
                return Err(ChunkError::TrailersTooLarge);
            }
        }
        Ok(match (self.state, b) {
            (Size(n), _) if b.is_ascii_hexdigit() => {
                if n >= MAX_SIZE_DIGITS {
                    return Err(ChunkError::SizeOverflow);
                }
                let digit = u64::from(hex_value(b));
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(digit))
                    .ok_or(ChunkError::SizeOverflow)?;
                Size(n.saturating_add(1))
            }
            (Size(0), _) => return Err(ChunkError::InvalidSize),
            (Size(_), b';') | (SizeBws, b';') => Ext,
            (Size(_), b' ' | b'\t') | (SizeBws, b' ' | b'\t') => SizeBws,
            (Size(_) | Ext, b'\r') => SizeLf,
            (Size(_) | SizeBws | Ext, b'\n') => return Err(ChunkError::BadLineEnding),
            (Size(_) | SizeBws, _) => return Err(ChunkError::InvalidSize),
            (Ext, _) if b == b'\t' || (b >= b' ' && b != 0x7f) => Ext,
            (Ext, _) => return Err(ChunkError::InvalidExtension),
            (SizeLf, b'\n') => {
                self.line = 0;
                if self.size == 0 { TrailerStart } else { Data }
            }
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => {
                self.size = 0;
                Size(0)
            }
            (TrailerStart, b'\r') => FinalLf,
            (TrailerStart, _) if is_tchar(b) => TrailerName,
            (TrailerName, _) if is_tchar(b) => TrailerName,
            (TrailerName, b':') => TrailerValue,
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, b'\n') | (TrailerStart, b'\n') => {
                return Err(ChunkError::BadLineEnding);
            }
            (TrailerValue, _) if b == b'\t' || (b >= b' ' && b != 0x7f) => TrailerValue,
            (TrailerStart | TrailerName | TrailerValue, _) => {
                return Err(ChunkError::InvalidTrailer);
            }
            (TrailerLf, b'\n') => TrailerStart,
            (FinalLf, b'\n') => Done,
            (SizeLf | DataCr | DataLf | TrailerLf | FinalLf, _) => {
                return Err(ChunkError::BadLineEnding);
            }
            (Data | Done | Failed(_), _) => self.state,
        })
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: deterministic pieces and sizes without `rand`.
    struct Prng(u64);

    impl Prng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const BODY: &[u8] = b"4;name=value;x\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0;last\r\nExpires: never\r\nX-Sum: 1\r\n\r\n";
    const NEXT: &[u8] = b"GET /next HTTP/1.1\r\n\r\n";

    fn scan_all(body: &[u8]) -> Result<Scan, ChunkError> {
        ChunkedScanner::new().scan(body)
    }

    /// Feeds `data` in pieces of `piece()` bytes; returns where the body ended.
    fn scan_in_pieces(data: &[u8], mut piece: impl FnMut() -> usize) -> Result<usize, ChunkError> {
        let mut s = ChunkedScanner::new();
        let mut pos = 0;
        while pos < data.len() {
            let end = (pos + piece().max(1)).min(data.len());
            let r = s.scan(&data[pos..end])?;
            pos += r.consumed;
            if r.done {
                return Ok(pos);
            }
            assert_eq!(
                pos, end,
                "an unfinished body consumes every byte it is given"
            );
        }
        panic!("body never ended");
    }

    #[test]
    fn a_chunked_body_ends_exactly_after_its_trailers_leaving_the_next_request() {
        let data = [BODY, NEXT].concat();
        assert_eq!(scan_all(&data), Ok(Scan::new(BODY.len(), true)));
    }

    #[test]
    fn a_chunked_body_fed_byte_by_byte_ends_at_the_same_place() {
        let data = [BODY, NEXT].concat();
        assert_eq!(scan_in_pieces(&data, || 1), Ok(BODY.len()));
    }

    #[test]
    fn every_split_into_two_pieces_ends_at_the_same_place() {
        let data = [BODY, NEXT].concat();
        for at in 0..=BODY.len() {
            let mut s = ChunkedScanner::new();
            let first = s.scan(&data[..at]).expect("first piece");
            assert!(!first.done || at == BODY.len());
            let second = s.scan(&data[first.consumed..]).expect("second piece");
            assert_eq!(
                (first.consumed + second.consumed, second.done),
                (BODY.len(), true)
            );
        }
    }

    #[test]
    fn a_ten_mib_chunked_body_in_random_pieces_ends_exactly_at_its_end() {
        let mut rng = Prng(0x2545_F491_4F6C_DD1D);
        let mut data = Vec::with_capacity(11 << 20);
        let mut total = 0usize;
        while total < 10 << 20 {
            let n = 1 + rng.below(70_000);
            data.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            data.resize(data.len() + n, b'x');
            data.extend_from_slice(b"\r\n");
            total += n;
        }
        data.extend_from_slice(b"0\r\n\r\n");
        let end = data.len();
        data.extend_from_slice(NEXT);
        assert_eq!(scan_in_pieces(&data, || 1 + rng.below(100_000)), Ok(end));
        assert_eq!(scan_in_pieces(&data, || 1 + rng.below(7)), Ok(end));
    }

    #[test]
    fn a_zero_chunk_without_trailers_ends_the_body() {
        assert_eq!(scan_all(b"0\r\n\r\nrest"), Ok(Scan::new(5, true)));
        assert_eq!(scan_all(b"000\r\n\r\n").map(|s| s.done), Ok(true));
    }

    #[test]
    fn an_unfinished_body_consumes_all_and_is_not_done() {
        for cut in [1, 3, 10, 30] {
            assert_eq!(scan_all(&BODY[..cut]), Ok(Scan::new(cut, false)));
        }
    }

    #[test]
    fn empty_non_hex_and_over_long_chunk_sizes_are_refused() {
        assert_eq!(scan_all(b"\r\n"), Err(ChunkError::InvalidSize));
        assert_eq!(scan_all(b";ext\r\n"), Err(ChunkError::InvalidSize));
        assert_eq!(scan_all(b"g\r\n"), Err(ChunkError::InvalidSize));
        assert_eq!(scan_all(b"-1\r\n"), Err(ChunkError::InvalidSize));
        assert_eq!(scan_all(b"0x5\r\n"), Err(ChunkError::InvalidSize));
        assert_eq!(scan_all(b"5 \r\n"), Err(ChunkError::InvalidSize));
        assert_eq!(
            scan_all(b"00000000000000001\r\n"),
            Err(ChunkError::SizeOverflow)
        );
        let max = scan_all(b"ffffffffffffffff\r\nabc");
        assert_eq!(max, Ok(Scan::new(21, false)));
    }

    #[test]
    fn chunk_extensions_are_skipped_but_bounded_and_free_of_controls() {
        assert_eq!(
            scan_all(b"1 ; a=\"b c\"\r\nx\r\n0\r\n\r\n").map(|s| s.done),
            Ok(true)
        );
        let mut long = b"1;".to_vec();
        long.resize(MAX_SIZE_LINE, b'a');
        assert!(scan_all(&long).is_ok());
        long.push(b'a');
        assert_eq!(scan_all(&long), Err(ChunkError::LineTooLong));
        assert_eq!(scan_all(b"1;a\0\r\n"), Err(ChunkError::InvalidExtension));
    }

    #[test]
    fn bare_lf_and_missing_crlf_after_data_are_refused() {
        assert_eq!(
            scan_all(b"1\nx\r\n0\r\n\r\n"),
            Err(ChunkError::BadLineEnding)
        );
        assert_eq!(scan_all(b"1;e\nx"), Err(ChunkError::BadLineEnding));
        assert_eq!(scan_all(b"1\rx"), Err(ChunkError::BadLineEnding));
        assert_eq!(scan_all(b"1\r\nxy\r\n"), Err(ChunkError::BadLineEnding));
        assert_eq!(
            scan_all(b"1\r\nx\n0\r\n\r\n"),
            Err(ChunkError::BadLineEnding)
        );
        assert_eq!(scan_all(b"0\r\n\n"), Err(ChunkError::BadLineEnding));
        assert_eq!(scan_all(b"0\r\nA: b\n\r\n"), Err(ChunkError::BadLineEnding));
        assert_eq!(scan_all(b"0\r\n\rx"), Err(ChunkError::BadLineEnding));
    }

    #[test]
    fn malformed_or_oversized_trailers_are_refused() {
        assert_eq!(
            scan_all(b"0\r\n A: b\r\n\r\n"),
            Err(ChunkError::InvalidTrailer)
        );
        assert_eq!(
            scan_all(b"0\r\nA b: c\r\n\r\n"),
            Err(ChunkError::InvalidTrailer)
        );
        assert_eq!(
            scan_all(b"0\r\nA: b\x01\r\n\r\n"),
            Err(ChunkError::InvalidTrailer)
        );
        let mut big = b"0\r\n".to_vec();
        while big.len() < MAX_TRAILERS + 100 {
            big.extend_from_slice(b"X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(scan_all(&big), Err(ChunkError::TrailersTooLarge));
    }

    #[test]
    fn a_failed_scanner_keeps_failing() {
        let mut s = ChunkedScanner::new();
        assert_eq!(s.scan(b"z"), Err(ChunkError::InvalidSize));
        assert_eq!(s.scan(b"0\r\n\r\n"), Err(ChunkError::InvalidSize));
        assert_eq!(s.scan(b""), Err(ChunkError::InvalidSize));
    }

    #[test]
    fn a_done_scanner_consumes_nothing_more() {
        let mut s = ChunkedScanner::new();
        assert!(s.scan(b"0\r\n\r\n").is_ok_and(|r| r.done));
        assert_eq!(s.scan(b"more"), Ok(Scan::new(0, true)));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Prng(7);
        let alphabet = b"0123456789abcdefXz;= \t\r\n:";
        for _ in 0..5000 {
            let len = rng.below(40);
            let data: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            let _ = scan_in_pieces_lenient(&data, &mut rng);
        }
    }

    fn scan_in_pieces_lenient(data: &[u8], rng: &mut Prng) -> Result<(), ChunkError> {
        let mut s = ChunkedScanner::new();
        let mut pos = 0;
        while pos < data.len() {
            let end = (pos + 1 + rng.below(5)).min(data.len());
            let r = s.scan(&data[pos..end])?;
            assert!(r.consumed <= end - pos);
            pos += r.consumed;
            if r.done {
                break;
            }
        }
        Ok(())
    }
}
