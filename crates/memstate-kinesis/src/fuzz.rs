//! Property-based fuzzing of what this adapter reads from outside: cursors
//! (from snapshots and callers) and the sequence numbers of the records
//! `GetRecords` returns, in whatever order and repetition a re-acquired
//! iterator or a trimmed shard produces them. Whatever the input, the result
//! is a value or an error, never a panic; the subscription yields records in
//! strictly increasing sequence-number order, never one at or before its
//! position, and a cursor whose record is gone is an error, not a silent
//! jump. A record's payload is handed to the engine unchanged (its decoding
//! is fuzzed in memstate-core).
//!
//! A child of `subscription` (declared there) so that it can drive the
//! subscription's record intake without a network.
//!
//! `cargo test` runs a short pass; `make fuzz` sets `PROPTEST_CASES` to a
//! million inputs per target.

use std::cmp::Ordering;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{HashKeyRange, SequenceNumberRange, Shard};
use memstate_core::cursor::compare_digits;
use memstate_core::{Cursor, StreamError};
use proptest::prelude::*;

use super::{KinesisSubscription, Start};
use crate::config::KinesisConfig;
use crate::cursor::{compare, from_cursor};

/// A subscription that never calls Kinesis (only its intake is driven).
fn subscription(start: Start) -> KinesisSubscription {
    let client = Client::from_conf(
        aws_sdk_kinesis::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::for_tests())
            .build(),
    );
    let shard = Shard::builder()
        .shard_id("shardId-000000000000")
        .hash_key_range(
            HashKeyRange::builder()
                .starting_hash_key("0")
                .ending_hash_key("1")
                .build()
                .ok()
                .unwrap_or_else(|| unreachable!("both keys are set")),
        )
        .sequence_number_range(
            SequenceNumberRange::builder()
                .starting_sequence_number("0")
                .build()
                .ok()
                .unwrap_or_else(|| unreachable!("the start is set")),
        )
        .build()
        .ok()
        .unwrap_or_else(|| unreachable!("id and ranges are set"));
    KinesisSubscription::new(
        client,
        KinesisConfig::new("fuzz"),
        &shard,
        start,
        Duration::from_secs(86_400),
        std::sync::Arc::default(),
        None,
    )
}

/// A Kinesis record with sequence number `sequence` and payload `data`.
fn record(sequence: &str, data: &[u8]) -> aws_sdk_kinesis::types::Record {
    aws_sdk_kinesis::types::Record::builder()
        .sequence_number(sequence)
        .data(Blob::new(data.to_vec()))
        .partition_key("memstate")
        .build()
        .ok()
        .unwrap_or_else(|| unreachable!("all required fields are set"))
}

/// Sequence numbers: short ones (so that repeats and near misses happen),
/// leading zeros, and numbers far wider than `u128`.
fn sequence() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,2}",
        "0{0,3}[1-9][0-9]{0,3}",
        "4965[0-9]{40,60}",
        "[1-9][0-9]{100,128}",
    ]
}

fn batches() -> impl Strategy<Value = Vec<Vec<(String, Vec<u8>)>>> {
    let record = (sequence(), proptest::collection::vec(any::<u8>(), 0..8));
    proptest::collection::vec(proptest::collection::vec(record, 0..6), 0..5)
}

/// What the subscription must yield for `batches` from `start`: the model
/// the intake is checked against.
fn expected(
    start: &Start,
    batches: &[Vec<(String, Vec<u8>)>],
) -> Result<Vec<(String, Vec<u8>)>, ()> {
    let (mut last, mut verify) = match start {
        Start::TrimHorizon => (None, None),
        Start::VerifyAt(cursor) => (None, Some(cursor.clone())),
    };
    let mut out = Vec::new();
    for (sequence, data) in batches.iter().flatten() {
        if let Some(cursor) = &verify {
            match compare_digits(sequence, cursor) {
                Ordering::Less => continue,
                Ordering::Equal => {
                    last = Some(sequence.clone());
                    verify = None;
                    continue;
                }
                Ordering::Greater => return Err(()),
            }
        }
        if last
            .as_deref()
            .is_some_and(|last| compare_digits(sequence, last).is_le())
        {
            continue;
        }
        last = Some(sequence.clone());
        out.push((sequence.clone(), data.clone()));
    }
    Ok(out)
}

proptest! {
    // 256 cases (`cargo test`), or `PROPTEST_CASES` (`make fuzz`).
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// Any text: a sequence number only when it is 1 to 129 ASCII digits.
    #[test]
    fn any_text_as_a_cursor(text in prop_oneof!["[0-9]{0,140}", "\\PC{0,40}"]) {
        let valid = !text.is_empty() && text.len() <= 129 && text.bytes().all(|b| b.is_ascii_digit());
        match from_cursor(&Cursor::new(text.clone())) {
            Ok(digits) => {
                prop_assert!(valid, "{:?} accepted", text);
                prop_assert_eq!(digits, text.as_str());
            }
            Err(StreamError::InvalidCursor { cursor, .. }) => {
                prop_assert!(!valid, "{:?} refused", text);
                prop_assert_eq!(cursor, text);
            }
            Err(other) => prop_assert!(false, "{:?}: {}", text, other),
        }
    }

    /// Cursors order as the numbers they write, at any width: as `u128`
    /// where it fits, antisymmetric, and consistent with sorting.
    #[test]
    fn cursors_order_as_numbers(mut seqs in proptest::collection::vec(sequence(), 2..6)) {
        let c = |s: &String| Cursor::new(s.clone());
        for a in &seqs {
            for b in &seqs {
                let ab = compare(&c(a), &c(b)).ok();
                prop_assert_eq!(ab, compare(&c(b), &c(a)).ok().map(Ordering::reverse));
                if let (Ok(x), Ok(y)) = (a.parse::<u128>(), b.parse::<u128>()) {
                    prop_assert_eq!(ab, Some(x.cmp(&y)));
                }
            }
        }
        seqs.sort_by(|a, b| compare_digits(a, b));
        for pair in seqs.windows(2) {
            prop_assert!(compare(&c(&pair[0]), &c(&pair[1])).ok() != Some(Ordering::Greater));
        }
    }

    /// Batches of records, repeated, out of order or missing the cursor's
    /// record: the subscription yields exactly what the model says, in
    /// strictly increasing order, or reports the trimmed history.
    #[test]
    fn fetched_records_are_yielded_once_in_order(
        verify in proptest::option::of(sequence()),
        batches in batches(),
    ) {
        let start = verify.map_or(Start::TrimHorizon, Start::VerifyAt);
        let want = expected(&start, &batches);
        let mut sub = subscription(start);
        let mut outcome = Ok(());
        for batch in &batches {
            let records = batch.iter().map(|(s, d)| record(s, d)).collect();
            outcome = sub.take_records(records);
            if outcome.is_err() {
                break;
            }
        }
        match (want, outcome) {
            (Ok(want), Ok(())) => {
                let got: Vec<(String, Vec<u8>)> = sub
                    .buffer
                    .iter()
                    .map(|r| (r.cursor.as_str().to_owned(), r.payload.to_vec()))
                    .collect();
                prop_assert_eq!(got, want);
            }
            (Err(()), Err(StreamError::HistoryTruncated { .. })) => {}
            (want, got) => prop_assert!(false, "expected {:?}, got {:?}", want, got),
        }
    }
}
