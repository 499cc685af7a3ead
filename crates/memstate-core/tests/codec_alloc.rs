//! Bounded allocation: no length read from a record makes the frame decoders
//! (JSON and binary, and the command decoder the upcasting path uses) reserve
//! memory beyond what the record's own bytes could hold.
//!
//! A counting allocator adds up the bytes allocated while a record is
//! decoded; they must stay within a small multiple of the record's length. A decoder that trusted a declared length
//! (`Vec::with_capacity(len)` for a string, a byte array or the items of an
//! array) would allocate gigabytes from the crafted records below.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::System;

use memstate_core::envelope::{BINARY_FRAME_MARKER, decode_frame};
use memstate_core::{Body, Codec};
use parking_lot::Mutex;
use proptest::prelude::*;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The counts are global: one measurement at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// And one test at a time, for the whole test: the counts cover every
/// thread, so another test generating inputs (or printing a panic's
/// backtrace) while a record is decoded would be counted against it; a
/// loaded machine, which stretches each measurement, made that happen.
static ONE_TEST_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Decodes `payload` as a frame and every command in it, as a JSON tree and
/// as a list;
/// returns the bytes that took, all allocations added up (growth included).
fn allocated_decoding(payload: &[u8]) -> usize {
    let _one = ONE_AT_A_TIME.lock();
    let region = Region::new(ALLOCATOR);
    if let Ok(envelopes) = decode_frame(payload) {
        for e in &envelopes {
            if let Body::Command(c) = &e.body {
                // The upcasting path, and a command type holding a list
                // (serde reserves room for a list's declared length, up to
                // 1 MiB, before reading its items).
                let _ = c.to_value();
                let _ = c.decode::<Vec<serde_json::Value>>();
            }
        }
    }
    let change = region.change();
    change.bytes_allocated + change.bytes_reallocated.max(0) as usize
}

/// What a decoder may take for a record of `len` bytes: a multiple of it
/// (decoded envelopes and trees are larger than their encoding, and error
/// messages take some), never more.
fn bound(len: usize) -> usize {
    64 * len + 4096
}

fn binary(body: &[u8]) -> Vec<u8> {
    let mut frame = vec![BINARY_FRAME_MARKER, 1, 1];
    frame.extend_from_slice(body);
    frame
}

/// One binary envelope up to its command, then `command` as its bytes.
fn binary_command(command: &[u8]) -> Vec<u8> {
    let mut body = vec![7u8; 16];
    body.extend_from_slice(&[1, b'n', 1, 0, 1, 1, 0]);
    body.push(command.len() as u8);
    body.extend_from_slice(command);
    binary(&body)
}

#[test]
fn crafted_lengths_do_not_allocate_beyond_the_record() {
    let _alone = ONE_TEST_AT_A_TIME.lock();
    assert_eq!(Codec::MsgPack.to_string(), "msgpack");
    let crafted = [
        // An origin whose declared length is 2^63.
        binary(&[
            [7u8; 16].as_slice(),
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
        ]
        .concat()),
        // A command declaring 2^40 bytes.
        binary(&[[7u8; 16].as_slice(), &[1, b'n', 1, 0, 1, 1, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20]].concat()),
        // MessagePack commands: an array of 4 billion items, a string of
        // 4 GiB, a map of 65,535 pairs, nested arrays of 65,535 items.
        binary_command(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]),
        binary_command(&[0xdb, 0xff, 0xff, 0xff, 0xff, b'a']),
        binary_command(&[0xde, 0xff, 0xff, 0x01, 0x02]),
        binary_command(&[0x91, 0xdc, 0xff, 0xff, 0x91, 0xdc, 0xff, 0xff]),
        // JSON declares no lengths, but a large count of small items.
        br#"{"v":1,"envelopes":[{"id":"6f1c1d2e-8a7b-4c3d-9e0f-112233445566","origin":"n","ts":1,"body":{"command":[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}}]}"#.to_vec(),
    ];
    for payload in crafted {
        let allocated = allocated_decoding(&payload);
        assert!(
            allocated <= bound(payload.len()),
            "{allocated} bytes allocated decoding {} bytes: {payload:02x?}",
            payload.len()
        );
    }
    // The measurement itself works: a valid command's tree is allocated.
    let valid = binary_command(&[0x92, 0x01, 0xa1, b'x']);
    assert!(decode_frame(&valid).is_ok(), "{:?}", decode_frame(&valid));
    assert!(allocated_decoding(&valid) > 0);
}

#[test]
fn arbitrary_records_do_not_allocate_beyond_a_multiple_of_their_length() {
    let _alone = ONE_TEST_AT_A_TIME.lock();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(512),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let records = (
        0..2u8,
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..512),
    );
    let outcome = runner.run(&records, |(codec_id, binary_frame, bytes)| {
        let payload = if binary_frame {
            let mut frame = vec![BINARY_FRAME_MARKER, codec_id, 1];
            frame.extend_from_slice(&bytes);
            frame
        } else {
            bytes
        };
        let allocated = allocated_decoding(&payload);
        prop_assert!(
            allocated <= bound(payload.len()),
            "{} for {} bytes",
            allocated,
            payload.len()
        );
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}
