//! Cursors of a Kafka stream: the record's offset in partition 0, written as a
//! canonical decimal string (`"0"`, `"17"`, never `"+17"` or `"017"`), and
//! ordered as numbers, not as strings. Parsing is `memstate_core::cursor`'s,
//! shared by every adapter with numeric positions.

use memstate_core::{Cursor, StreamError};

const WHAT: &str = "Kafka cursors are record offsets";

/// The cursor of the record at `offset`.
pub(crate) fn to_cursor(offset: i64) -> Cursor {
    Cursor::new(offset.to_string())
}

/// The offset a cursor names.
///
/// # Errors
///
/// [`StreamError::InvalidCursor`] unless the cursor is a canonical decimal
/// offset in `0..=i64::MAX - 1` (the next record's offset must exist too).
pub(crate) fn from_cursor(cursor: &Cursor) -> Result<i64, StreamError> {
    let number = memstate_core::cursor::from_cursor(cursor, WHAT)?;
    i64::try_from(number)
        .ok()
        .filter(|offset| *offset < i64::MAX)
        .ok_or_else(|| StreamError::InvalidCursor {
            cursor: cursor.as_str().to_owned(),
            reason: format!("{WHAT}: it is larger than any Kafka offset"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_through_cursors() {
        for offset in [0, 1, 9, 10, 12_345_678_901] {
            assert_eq!(from_cursor(&to_cursor(offset)).unwrap(), offset);
        }
    }

    #[test]
    fn cursors_that_are_not_canonical_offsets_are_refused() {
        for text in [
            "",
            "-1",
            "+1",
            "01",
            " 1",
            "1 ",
            "1.0",
            "abc",
            "9223372036854775807",
            "99999999999999999999",
        ] {
            let err = from_cursor(&Cursor::new(text)).unwrap_err();
            assert!(
                matches!(err, StreamError::InvalidCursor { .. }),
                "{text:?}: {err}"
            );
        }
    }
}
