//! Decimal cursors, written once for every adapter whose positions are
//! numbers (Kafka offsets, KurrentDB revisions, Kinesis sequence numbers, the
//! memory stream's indexes).
//!
//! One naming scheme across the workspace: a position becomes a cursor with
//! `to_cursor` and is read back with `from_cursor` (here for numbers; the file
//! journal's `Position::to_cursor` / `Position::from_cursor` for its own).
//! Only the canonical form is accepted — digits, no sign, no leading zero —
//! so that two different strings never name the same record.

use std::cmp::Ordering;

use crate::stream::{Cursor, StreamError};

/// The cursor of the record at `position`, in canonical decimal.
pub fn to_cursor(position: u64) -> Cursor {
    Cursor::new(position.to_string())
}

/// The number a canonical decimal cursor names. `what` says what the
/// adapter's cursors are, for the error ("Kafka cursors are record offsets").
///
/// # Errors
///
/// [`StreamError::InvalidCursor`] naming `what`, unless the cursor is
/// canonical decimal digits that fit a `u64`.
pub fn from_cursor(cursor: &Cursor, what: &str) -> Result<u64, StreamError> {
    let text = digits(cursor, 20, what)?;
    if text.len() > 1 && text.starts_with('0') {
        return Err(invalid(cursor, what, "it has a leading zero"));
    }
    text.parse()
        .map_err(|_| invalid(cursor, what, "it is larger than 2^64 - 1"))
}

/// The digits of a decimal cursor too long for any integer type (a Kinesis
/// sequence number has up to 129). Leading zeros are allowed and do not
/// change the value (see [`compare_digits`]).
///
/// # Errors
///
/// [`StreamError::InvalidCursor`] naming `what` when the cursor is empty,
/// holds anything but the digits 0-9, or is longer than `max_digits`.
pub fn digits<'c>(
    cursor: &'c Cursor,
    max_digits: usize,
    what: &str,
) -> Result<&'c str, StreamError> {
    let text = cursor.as_str();
    if text.is_empty() {
        return Err(invalid(cursor, what, "it is empty"));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            cursor,
            what,
            "it contains something other than the digits 0-9",
        ));
    }
    if text.len() > max_digits {
        return Err(invalid(
            cursor,
            what,
            &format!("it is longer than {max_digits} digits"),
        ));
    }
    Ok(text)
}

/// Orders two runs of decimal digits by value, at any length.
pub fn compare_digits(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn invalid(cursor: &Cursor, what: &str, reason: &str) -> StreamError {
    StreamError::InvalidCursor {
        cursor: cursor.as_str().to_owned(),
        reason: format!("{what} written in decimal: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_through_cursors() {
        for n in [0, 1, 9, 10, 12_345_678_901, u64::MAX] {
            let cursor = to_cursor(n);
            assert_eq!(cursor.as_str(), n.to_string());
            assert_eq!(from_cursor(&cursor, "numbers").unwrap(), n);
        }
    }

    #[test]
    fn non_canonical_numbers_are_refused_naming_what_cursors_are() {
        for text in [
            "",
            "-1",
            "+1",
            "01",
            "00",
            " 1",
            "1 ",
            "1.0",
            "abc",
            "0x10",
            "3:14",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            match from_cursor(&Cursor::new(text), "Kafka cursors are record offsets") {
                Err(StreamError::InvalidCursor { cursor, reason }) => {
                    assert_eq!(cursor, text);
                    assert!(reason.contains("record offsets"), "{reason}");
                }
                other => panic!("{text:?} was accepted: {other:?}"),
            }
        }
    }

    #[test]
    fn long_digit_runs_compare_by_value() {
        assert_eq!(compare_digits("10", "9"), Ordering::Greater);
        assert_eq!(compare_digits("00042", "42"), Ordering::Equal);
        assert_eq!(compare_digits("0099", "100"), Ordering::Less);
        let a = "49651234567890123456789012345678901234567890123456789012";
        let b = "49651234567890123456789012345678901234567890123456789013";
        assert_eq!(compare_digits(a, b), Ordering::Less);
    }

    #[test]
    fn digits_are_checked_for_form_and_length() {
        assert!(digits(&Cursor::new("0042"), 4, "n").is_ok());
        for bad in ["", "12a", "-1", " 1", "१२", "12345"] {
            assert!(
                matches!(
                    digits(&Cursor::new(bad), 4, "n"),
                    Err(StreamError::InvalidCursor { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
