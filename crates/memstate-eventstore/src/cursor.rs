//! Cursors: an EventStoreDB stream revision written as a decimal string.
//!
//! Revisions of one stream are contiguous (`0, 1, 2, ...`), so the cursor is
//! simply the event's revision. Only the canonical form is accepted (digits,
//! no sign, no leading zero), so that two different strings never name the
//! same record.

use std::cmp::Ordering;

use memstate_core::{Cursor, StreamError};

/// Encodes a stream revision as a cursor.
pub(crate) fn encode(revision: u64) -> Cursor {
    Cursor::new(revision.to_string())
}

/// Decodes a cursor made by [`encode`].
pub(crate) fn decode(cursor: &Cursor) -> Result<u64, StreamError> {
    let text = cursor.as_str();
    let invalid = |reason: &str| StreamError::InvalidCursor {
        cursor: text.to_owned(),
        reason: format!("EventStoreDB cursors are stream revisions in decimal: {reason}"),
    };
    if text.is_empty() {
        return Err(invalid("empty"));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("only the digits 0-9 are allowed"));
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(invalid("leading zeros are not allowed"));
    }
    text.parse::<u64>()
        .map_err(|_| invalid("larger than the largest revision (2^64 - 1)"))
}

/// Orders two cursors numerically (`"9" < "10"`).
pub(crate) fn compare(a: &Cursor, b: &Cursor) -> Result<Ordering, StreamError> {
    Ok(decode(a)?.cmp(&decode(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_round_trip_through_cursors() {
        for revision in [0, 1, 9, 10, 12_345, u64::MAX] {
            let cursor = encode(revision);
            assert_eq!(cursor.as_str(), revision.to_string());
            assert_eq!(decode(&cursor).ok(), Some(revision));
        }
    }

    #[test]
    fn cursors_compare_numerically_not_lexically() {
        let nine = encode(9);
        let ten = encode(10);
        assert_eq!(compare(&nine, &ten).ok(), Some(Ordering::Less));
        assert_eq!(compare(&ten, &nine).ok(), Some(Ordering::Greater));
        assert_eq!(compare(&ten, &encode(10)).ok(), Some(Ordering::Equal));
        assert_eq!(
            compare(&encode(0), &encode(u64::MAX)).ok(),
            Some(Ordering::Less)
        );
    }

    #[test]
    fn malformed_cursors_are_refused_with_invalid_cursor() {
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
            "18446744073709551616",
            "3:14",
        ] {
            match decode(&Cursor::new(text)) {
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
        let good = encode(3);
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
