//! The two byte-range headers of the distribution API, parsed with checked
//! arithmetic: `Content-Range: <start>-<end>` on upload chunks and
//! `Range: bytes=...` on blob GETs. Every number comes from a client, so no
//! value (up to and past `u64::MAX`) may overflow or panic.

use std::fmt;

/// The `Content-Range` of an upload chunk: the inclusive byte positions
/// `start..=end` of the chunk in the blob. Its length `end - start + 1` is
/// always representable as a `u64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRange {
    start: u64,
    end: u64,
}

/// Why a `Content-Range` was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkRangeError {
    #[error("Content-Range must have the form <start>-<end>")]
    Malformed,
    #[error("Content-Range ends before it starts")]
    Reversed,
    #[error("Content-Range is longer than any blob can be")]
    TooLong,
}

impl ChunkRange {
    /// Parse `<start>-<end>` (decimal, inclusive; blanks around the value
    /// are allowed, blanks inside it and a `bytes ` prefix are refused).
    pub fn parse(raw: &str) -> Result<ChunkRange, ChunkRangeError> {
        let (a, b) = raw
            .trim()
            .split_once('-')
            .ok_or(ChunkRangeError::Malformed)?;
        let start = decimal(a).ok_or(ChunkRangeError::Malformed)?;
        let end = decimal(b).ok_or(ChunkRangeError::Malformed)?;
        ChunkRange::new(start, end)
    }

    /// The range `start..=end`, if it is not reversed and its length fits in a `u64`.
    pub fn new(start: u64, end: u64) -> Result<ChunkRange, ChunkRangeError> {
        let span = end.checked_sub(start).ok_or(ChunkRangeError::Reversed)?;
        span.checked_add(1).ok_or(ChunkRangeError::TooLong)?;
        Ok(ChunkRange { start, end })
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    /// The last byte position (inclusive).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The number of bytes the chunk must carry (at least 1).
    pub fn len(&self) -> u64 {
        // Checked in `new`: end >= start and end - start < u64::MAX.
        self.end - self.start + 1
    }

    /// Never true: a range covers at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for ChunkRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// A non-empty run of ASCII digits (nothing else, not even blanks) that
/// fits in a `u64`.
fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// What to send for a blob GET with a `Range` header, for a blob of a known size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// The whole blob: no `Range`, or one that is ignored (several ranges,
    /// another unit, a malformed one; RFC 9110 allows ignoring them).
    Whole,
    /// The half-open range `start..end`, with `start < end <= size`.
    Part { start: u64, end: u64 },
    /// A range the blob cannot satisfy (416).
    Unsatisfiable,
}

impl ByteRange {
    /// Interpret a `Range` header value (`None`: no header) against a blob
    /// of `size` bytes. Only single `bytes=` ranges are honoured.
    pub fn parse(header: Option<&str>, size: u64) -> ByteRange {
        let Some(spec) = header.and_then(|v| v.trim().strip_prefix("bytes=")) else {
            return ByteRange::Whole;
        };
        if spec.contains(',') {
            return ByteRange::Whole;
        }
        let Some((a, b)) = spec.trim().split_once('-') else {
            return ByteRange::Whole;
        };
        let (a, b) = (a.trim(), b.trim());
        match (a.is_empty(), b.is_empty()) {
            // bytes=-N: the last N bytes.
            (true, false) => match decimal(b) {
                None => ByteRange::Whole,
                Some(0) => ByteRange::Unsatisfiable,
                Some(_) if size == 0 => ByteRange::Unsatisfiable,
                Some(n) => ByteRange::Part {
                    start: size.saturating_sub(n),
                    end: size,
                },
            },
            // bytes=A-
            (false, true) => match decimal(a) {
                None => ByteRange::Whole,
                Some(s) if s >= size => ByteRange::Unsatisfiable,
                Some(s) => ByteRange::Part {
                    start: s,
                    end: size,
                },
            },
            // bytes=A-B (inclusive B, clamped to the blob)
            (false, false) => match (decimal(a), decimal(b)) {
                (Some(s), Some(e)) if s <= e => {
                    if s >= size {
                        ByteRange::Unsatisfiable
                    } else {
                        ByteRange::Part {
                            start: s,
                            end: e.saturating_add(1).min(size),
                        }
                    }
                }
                _ => ByteRange::Whole,
            },
            (true, true) => ByteRange::Whole,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = u64::MAX;

    #[test]
    fn chunk_range_forms() {
        let r = ChunkRange::parse("0-9").unwrap();
        assert_eq!((r.start(), r.end(), r.len()), (0, 9, 10));
        assert_eq!(ChunkRange::parse(" 5-5 ").unwrap().len(), 1);
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "a-b",
            "1-2-3",
            "bytes 0-1/2",
            "+1-2",
            "0 - 4",
            "0x1-2",
        ] {
            assert_eq!(
                ChunkRange::parse(bad),
                Err(ChunkRangeError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(ChunkRange::parse("2-1"), Err(ChunkRangeError::Reversed));
    }

    #[test]
    fn chunk_range_at_the_u64_edges() {
        // The whole u64 space is one byte too long to count.
        assert_eq!(
            ChunkRange::parse(&format!("0-{MAX}")),
            Err(ChunkRangeError::TooLong)
        );
        assert_eq!(ChunkRange::new(0, MAX), Err(ChunkRangeError::TooLong));
        assert_eq!(ChunkRange::new(0, MAX - 1).unwrap().len(), MAX);
        assert_eq!(ChunkRange::new(1, MAX).unwrap().len(), MAX);
        assert_eq!(ChunkRange::new(MAX, MAX).unwrap().len(), 1);
        assert_eq!(
            ChunkRange::new(MAX, MAX - 1),
            Err(ChunkRangeError::Reversed)
        );
        // Past u64: not a number we can hold.
        assert_eq!(
            ChunkRange::parse("0-18446744073709551616"),
            Err(ChunkRangeError::Malformed)
        );
        assert_eq!(
            ChunkRange::parse("99999999999999999999-99999999999999999999"),
            Err(ChunkRangeError::Malformed)
        );
    }

    #[test]
    fn byte_range_forms() {
        let p = |start, end| ByteRange::Part { start, end };
        assert_eq!(ByteRange::parse(None, 10), ByteRange::Whole);
        assert_eq!(ByteRange::parse(Some("bytes=0-0"), 10), p(0, 1));
        assert_eq!(ByteRange::parse(Some("bytes=2-"), 10), p(2, 10));
        assert_eq!(ByteRange::parse(Some("bytes=-3"), 10), p(7, 10));
        assert_eq!(ByteRange::parse(Some("bytes=-30"), 10), p(0, 10));
        assert_eq!(ByteRange::parse(Some("bytes=5-100"), 10), p(5, 10));
        assert_eq!(
            ByteRange::parse(Some("bytes=10-"), 10),
            ByteRange::Unsatisfiable
        );
        assert_eq!(
            ByteRange::parse(Some("bytes=10-11"), 10),
            ByteRange::Unsatisfiable
        );
        assert_eq!(
            ByteRange::parse(Some("bytes=-0"), 10),
            ByteRange::Unsatisfiable
        );
        assert_eq!(
            ByteRange::parse(Some("bytes=-1"), 0),
            ByteRange::Unsatisfiable
        );
        for ignored in [
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=3-2",
            "bytes=-",
            "bytes=x-1",
            "bytes=1",
        ] {
            assert_eq!(
                ByteRange::parse(Some(ignored), 10),
                ByteRange::Whole,
                "{ignored}"
            );
        }
    }

    #[test]
    fn byte_range_at_the_u64_edges() {
        let p = |start, end| ByteRange::Part { start, end };
        assert_eq!(
            ByteRange::parse(Some(&format!("bytes=0-{MAX}")), 10),
            p(0, 10)
        );
        assert_eq!(
            ByteRange::parse(Some(&format!("bytes=0-{MAX}")), MAX),
            p(0, MAX)
        );
        assert_eq!(
            ByteRange::parse(Some(&format!("bytes=-{MAX}")), 10),
            p(0, 10)
        );
        assert_eq!(
            ByteRange::parse(Some(&format!("bytes={MAX}-")), 10),
            ByteRange::Unsatisfiable
        );
        assert_eq!(
            ByteRange::parse(Some(&format!("bytes={}-{MAX}", MAX - 1)), MAX),
            p(MAX - 1, MAX)
        );
        assert_eq!(
            ByteRange::parse(Some("bytes=0-18446744073709551616"), 10),
            ByteRange::Whole
        );
        assert_eq!(
            ByteRange::parse(Some("bytes=-18446744073709551616"), 10),
            ByteRange::Whole
        );
    }
}
