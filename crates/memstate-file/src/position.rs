//! Positions in the journal and their cursor encoding.
//!
//! A cursor is `SEGMENT:OFFSET`, both decimal, zero-padded to 8 and 12 digits
//! so that cursors of one journal read well and sort as text too (the padding
//! is cosmetic: parsing accepts any number of digits and ordering is numeric).
//! The offset is the byte offset of the record's frame inside its segment.

use std::cmp::Ordering;
use std::fmt;

use memstate_core::Cursor;

use crate::error::FileStreamError;

/// Bytes of the segment header that precedes the first record. Defined here,
/// beside the positions it offsets, so that `format` depends on `position`
/// and not the other way round.
pub const SEGMENT_HEADER_LEN: u64 = 32;

/// Where one record's frame starts (or where the durable data ends): a
/// segment number and a byte offset inside that segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// The segment number (the file `SEGMENT.seg`).
    pub segment: u64,
    /// The byte offset inside the segment file.
    pub offset: u64,
}

impl Position {
    /// A position from its parts.
    pub const fn new(segment: u64, offset: u64) -> Self {
        Self { segment, offset }
    }

    /// The first record position of `segment` (just after its header).
    pub const fn segment_start(segment: u64) -> Self {
        Self {
            segment,
            offset: SEGMENT_HEADER_LEN,
        }
    }

    /// This position as a stream cursor.
    pub fn to_cursor(self) -> Cursor {
        Cursor::new(self.to_string())
    }

    /// Parses a cursor made by [`Position::to_cursor`].
    ///
    /// # Errors
    ///
    /// [`FileStreamError::InvalidCursor`] when the text is not
    /// `SEGMENT:OFFSET` in decimal digits, or the offset lies inside the
    /// segment header.
    pub fn from_cursor(cursor: &Cursor) -> Result<Self, FileStreamError> {
        let text = cursor.as_str();
        let invalid = |reason: &str| FileStreamError::InvalidCursor {
            cursor: text.to_owned(),
            reason: reason.to_owned(),
        };
        let (segment, offset) = text
            .split_once(':')
            .ok_or_else(|| invalid("file journal cursors look like SEGMENT:OFFSET"))?;
        let segment = parse_digits(segment)
            .ok_or_else(|| invalid("the segment number is not a decimal number"))?;
        let offset =
            parse_digits(offset).ok_or_else(|| invalid("the offset is not a decimal number"))?;
        if offset < SEGMENT_HEADER_LEN {
            return Err(invalid("the offset lies inside the segment header"));
        }
        Ok(Self { segment, offset })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08}:{:012}", self.segment, self.offset)
    }
}

/// Orders two cursors of a file journal numerically.
pub(crate) fn compare(a: &Cursor, b: &Cursor) -> Result<Ordering, FileStreamError> {
    Ok(Position::from_cursor(a)?.cmp(&Position::from_cursor(b)?))
}

/// Parses a non-empty run of ASCII digits; `u64::from_str` alone would also
/// accept a leading `+`.
fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_is_zero_padded() {
        let p = Position::new(3, 1234);
        let c = p.to_cursor();
        assert_eq!(c.as_str(), "00000003:000000001234");
        assert_eq!(Position::from_cursor(&c).unwrap(), p);
    }

    #[test]
    fn cursors_compare_numerically_not_as_text() {
        let a = Cursor::new("9:100");
        let b = Cursor::new("10:40");
        assert_eq!(compare(&a, &b).unwrap(), Ordering::Less);
        let c = Cursor::new("00000010:000000000040");
        assert_eq!(compare(&b, &c).unwrap(), Ordering::Equal);
    }

    #[test]
    fn malformed_cursors_are_invalid() {
        for text in [
            "",
            "12",
            "a:40",
            "1:",
            ":40",
            "1:+40",
            "1:40:2",
            "1:8",
            "-1:40",
            "1:99999999999999999999999",
        ] {
            let err = Position::from_cursor(&Cursor::new(text)).unwrap_err();
            assert!(
                matches!(err, FileStreamError::InvalidCursor { .. }),
                "{text:?} gave {err:?}"
            );
        }
    }
}
