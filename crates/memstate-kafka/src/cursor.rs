//! Cursors of a Kafka stream: the record's offset in partition 0, written as a
//! canonical decimal string (`"0"`, `"17"`, never `"+17"` or `"017"`), and
//! ordered as numbers, not as strings.

use memstate_core::{Cursor, StreamError};

/// The cursor of the record at `offset`.
pub(crate) fn from_offset(offset: i64) -> Cursor {
    Cursor::new(offset.to_string())
}

/// The offset a cursor names.
///
/// # Errors
///
/// [`StreamError::InvalidCursor`] unless the cursor is a canonical decimal
/// offset in `0..=i64::MAX - 1` (the next record's offset must exist too).
pub(crate) fn to_offset(cursor: &Cursor) -> Result<i64, StreamError> {
    let text = cursor.as_str();
    let invalid = |reason: &str| StreamError::InvalidCursor {
        cursor: text.to_owned(),
        reason: format!("Kafka cursors are record offsets written in decimal: {reason}"),
    };
    if text.is_empty() {
        return Err(invalid("it is empty"));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("it contains something other than the digits 0-9"));
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(invalid("it has a leading zero"));
    }
    match text.parse::<i64>() {
        Ok(offset) if offset < i64::MAX => Ok(offset),
        _ => Err(invalid("it is larger than any Kafka offset")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_through_cursors() {
        for offset in [0, 1, 9, 10, 12_345_678_901] {
            assert_eq!(to_offset(&from_offset(offset)).unwrap(), offset);
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
            let err = to_offset(&Cursor::new(text)).unwrap_err();
            assert!(
                matches!(err, StreamError::InvalidCursor { .. }),
                "{text:?}: {err}"
            );
        }
    }
}
