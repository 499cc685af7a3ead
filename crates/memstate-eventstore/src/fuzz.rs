//! Property-based fuzzing of what this adapter reads from outside: cursors
//! (from snapshots and callers), the revisions the server delivers (repeated
//! after a reopen, or with a gap), the payload bytes it stores as JSON or
//! binary, and connection strings. Whatever the input, the result is a value
//! or an error, never a panic; revisions are yielded contiguously from 0 and
//! a gap is an error; a payload comes back byte for byte; an error about a
//! connection string never shows its password.
//!
//! `cargo test` runs a short pass; `make fuzz` sets `PROPTEST_CASES` to a
//! million inputs per target.

use bytes::Bytes;
use memstate_core::{Cursor, StreamError};
use proptest::prelude::*;

use crate::connection::parse;
use crate::cursor::{compare, from_cursor, to_cursor};
use crate::event::{exact_json, to_event_data};
use crate::subscription::{Admission, admit};

/// Characters a password may hold, URL delimiters included.
const PASSWORD: &str = "[A-Za-z0-9/?#:%+!$&'()*,;=.~_ -]{1,12}";

proptest! {
    // 256 cases (`cargo test`), or `PROPTEST_CASES` (`make fuzz`).
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// Any text: a revision only in canonical decimal; cursors order as
    /// revisions do.
    #[test]
    fn any_text_as_a_cursor(
        text in prop_oneof!["[0-9]{0,22}", "\\PC{0,24}"],
        a in any::<u64>(),
        b in any::<u64>(),
    ) {
        match from_cursor(&Cursor::new(text.clone())) {
            Ok(revision) => prop_assert_eq!(to_cursor(revision).as_str().to_owned(), text.clone()),
            Err(StreamError::InvalidCursor { cursor, .. }) => prop_assert_eq!(cursor, text),
            Err(other) => prop_assert!(false, "{:?}: {}", text, other),
        }
        prop_assert_eq!(compare(&to_cursor(a), &to_cursor(b)).ok(), Some(a.cmp(&b)));
    }

    /// Revisions as a reopened subscription may deliver them (repeats,
    /// jumps ahead): each is yielded once, contiguously from 0; a repeat is
    /// one already yielded; a jump ahead is a gap naming the next revision;
    /// nothing follows the largest revision.
    #[test]
    fn delivered_revisions_are_yielded_contiguously(
        deliveries in proptest::collection::vec(0u64..24, 0..48),
        after_the_end in any::<u64>(),
    ) {
        let mut last: Option<u64> = None;
        let mut yielded: Vec<u64> = Vec::new();
        for revision in deliveries {
            let next = yielded.len() as u64;
            match admit(last, revision) {
                Admission::Next => {
                    prop_assert_eq!(revision, next);
                    last = Some(revision);
                    yielded.push(revision);
                }
                Admission::Repeat => prop_assert!(yielded.contains(&revision)),
                Admission::Gap { expected } => {
                    prop_assert_eq!(expected, next);
                    prop_assert!(revision > next);
                }
                Admission::PastTheEnd => prop_assert!(false, "after {:?}", last),
            }
        }
        prop_assert!(yielded.iter().copied().eq(0..yielded.len() as u64));
        prop_assert_eq!(admit(Some(u64::MAX), after_the_end), Admission::PastTheEnd);
    }

    /// Any payload: stored as JSON only when the JSON text is exactly the
    /// payload, so the bytes read back are the bytes appended.
    #[test]
    fn any_payload_is_kept_byte_for_byte(
        payload in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            "[\\[\\]{}\":,0-9a-z \n\t.eE+-]{0,40}".prop_map(String::into_bytes),
        ]
    ) {
        if let Some(raw) = exact_json(&payload) {
            prop_assert_eq!(raw.get().as_bytes(), payload.as_slice());
            let written = serde_json::to_vec(raw).ok();
            prop_assert_eq!(written.as_deref(), Some(payload.as_slice()));
        }
        let event = format!("{:?}", to_event_data(Bytes::from(payload), "memstate.frame"));
        prop_assert!(event.contains("memstate.frame"));
    }

    /// Any text as a connection string: settings or an error, never a panic.
    #[test]
    fn any_text_as_a_connection_string(text in prop_oneof![
        "\\PC{0,60}",
        "(esdb|kurrentdb|kdb|http)(\\+discover)?://[a-z0-9.:,@%]{0,30}(\\?[a-zA-Z=&%0-9.]{0,30})?",
    ]) {
        let _ = parse(&text);
    }

    /// A connection string with a password: whatever the password holds
    /// (URL delimiters too), no error shows it.
    #[test]
    fn an_error_never_shows_the_password(
        scheme in "(esdb|kurrentdb|bogus)(\\+discover)?",
        password in PASSWORD,
        host in "[a-z]{1,8}(:[0-9a-z]{1,6})?",
        query in "(\\?(tls=(true|false|maybe)|nodePreference=[a-z]{1,8}|connectionName=[a-z%0-9]{0,6}))?",
    ) {
        let secret = format!("Zq{password}");
        let text = format!("{scheme}://admin:{secret}@{host}{query}");
        if let Err(e) = parse(&text) {
            let shown = format!("{e} {e:?}");
            prop_assert!(!shown.contains(&secret), "{:?} shows the password: {}", text, shown);
        }
    }
}
