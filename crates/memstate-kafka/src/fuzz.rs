//! Property-based fuzzing of what this adapter reads from outside: cursors
//! (from snapshots and callers) and the client properties file. Whatever the
//! text, the parsers return a value or an error, never panic, and accept only
//! the canonical form. The records themselves are not decoded here: a
//! record's payload is handed to the engine unchanged (its decoding is fuzzed
//! in memstate-core), and its cursor is the offset the client reports.
//!
//! `cargo test` runs a short pass; `make fuzz` sets `PROPTEST_CASES` to a
//! million inputs per target.

use std::collections::BTreeMap;

use memstate_core::{Cursor, StreamError};
use proptest::prelude::*;

use crate::cursor::{from_cursor, to_cursor};
use crate::properties::parse_properties;

/// Text that looks like an offset more often than not.
fn cursor_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,22}",
        "[-+ 0]{0,2}[0-9]{1,20}[ .]{0,1}",
        "\\PC{0,24}",
    ]
}

proptest! {
    // 256 cases (`cargo test`), or `PROPTEST_CASES` (`make fuzz`).
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// Any text: an offset only when it is the canonical decimal form of a
    /// Kafka offset that has a successor; otherwise `InvalidCursor`.
    #[test]
    fn any_text_as_a_cursor(text in cursor_text()) {
        match from_cursor(&Cursor::new(text.clone())) {
            Ok(offset) => {
                prop_assert!((0..i64::MAX).contains(&offset));
                prop_assert_eq!(to_cursor(offset).as_str().to_owned(), text.clone());
            }
            Err(StreamError::InvalidCursor { cursor, .. }) => prop_assert_eq!(cursor, text),
            Err(other) => prop_assert!(false, "{:?}: {}", text, other),
        }
    }

    /// Every offset survives the trip through a cursor, and cursors order
    /// as their offsets do (`"9" < "10"`).
    #[test]
    fn offsets_round_trip_and_order(a in 0..i64::MAX, b in 0..i64::MAX) {
        let (ca, cb) = (to_cursor(a), to_cursor(b));
        prop_assert_eq!(from_cursor(&ca).ok(), Some(a));
        prop_assert_eq!(from_cursor(&ca).ok().cmp(&from_cursor(&cb).ok()), a.cmp(&b));
    }

    /// Any text as a properties file: pairs or an error that names only a
    /// line number (values may be secrets).
    #[test]
    fn any_text_as_a_properties_file(text in "(\\PC{0,30}[\n\r]{0,2}){0,6}") {
        match parse_properties(&text) {
            Ok(pairs) => {
                for (key, value) in &pairs {
                    prop_assert!(!key.is_empty());
                    prop_assert_eq!(key.trim(), key.as_str());
                    prop_assert!(!key.contains('='));
                    prop_assert_eq!(value.trim(), value.as_str());
                }
            }
            Err(reason) => {
                let named = (1..=text.lines().count()).any(|n| {
                    reason == format!("line {n} is not key=value (nor blank, nor a # comment)")
                        || reason == format!("line {n} has no key before '='")
                });
                prop_assert!(named, "{:?} is more than a line number", reason);
            }
        }
    }

    /// A file written as `key = value` lines, with comments and blank lines
    /// between them, reads back as exactly those pairs (the last one of a
    /// repeated key wins).
    #[test]
    fn written_properties_read_back(
        pairs in proptest::collection::vec(("[a-z][a-z0-9._-]{0,15}", "([!-~]([ -~]{0,20}[!-~])?)?", 0..3usize), 0..8)
    ) {
        let mut text = String::new();
        let mut expected = BTreeMap::new();
        for (key, value, decoration) in &pairs {
            match decoration {
                0 => text.push_str(&format!("{key}={value}\n")),
                1 => text.push_str(&format!("  {key} = {value}  \r\n")),
                _ => text.push_str(&format!("# {key}\n\n{key}={value}\n")),
            }
            expected.insert(key.clone(), value.clone());
        }
        prop_assert_eq!(parse_properties(&text), Ok(expected));
    }
}
