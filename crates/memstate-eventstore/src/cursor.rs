//! Cursors: an EventStoreDB stream revision written as a decimal string.
//!
//! Revisions of one stream are contiguous (`0, 1, 2, ...`), so the cursor is
//! simply the event's revision. Only the canonical form is accepted (digits,
//! no sign, no leading zero), so that two different strings never name the
//! same record.

use std::cmp::Ordering;

use memstate_core::{Cursor, StreamError};

const WHAT: &str = "EventStoreDB cursors are stream revisions";

/// The cursor of the event at `revision`.
pub(crate) fn to_cursor(revision: u64) -> Cursor {
    memstate_core::cursor::to_cursor(revision)
}

/// The revision a cursor made by [`to_cursor`] names.
pub(crate) fn from_cursor(cursor: &Cursor) -> Result<u64, StreamError> {
    memstate_core::cursor::from_cursor(cursor, WHAT)
}

/// Orders two cursors numerically (`"9" < "10"`).
pub(crate) fn compare(a: &Cursor, b: &Cursor) -> Result<Ordering, StreamError> {
    Ok(from_cursor(a)?.cmp(&from_cursor(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_round_trip_through_cursors() {
        for revision in [0, 1, 9, 10, 12_345, u64::MAX] {
            let cursor = to_cursor(revision);
            assert_eq!(cursor.as_str(), revision.to_string());
            assert_eq!(from_cursor(&cursor).ok(), Some(revision));
        }
    }

    #[test]
    fn cursors_compare_numerically_not_lexically() {
        let nine = to_cursor(9);
        let ten = to_cursor(10);
        assert_eq!(compare(&nine, &ten).ok(), Some(Ordering::Less));
        assert_eq!(compare(&ten, &nine).ok(), Some(Ordering::Greater));
        assert_eq!(compare(&ten, &to_cursor(10)).ok(), Some(Ordering::Equal));
        assert_eq!(
            compare(&to_cursor(0), &to_cursor(u64::MAX)).ok(),
            Some(Ordering::Less)
        );
    }

    #[test]
    fn malformed_cursors_are_refused_naming_revisions() {
        // The forms themselves are checked in memstate_core::cursor.
        for text in ["", "01", "18446744073709551616", "3:14"] {
            match from_cursor(&Cursor::new(text)) {
                Err(StreamError::InvalidCursor { cursor, reason }) => {
                    assert_eq!(cursor, text);
                    assert!(reason.contains("revision"), "{reason}");
                }
                other => panic!("{text:?} was accepted: {other:?}"),
            }
        }
    }

    #[test]
    fn compare_refuses_a_foreign_cursor_on_either_side() {
        let good = to_cursor(3);
        let foreign = Cursor::new("segment-1:offset-9");
        assert!(matches!(
            compare(&good, &foreign),
            Err(StreamError::InvalidCursor { .. })
        ));
        assert!(matches!(
            compare(&foreign, &good),
            Err(StreamError::InvalidCursor { .. })
        ));
    }
}
