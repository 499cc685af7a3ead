//! Property-based fuzzing of what the core decodes from outside: frames and
//! envelopes read from a stream (JSON and binary), and snapshot files. Whatever the bytes, the
//! decoders return a value or an error, never panic, and allocate no more
//! than the input's size.
//!
//! `cargo test` runs a short pass; `make fuzz` sets `PROPTEST_CASES` to a
//! million inputs per target.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use memstate_core::envelope::{
    BINARY_FRAME_MARKER, decode_frame, decode_frame_with_codec, encode_envelope,
    encode_envelope_as, encode_frame, encode_frame_as,
};
use memstate_core::snapshot::StoredSnapshot;
use memstate_core::{
    Body, Codec, CommandId, CommandJson, Control, Envelope, FileSnapshotStore, NodeId, Settings,
    SnapshotStore,
};
use proptest::prelude::*;

/// Cases per target: `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn envelope() -> impl Strategy<Value = Envelope> {
    let body = prop_oneof![
        any::<u64>()
            .prop_map(|v| Body::Command(CommandJson::from(&serde_json::json!({ "set": v })))),
        ".{0,40}".prop_map(|s| Body::Command(CommandJson::from(&serde_json::json!(s)))),
        Just(Body::Control(Control::Genesis(Settings::default()))),
        any::<u64>().prop_map(|epoch| Body::Control(Control::AssumeLeadership { epoch })),
        any::<u64>().prop_map(|epoch| Body::Control(Control::Heartbeat { epoch })),
        Just(Body::Control(Control::Sync)),
        any::<u32>().prop_map(|version| Body::Control(Control::Activate { version })),
        "[a-z0-9-]{0,12}".prop_map(|n| Body::Control(Control::Depart {
            node: NodeId::new(n)
        })),
        Just(Body::Control(Control::Genesis(
            Settings::default().with_codec(Codec::MsgPack)
        ))),
        (
            any::<i64>(),
            any::<f64>(),
            proptest::collection::vec(any::<u8>(), 0..8)
        )
            .prop_map(|(i, f, b)| Body::Command(CommandJson::from(
                &serde_json::json!({"n": i, "x": f, "b": b, "u": null})
            ))),
    ];
    (
        any::<u128>(),
        "[a-z0-9-]{1,12}",
        any::<u64>(),
        proptest::option::of(any::<u64>()),
        body,
    )
        .prop_map(|(id, origin, ts, epoch, body)| Envelope {
            id: CommandId(uuid::Uuid::from_u128(id)),
            origin: NodeId::new(origin),
            ts,
            epoch,
            model_version: 1 + (ts % 3) as u32,
            reads: 1 + (id % 3) as u32,
            body,
        })
}

fn frame_of(envelopes: &[Envelope]) -> Vec<u8> {
    let encoded: Vec<Vec<u8>> = envelopes
        .iter()
        .map(|e| encode_envelope(e).unwrap())
        .collect();
    encode_frame(encoded.iter().map(Vec::as_slice))
}

/// The envelopes as a frame of `codec` decodes them: commands in `codec`.
fn in_codec(envelopes: &[Envelope], codec: Codec) -> Vec<Envelope> {
    envelopes
        .iter()
        .cloned()
        .map(|mut e| {
            if let Body::Command(c) = &e.body {
                e.body = Body::Command(c.to_codec(codec).unwrap());
            }
            e
        })
        .collect()
}

fn frame_as(codec: Codec, envelopes: &[Envelope]) -> Vec<u8> {
    let encoded: Vec<Vec<u8>> = envelopes
        .iter()
        .map(|e| encode_envelope_as(codec, e).unwrap())
        .collect();
    encode_frame_as(codec, encoded.iter().map(Vec::as_slice))
}

/// Whatever a binary frame decodes to re-encodes to the same envelopes.
fn binary_round_trip(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok((codec, decoded)) = decode_frame_with_codec(bytes) {
        let again = decode_frame_with_codec(&frame_as(codec, &decoded)).unwrap();
        prop_assert_eq!(again, (codec, decoded));
    }
    Ok(())
}

/// A change to a valid input: flip a byte, cut it, or splice bytes in.
#[derive(Clone, Debug)]
enum Damage {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Vec<Damage>> {
    proptest::collection::vec(
        prop_oneof![
            (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Damage::Flip(i, x)),
            any::<usize>().prop_map(Damage::Cut),
            (
                any::<usize>(),
                proptest::collection::vec(any::<u8>(), 1..16)
            )
                .prop_map(|(i, b)| Damage::Insert(i, b)),
        ],
        1..4,
    )
}

fn apply(bytes: &mut Vec<u8>, damage: &[Damage]) {
    for d in damage {
        if bytes.is_empty() {
            return;
        }
        match d {
            Damage::Flip(i, x) => {
                let i = i % bytes.len();
                bytes[i] ^= x;
            }
            Damage::Cut(i) => bytes.truncate(i % bytes.len()),
            Damage::Insert(i, b) => {
                let i = i % (bytes.len() + 1);
                bytes.splice(i..i, b.iter().copied());
            }
        }
    }
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn frames_decode_what_was_encoded(envelopes in proptest::collection::vec(envelope(), 1..5)) {
        let frame = frame_of(&envelopes);
        prop_assert_eq!(decode_frame(&frame).unwrap(), envelopes);
    }

    #[test]
    fn frames_of_every_codec_decode_what_was_encoded(envelopes in proptest::collection::vec(envelope(), 1..5)) {
        for codec in Codec::ALL {
            let frame = frame_as(codec, &envelopes);
            prop_assert_eq!(frame[0] == BINARY_FRAME_MARKER, !codec.is_json());
            let decoded = decode_frame_with_codec(&frame).unwrap();
            prop_assert_eq!(decoded, (codec, in_codec(&envelopes, codec)));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_binary_frame_decoder(
        codec_id in 0..3u8,
        version in 0..3u8,
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut frame = vec![BINARY_FRAME_MARKER, codec_id, version];
        frame.extend_from_slice(&bytes);
        binary_round_trip(&frame)?;
    }

    #[test]
    fn damaged_binary_frames_never_panic_the_decoder(
        envelopes in proptest::collection::vec(envelope(), 1..4),
        damage in damage(),
    ) {
        let mut frame = frame_as(Codec::MsgPack, &envelopes);
        apply(&mut frame, &damage);
        binary_round_trip(&frame)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_frame_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(decoded) = decode_frame(&bytes) {
            // Whatever decodes re-encodes to something that decodes the same.
            prop_assert_eq!(decode_frame(&frame_of(&decoded)).unwrap(), decoded);
        }
    }

    #[test]
    fn damaged_frames_never_panic_the_decoder(
        envelopes in proptest::collection::vec(envelope(), 1..4),
        damage in damage(),
    ) {
        let mut frame = frame_of(&envelopes);
        apply(&mut frame, &damage);
        if let Ok(decoded) = decode_frame(&frame) {
            prop_assert_eq!(decode_frame(&frame_of(&decoded)).unwrap(), decoded);
        }
    }
}

/// A model to snapshot.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Count(u64);

impl memstate_core::Model for Count {
    type Command = u64;
    type Output = ();
    type Error = String;
    fn apply(&mut self, n: u64, _: &mut memstate_core::CommandContext<'_>) -> Result<(), String> {
        self.0 += n;
        Ok(())
    }
}

/// The bytes of one valid snapshot file, taken once by an engine.
fn valid_snapshot_bytes() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let e = memstate_core::EngineBuilder::new(
                Count::default(),
                memstate_core::MemoryStream::new(),
            )
            .snapshots(
                FileSnapshotStore::new(dir.path()),
                memstate_core::SnapshotPolicy::on_demand(),
            )
            .start()
            .await
            .unwrap();
            e.execute(5).await.unwrap();
            e.snapshot().await.unwrap();
            e.shutdown().await;
            let stored = FileSnapshotStore::new(dir.path())
                .list()
                .await
                .unwrap()
                .remove(0);
            std::fs::read(&stored.location).unwrap()
        })
    })
}

/// A store holding `bytes` as its only snapshot.
fn store_with(dir: &std::path::Path, bytes: &[u8]) -> StoredSnapshot {
    let path = dir.join("snapshot-00000000000000000007.snap");
    std::fs::write(&path, bytes).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(FileSnapshotStore::new(dir).list())
        .unwrap()
        .remove(0)
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn the_snapshot_reader_refuses_damage_without_panicking(damage in damage()) {
        let dir = tempfile::tempdir().unwrap();
        let original = valid_snapshot_bytes();
        let mut bytes = original.to_vec();
        apply(&mut bytes, &damage);
        let stored = store_with(dir.path(), &bytes);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let store = FileSnapshotStore::new(dir.path());
        let loaded = rt.block_on(store.load(&stored));
        if let Ok(body) = loaded {
            // Only a header-preserving change can load, and then the body
            // checked by the checksum is the original one.
            let newline = original.iter().position(|b| *b == b'\n').unwrap();
            prop_assert_eq!(&body[..], &original[newline + 1..]);
        }
    }

    #[test]
    fn arbitrary_snapshot_files_never_panic_the_reader(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let dir = tempfile::tempdir().unwrap();
        let stored = store_with(dir.path(), &bytes);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let _ = rt.block_on(FileSnapshotStore::new(dir.path()).load(&stored));
    }
}
