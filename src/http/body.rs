//! Owns [`BodyTracker`]: where one message's body stands, whatever its
//! [`BodyKind`], behind one `advance` the session calls with the bytes that
//! follow a head ("how many of these are body, and is the body done?").

use super::BodyKind;
use super::chunked::{ChunkError, ChunkedScanner, Scan};

/// Where one message's body stands, whatever its framing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyTracker {
    /// No body (done from the start).
    None,
    /// `Content-Length`: this many bytes still to come.
    Length(u64),
    /// A chunked body.
    Chunked(ChunkedScanner),
    /// Until the peer closes: every byte is body, EOF ends it.
    UntilClose,
}

impl BodyTracker {
    /// The tracker for a body framed as `kind`.
    pub fn new(kind: BodyKind) -> Self {
        match kind {
            BodyKind::None | BodyKind::Length(0) => BodyTracker::None,
            BodyKind::Length(n) => BodyTracker::Length(n),
            BodyKind::Chunked => BodyTracker::Chunked(ChunkedScanner::new()),
            BodyKind::UntilClose => BodyTracker::UntilClose,
        }
    }

    /// How many of `bytes` are body, and whether the body is done.
    pub fn advance(&mut self, bytes: &[u8]) -> Result<Scan, ChunkError> {
        match self {
            BodyTracker::None => Ok(Scan::new(0, true)),
            BodyTracker::Length(left) => {
                let take = usize::try_from(*left).map_or(bytes.len(), |l| l.min(bytes.len()));
                *left = left.saturating_sub(take as u64);
                let done = *left == 0;
                if done {
                    *self = BodyTracker::None;
                }
                Ok(Scan {
                    consumed: take,
                    done,
                })
            }
            BodyTracker::Chunked(scanner) => scanner.scan(bytes),
            BodyTracker::UntilClose => Ok(Scan::new(bytes.len(), false)),
        }
    }

    /// Whether the body has ended (an `UntilClose` body ends only at EOF).
    pub fn is_done(&self) -> bool {
        match self {
            BodyTracker::None => true,
            BodyTracker::Length(left) => *left == 0,
            BodyTracker::Chunked(scanner) => scanner.is_done(),
            BodyTracker::UntilClose => false,
        }
    }

    /// Whether the peer closing now ends the body cleanly (rather than
    /// truncating it).
    pub fn eof_is_end(&self) -> bool {
        self.is_done() || *self == BodyTracker::UntilClose
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_tracker_takes_exactly_its_length() {
        let mut t = BodyTracker::new(BodyKind::Length(5));
        assert_eq!(t.advance(b"abc"), Ok(Scan::new(3, false)));
        assert!(!t.is_done() && !t.eof_is_end());
        assert_eq!(t.advance(b"deGET"), Ok(Scan::new(2, true)));
        assert_eq!(t.advance(b"GET"), Ok(Scan::new(0, true)));
    }

    #[test]
    fn trackers_for_no_body_until_close_and_chunked_behave_as_their_kind() {
        let mut none = BodyTracker::new(BodyKind::Length(0));
        assert_eq!(none.advance(b"x"), Ok(Scan::new(0, true)));
        let mut close = BodyTracker::new(BodyKind::UntilClose);
        assert_eq!(close.advance(b"xyz"), Ok(Scan::new(3, false)));
        assert!(close.eof_is_end() && !close.is_done());
        let mut chunked = BodyTracker::new(BodyKind::Chunked);
        assert_eq!(chunked.advance(b"0\r\n\r\nx"), Ok(Scan::new(5, true)));
        assert!(chunked.is_done());
    }
}
