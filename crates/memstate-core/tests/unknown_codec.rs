//! A Genesis record naming a command codec this build does not know was
//! written by a newer build. The node halts there with a message that names
//! the codec and asks for an upgrade, whatever the bad-record policy says:
//! nothing is skipped, nothing after it is applied, the stream is left as it
//! was (a record not parsed is not a record lost). A snapshot whose settings
//! name such a codec is refused the same way, not passed over as corrupt.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use memstate_core::envelope::{FrameError, decode_frame_with_codec};
use memstate_core::{
    BadRecordPolicy, Codec, Consistency, Cursor, EngineBuilder, Error, FileSnapshotStore,
    HaltReason, MemoryStream, Settings, SkipEntry, SnapshotError, SnapshotPolicy, SnapshotStore,
    Status, Stream,
};
use support::{Counters, eventually};

/// A JSON frame holding one Genesis record of `settings`, with its
/// `command_codec` replaced by `codec` (as a newer build would write it).
fn newer_genesis(settings: &Settings, codec: serde_json::Value) -> Bytes {
    let mut settings = serde_json::to_value(settings).unwrap();
    settings["format_version"] = 3.into();
    settings["command_codec"] = codec;
    let frame = serde_json::json!({"v": 1, "envelopes": [{
        "id": "5f0c3c1e-8e7a-4d52-9b1e-2a1d7c9e0f11",
        "origin": "newer-build",
        "ts": 1,
        "body": {"control": {"genesis": settings}},
    }]});
    Bytes::from(serde_json::to_vec(&frame).unwrap())
}

fn settings(policy: BadRecordPolicy) -> Settings {
    let mut s = Settings::default();
    s.bad_records = policy;
    s
}

fn node(stream: &MemoryStream, id: &str, policy: BadRecordPolicy) -> EngineBuilder<Counters> {
    EngineBuilder::new(Counters::default(), stream.clone())
        .node_id(id)
        .settings(settings(policy))
        .startup_timeout(Duration::from_secs(30))
        .execute_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(30))
}

async fn append(stream: &MemoryStream, payload: Bytes) -> Cursor {
    stream.append(vec![payload]).await.unwrap().pop().unwrap()
}

#[test]
fn the_frame_decoder_names_the_unknown_codec() {
    for (named, shown) in [
        (serde_json::json!("cbor"), "cbor"),
        (serde_json::json!("JSON"), "JSON"),
        (serde_json::json!({"zstd": 3}), r#"{"zstd":3}"#),
    ] {
        let frame = newer_genesis(&Settings::default(), named);
        assert_eq!(
            decode_frame_with_codec(&frame).unwrap_err(),
            FrameError::UnknownCodec {
                codec: shown.into()
            }
        );
    }
    // A frame that is malformed for another reason is still not a frame.
    let broken =
        br#"{"v":1,"envelopes":[{"body":{"control":{"genesis":{"command_codec":"json"}}}}]}"#;
    assert!(
        matches!(
            decode_frame_with_codec(broken),
            Err(FrameError::NotAFrame(_))
        ),
        "{:?}",
        decode_frame_with_codec(broken)
    );
}

#[tokio::test]
async fn a_stream_a_newer_build_created_with_its_codec_is_refused_by_name_under_either_policy() {
    for policy in [BadRecordPolicy::Skip, BadRecordPolicy::Halt] {
        let stream = MemoryStream::new();
        let genesis = append(
            &stream,
            newer_genesis(&settings(policy), serde_json::json!("cbor")),
        )
        .await;
        // What the newer build wrote after its Genesis record: bytes this
        // build cannot read either.
        append(&stream, Bytes::from_static(&[0xC1, 9, 1, 0, 0])).await;
        let written = stream.payloads();

        let refused = node(&stream, "old", policy).start().await;
        let reason = match refused {
            Err(Error::Halted(reason)) => reason,
            other => panic!("{policy:?}: expected a halt, got {other:?}"),
        };
        let HaltReason::UnknownCodec {
            cursor,
            codec,
            skip,
            ..
        } = &reason
        else {
            panic!("{policy:?}: expected an unknown codec, got {reason}");
        };
        assert_eq!((cursor, codec.as_str()), (&genesis, "cbor"));
        assert_eq!(*skip, None, "nothing gets past a stream's own Genesis");
        assert_eq!(reason.skip(), None);
        let message = reason.to_string();
        for part in [
            "\"cbor\"",
            "a newer build of memstate wrote this stream",
            "upgrade this node",
            "\"json\", \"msgpack\"",
        ] {
            assert!(message.contains(part), "{part:?} not in: {message}");
        }
        assert!(!message.contains("history"), "{message}");
        // Nothing the newer build wrote was touched.
        assert_eq!(stream.payloads()[..written.len()], written[..]);
    }
}

#[tokio::test]
async fn a_newer_builds_restatement_halts_a_running_stream_before_it_until_skipped() {
    // A stream of this build; a newer build's node restates the settings with
    // its own codec, and commands follow. The default policy skips bytes that
    // are not frames, but this record is a frame of a newer build: a halt.
    let stream = MemoryStream::new();
    let policy = BadRecordPolicy::Skip;
    let a = node(&stream, "a", policy).start().await.unwrap();
    a.execute("before".to_owned()).await.unwrap();
    let restated = append(
        &stream,
        newer_genesis(&settings(policy), serde_json::json!("cbor")),
    )
    .await;
    eventually(Duration::from_secs(30), "a halts", || {
        matches!(a.stats().status, Status::Halted(_))
    })
    .await;
    let Status::Halted(reason) = a.stats().status else {
        unreachable!()
    };
    let HaltReason::UnknownCodec { cursor, skip, .. } = &reason else {
        panic!("expected an unknown codec, got {reason}");
    };
    assert_eq!(*cursor, restated);
    let skip = skip.clone().expect("a restatement can be passed over");
    assert_eq!(reason.skip(), Some(SkipEntry::Record(skip.clone())));
    assert!(
        reason
            .to_string()
            .contains(&format!("skip_records [\"{skip}\"]")),
        "{reason}"
    );
    assert_eq!(a.stats().bad_records_skipped, 0, "nothing was skipped");
    a.shutdown().await;

    // A new node of this build halts at the same record, with "before" applied.
    let refused = node(&stream, "c", policy).start().await;
    assert!(
        matches!(refused, Err(Error::Halted(HaltReason::UnknownCodec { .. }))),
        "{refused:?}"
    );

    // The operator's entry gets past it; what follows is applied.
    let c = node(&stream, "c", policy)
        .skip_records([skip])
        .start()
        .await
        .unwrap();
    c.execute("after".to_owned()).await.unwrap();
    let model = c
        .query(Consistency::Linearizable, Counters::clone)
        .await
        .unwrap();
    assert_eq!(
        model.0.into_iter().collect::<Vec<_>>(),
        [("after".to_owned(), 1), ("before".to_owned(), 1)]
    );
    c.shutdown().await;
}

#[tokio::test]
async fn a_snapshot_of_a_stream_of_an_unknown_codec_is_refused_not_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = || FileSnapshotStore::new(dir.path());
    let stream = MemoryStream::new();
    let msgpack = Settings::default().with_codec(Codec::MsgPack);
    let node = |id: &str| {
        EngineBuilder::new(Counters::default(), stream.clone())
            .node_id(id)
            .settings(msgpack.clone())
            .snapshots(store(), SnapshotPolicy::on_demand())
            .startup_timeout(Duration::from_secs(30))
            .execute_timeout(Duration::from_secs(30))
    };
    let a = node("a").start().await.unwrap();
    a.execute("x".to_owned()).await.unwrap();
    a.snapshot().await.unwrap();
    a.shutdown().await;

    // The snapshot as a newer build of the same stream would have written
    // it, its settings naming that build's codec.
    let stored = store().list().await.unwrap().remove(0);
    let body = String::from_utf8(store().load(&stored).await.unwrap()).unwrap();
    let recorded = r#""command_codec":"msgpack""#;
    assert!(body.contains(recorded), "{body}");
    let body = body.replace(recorded, r#""command_codec":"cbor""#);
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    let meta = serde_json::from_value(value["meta"].clone()).unwrap();
    store().save(&meta, body.into_bytes()).await.unwrap();

    // The log alone would rebuild the state, but the snapshot is not passed
    // over as if it were corrupt: the node refuses it, by the codec's name.
    let refused = node("b").start().await;
    match refused {
        Err(Error::Snapshot(SnapshotError::UnknownCodec {
            ref location,
            ref codec,
            ..
        })) => {
            assert_eq!((location, codec.as_str()), (&stored.location, "cbor"));
            let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                message.contains("a newer build took it") && message.contains("Upgrade"),
                "{message}"
            );
        }
        Err(other) => panic!("expected an unknown codec, got {other}"),
        Ok(engine) => panic!("the node started: {:?}", engine.stats().snapshots),
    }
}
