//! Cursors of a Kinesis stream: the records' sequence numbers.
//!
//! A Kinesis sequence number is a decimal string of up to 129 digits
//! (`0|([1-9]\d{0,128})` in the API model), too long for `u128`. Within one
//! shard, a later record has a numerically larger sequence number, so cursors
//! are compared as arbitrary-precision integers: strip leading zeros, then the
//! longer number is larger, and numbers of equal length compare as strings.

use std::cmp::Ordering;

use memstate_core::cursor::compare_digits;
use memstate_core::{Cursor, StreamError};

/// The longest sequence number Kinesis issues, in digits.
const MAX_DIGITS: usize = 129;

const WHAT: &str = "Kinesis cursors are sequence numbers";

/// Checks that `cursor` is a sequence number and returns it.
pub(crate) fn from_cursor(cursor: &Cursor) -> Result<&str, StreamError> {
    memstate_core::cursor::digits(cursor, MAX_DIGITS, WHAT)
}

/// Orders two cursors of a Kinesis stream.
pub(crate) fn compare(a: &Cursor, b: &Cursor) -> Result<Ordering, StreamError> {
    Ok(compare_digits(from_cursor(a)?, from_cursor(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cursor {
        Cursor::new(s)
    }

    #[test]
    fn longer_sequence_number_is_later_even_when_it_sorts_first_as_text() {
        assert_eq!(compare(&c("10"), &c("9")).unwrap(), Ordering::Greater);
        assert_eq!(compare(&c("9"), &c("10")).unwrap(), Ordering::Less);
    }

    #[test]
    fn sequence_numbers_beyond_u128_compare_numerically() {
        let a = "49651234567890123456789012345678901234567890123456789012";
        let b = "49651234567890123456789012345678901234567890123456789013";
        assert!(
            a.parse::<u128>().is_err(),
            "the test needs a number wider than u128"
        );
        assert_eq!(compare(&c(a), &c(b)).unwrap(), Ordering::Less);
        assert_eq!(compare(&c(b), &c(a)).unwrap(), Ordering::Greater);
        assert_eq!(compare(&c(a), &c(a)).unwrap(), Ordering::Equal);
    }

    #[test]
    fn leading_zeros_do_not_change_the_value() {
        assert_eq!(compare(&c("00042"), &c("42")).unwrap(), Ordering::Equal);
        assert_eq!(compare(&c("000"), &c("0")).unwrap(), Ordering::Equal);
        assert_eq!(compare(&c("0099"), &c("100")).unwrap(), Ordering::Less);
    }

    #[test]
    fn non_digit_cursors_are_invalid() {
        for bad in ["", "12a", "-1", "1.5", " 1", "१२"] {
            let err = compare(&c(bad), &c("1")).unwrap_err();
            assert!(
                matches!(&err, StreamError::InvalidCursor { cursor, .. } if cursor == bad),
                "{bad:?} gave {err:?}"
            );
        }
        let err = compare(&c("1"), &c("x")).unwrap_err();
        assert!(matches!(err, StreamError::InvalidCursor { .. }));
    }

    #[test]
    fn overlong_cursor_is_invalid() {
        let long = "1".repeat(MAX_DIGITS + 1);
        assert!(matches!(
            from_cursor(&c(&long)),
            Err(StreamError::InvalidCursor { .. })
        ));
        assert!(from_cursor(&c(&"1".repeat(MAX_DIGITS))).is_ok());
    }
}
