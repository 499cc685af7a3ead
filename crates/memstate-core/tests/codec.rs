//! The command codec is replicated configuration: a stream is created with
//! one (recorded in its Genesis record, which is JSON in every stream) and
//! never mixes them. A node configured with another codec refuses the
//! stream; a frame of another codec is a bad record; a journal written
//! before codecs existed opens and replays as it always did.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod versioned;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use memstate_core::envelope::{
    BINARY_FRAME_MARKER, decode_frame_with_codec, encode_envelope_as, encode_frame_as,
};
use memstate_core::{
    BadRecordPolicy, Body, Codec, CommandContext, CommandId, Consistency, EncodedCommand, Engine,
    EngineBuilder, Envelope, Error, HaltReason, MemoryStream, Model, NodeId, Settings, Status,
    Stream, WriteMode,
};
use serde::{Deserialize, Serialize};

/// Balances by account.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Ledger(BTreeMap<String, i64>);

#[derive(Debug, Serialize, Deserialize)]
enum Cmd {
    Deposit {
        account: String,
        amount: i64,
    },
    Transfer {
        from: String,
        to: String,
        amount: i64,
    },
}

impl Model for Ledger {
    type Command = Cmd;
    type Output = i64;
    type Error = String;
    fn apply(&mut self, cmd: Cmd, _ctx: &mut CommandContext<'_>) -> Result<i64, String> {
        match cmd {
            Cmd::Deposit { account, amount } => {
                let b = self.0.entry(account).or_default();
                *b += amount;
                Ok(*b)
            }
            Cmd::Transfer { from, to, amount } => {
                let have = self.0.get(&from).copied().unwrap_or(0);
                if have < amount {
                    return Err(format!("{from} has {have}"));
                }
                *self.0.entry(from).or_default() -= amount;
                let b = self.0.entry(to).or_default();
                *b += amount;
                Ok(*b)
            }
        }
    }
}

fn deposit(account: &str, amount: i64) -> Cmd {
    Cmd::Deposit {
        account: account.into(),
        amount,
    }
}

async fn start(
    stream: &MemoryStream,
    id: &str,
    settings: Settings,
) -> Result<Engine<Ledger>, Error> {
    EngineBuilder::new(Ledger::default(), stream.clone())
        .node_id(id)
        .settings(settings)
        .startup_timeout(Duration::from_secs(30))
        .execute_timeout(Duration::from_secs(30))
        .start()
        .await
}

async fn state(engine: &Engine<Ledger>) -> Ledger {
    engine
        .query(Consistency::Local, Ledger::clone)
        .await
        .unwrap()
}

fn halt_reason(result: Result<Engine<Ledger>, Error>) -> HaltReason {
    match result {
        Err(Error::Halted(reason)) => reason,
        Err(other) => panic!("expected a halt, got {other}"),
        Ok(engine) => panic!("expected a halt, the engine started: {:?}", engine.status()),
    }
}

/// One envelope of `body` from `origin`, straight into a frame of `codec`.
async fn append_in(stream: &MemoryStream, codec: Codec, body: Body) {
    let envelope = Envelope {
        id: CommandId::random(),
        origin: NodeId::new("tool"),
        ts: 1,
        epoch: None,
        model_version: 1,
        reads: 1,
        body,
    };
    let encoded = encode_envelope_as(codec, &envelope).unwrap();
    let frame = encode_frame_as(codec, [encoded.as_slice()]);
    stream.append(vec![Bytes::from(frame)]).await.unwrap();
}

fn command(codec: Codec, cmd: &Cmd) -> Body {
    Body::Command(EncodedCommand::encode_as(codec, cmd).unwrap())
}

#[tokio::test]
async fn a_msgpack_stream_keeps_its_genesis_json_and_its_commands_binary_and_replays() {
    let stream = MemoryStream::new();
    let settings = Settings::default().with_codec(Codec::MsgPack);
    let a = start(&stream, "a", settings.clone()).await.unwrap();
    for i in 0..20 {
        a.execute(deposit(&format!("acc{}", i % 3), i))
            .await
            .unwrap();
    }
    a.execute(Cmd::Transfer {
        from: "acc0".into(),
        to: "acc1".into(),
        amount: 5,
    })
    .await
    .unwrap();
    let written = state(&a).await;
    a.shutdown().await;

    let payloads = stream.payloads();
    let first = std::str::from_utf8(&payloads[0]).expect("the Genesis record is JSON text");
    assert!(
        first.contains(r#""command_codec":"msgpack""#) && first.contains(r#""format_version":2"#),
        "{first}"
    );
    let mut binary_commands = 0;
    for payload in &payloads {
        let (codec, envelopes) = decode_frame_with_codec(payload).unwrap();
        assert_eq!(payload[0] == BINARY_FRAME_MARKER, codec == Codec::MsgPack);
        for e in envelopes {
            match e.body {
                Body::Command(c) => {
                    assert_eq!((codec, c.codec()), (Codec::MsgPack, Codec::MsgPack));
                    binary_commands += 1;
                }
                Body::Control(memstate_core::Control::Genesis(_)) => {
                    assert_eq!(codec, Codec::Json, "a Genesis record is always JSON")
                }
                Body::Control(_) => assert_eq!(codec, Codec::MsgPack),
            }
        }
    }
    assert_eq!(binary_commands, 21);

    let b = start(&stream, "b", settings).await.unwrap();
    assert_eq!(state(&b).await, written);
    assert_eq!(written.0["acc1"], 5 + 1 + 4 + 7 + 10 + 13 + 16 + 19);
    b.shutdown().await;
}

#[tokio::test]
async fn a_node_configured_with_another_codec_refuses_the_stream_naming_both() {
    for (created, configured) in [(Codec::MsgPack, Codec::Json), (Codec::Json, Codec::MsgPack)] {
        let stream = MemoryStream::new();
        let a = start(&stream, "a", Settings::default().with_codec(created))
            .await
            .unwrap();
        a.execute(deposit("x", 1)).await.unwrap();
        a.shutdown().await;
        let reason =
            halt_reason(start(&stream, "b", Settings::default().with_codec(configured)).await);
        let HaltReason::SettingsMismatch { differences } = &reason else {
            panic!("expected a settings mismatch, got {reason}");
        };
        let expected = format!("command_codec: {configured} vs {created}");
        assert!(
            differences.iter().any(|d| d.starts_with(&expected)),
            "{differences:?}"
        );
        assert!(reason.to_string().contains(&expected), "{reason}");
        // A build from before codecs sees only the format version (it ignores
        // the codec field it does not know): that alone makes it refuse.
        let versions = format!(
            "format_version: {} vs {}",
            configured.format_version(),
            created.format_version()
        );
        assert!(differences.contains(&versions), "{differences:?}");
    }
}

#[tokio::test]
async fn a_frame_of_another_codec_is_a_bad_record_under_the_stream_policy() {
    for (stream_codec, other) in [(Codec::Json, Codec::MsgPack), (Codec::MsgPack, Codec::Json)] {
        // Skip: every node passes over it alike, and applies what follows.
        let stream = MemoryStream::new();
        let settings = Settings::default().with_codec(stream_codec);
        let a = start(&stream, "a", settings.clone()).await.unwrap();
        a.execute(deposit("x", 1)).await.unwrap();
        append_in(&stream, other, command(other, &deposit("x", 100))).await;
        a.execute(deposit("x", 2)).await.unwrap();
        let b = start(&stream, "b", settings.clone()).await.unwrap();
        for engine in [&a, &b] {
            assert_eq!(state(engine).await.0["x"], 3, "{stream_codec} stream");
            assert_eq!(engine.stats().bad_records_skipped, 1);
        }
        a.shutdown().await;
        b.shutdown().await;

        // Halt: the error names both codecs.
        let stream = MemoryStream::new();
        let mut settings = Settings::default().with_codec(stream_codec);
        settings.bad_records = BadRecordPolicy::Halt;
        let a = start(&stream, "a", settings.clone()).await.unwrap();
        a.shutdown().await;
        append_in(&stream, other, command(other, &deposit("x", 100))).await;
        let reason = halt_reason(start(&stream, "b", settings).await);
        let HaltReason::BadRecord { reason: why, .. } = &reason else {
            panic!("expected a bad record, got {reason}");
        };
        assert!(
            why.contains(&format!(
                "a {other} frame in a stream whose codec is {stream_codec}"
            )),
            "{why}"
        );
    }
}

#[tokio::test]
async fn genesis_records_are_json_in_a_binary_stream_and_a_binary_one_first_is_not_a_history() {
    // A node's start record (a Genesis restatement) is JSON in a msgpack
    // stream and is not a bad record there.
    let stream = MemoryStream::new();
    let mut settings = Settings::default().with_codec(Codec::MsgPack);
    settings.bad_records = BadRecordPolicy::Halt;
    let a = start(&stream, "a", settings.clone()).await.unwrap();
    a.shutdown().await;
    let b = start(&stream, "b", settings.clone()).await.unwrap();
    assert_eq!(b.stats().bad_records_skipped, 0);
    assert_eq!(b.status(), Status::Running);
    b.shutdown().await;

    // A stream whose first record is binary does not start with its Genesis.
    let stream = MemoryStream::new();
    append_in(
        &stream,
        Codec::MsgPack,
        Body::Control(memstate_core::Control::Genesis(settings.clone())),
    )
    .await;
    let reason = halt_reason(start(&stream, "c", settings).await);
    assert!(
        matches!(reason, HaltReason::HistoryMissing { .. }),
        "{reason}"
    );
}

#[tokio::test]
async fn leadership_and_fencing_travel_in_binary_frames() {
    let stream = MemoryStream::new();
    let mut settings = Settings::default().with_codec(Codec::MsgPack);
    settings.write_mode = WriteMode::SingleLeader;
    let a = start(&stream, "a", settings.clone()).await.unwrap();
    let epoch = a.claim_leadership().await.unwrap();
    a.execute(deposit("x", 7)).await.unwrap();
    let b = start(&stream, "b", settings.clone()).await.unwrap();
    assert!(
        b.execute(deposit("x", 1)).await.is_err(),
        "b is not the leader"
    );
    assert_eq!(b.claim_leadership().await.unwrap(), epoch + 1);
    b.execute(deposit("x", 1)).await.unwrap();
    // a's epoch is over: its command is fenced on every node.
    assert!(a.execute(deposit("x", 1000)).await.is_err());
    let c = start(&stream, "c", settings).await.unwrap();
    let leader = c.stats().leadership;
    assert_eq!(
        (leader.epoch, leader.leader),
        (epoch + 1, Some(NodeId::new("b")))
    );
    assert_eq!(state(&c).await.0["x"], 8);
    for e in [a, b, c] {
        e.shutdown().await;
    }
}

/// The records of a stream written by the build before codecs existed,
/// byte for byte: a Genesis record, a node's start record, two frames of
/// commands (one of two), the JSON every build has written.
const BEFORE_CODECS: [&str; 4] = [
    r#"{"v":1,"envelopes":[{"id":"0b7e8e52-3c5a-4b7e-9c1d-2f1e3d4c5b6a","origin":"old-a","ts":1700000000000,"body":{"control":{"genesis":{"format_version":1,"dedup":{"max_age_ms":600000,"max_entries":1000000,"max_bytes":100663296},"bad_records":"skip","write_mode":"multi_writer","apply_mode":"direct"}}}}]}"#,
    r#"{"v":1,"envelopes":[{"id":"1b7e8e52-3c5a-4b7e-9c1d-2f1e3d4c5b6a","origin":"old-a","ts":1700000000001,"body":{"command":{"Deposit":{"account":"x","amount":5}}}},{"id":"2b7e8e52-3c5a-4b7e-9c1d-2f1e3d4c5b6a","origin":"old-a","ts":1700000000001,"body":{"command":{"Deposit":{"account":"y","amount":3}}}}]}"#,
    r#"{"v":1,"envelopes":[{"id":"3b7e8e52-3c5a-4b7e-9c1d-2f1e3d4c5b6a","origin":"old-b","ts":1700000000002,"body":{"control":{"genesis":{"format_version":1,"dedup":{"max_age_ms":600000,"max_entries":1000000,"max_bytes":100663296},"bad_records":"skip","write_mode":"multi_writer","apply_mode":"direct"}}}}]}"#,
    r#"{"v":1,"envelopes":[{"id":"4b7e8e52-3c5a-4b7e-9c1d-2f1e3d4c5b6a","origin":"old-b","ts":1700000000003,"body":{"command":{"Transfer":{"from":"x","to":"y","amount":2}}}}]}"#,
];

#[tokio::test]
async fn a_journal_written_before_codecs_opens_and_replays_and_keeps_its_format() {
    let stream = MemoryStream::new();
    for record in BEFORE_CODECS {
        stream
            .append(vec![Bytes::from_static(record.as_bytes())])
            .await
            .unwrap();
    }
    let engine = start(&stream, "new", Settings::default()).await.unwrap();
    let replayed = state(&engine).await;
    assert_eq!((replayed.0["x"], replayed.0["y"]), (3, 5));
    assert_eq!(engine.stats().bad_records_skipped, 0);
    engine.execute(deposit("z", 1)).await.unwrap();
    engine.shutdown().await;
    // What this build writes into that stream is the same JSON: its start
    // record is byte for byte the old Genesis but for id, origin and time.
    let payloads = stream.payloads();
    let start_record = std::str::from_utf8(&payloads[BEFORE_CODECS.len()]).unwrap();
    let settings_text = &BEFORE_CODECS[0][BEFORE_CODECS[0].find(r#"{"genesis""#).unwrap()..];
    assert!(
        start_record.starts_with(r#"{"v":1,"envelopes":[{"id":""#),
        "{start_record}"
    );
    assert!(start_record.ends_with(settings_text), "{start_record}");
    // (A clean shutdown writes a departure after it.)
    let last = payloads
        .iter()
        .rev()
        .map(|p| std::str::from_utf8(p).unwrap())
        .find(|p| p.contains(r#""command""#))
        .unwrap();
    assert!(
        last.starts_with(r#"{"v":1,"#)
            && last.contains(r#""body":{"command":{"Deposit":{"account":"z","amount":1}}}"#),
        "{last}"
    );
}

#[tokio::test]
async fn msgpack_commands_written_at_an_older_version_are_upcast() {
    use versioned::{v2, v3};
    let stream = MemoryStream::new();
    let settings = Settings::default().with_codec(Codec::MsgPack);
    let old = EngineBuilder::new(v2::Calc::default(), stream.clone())
        .node_id("v2")
        .codec(Codec::MsgPack)
        .start()
        .await
        .unwrap();
    old.activate_version(2).await.unwrap();
    old.execute(v2::Cmd::Add(5)).await.unwrap();
    old.execute(v2::Cmd::Double).await.unwrap();
    old.execute(v2::Cmd::Add(-1)).await.unwrap();
    old.shutdown().await;
    // v3 reads `{"Add": n}` written at version 2 as `{"Add": {"amount": n}}`,
    // through a JSON tree decoded from MessagePack.
    let new = EngineBuilder::new(v3::Calc::default(), stream.clone())
        .node_id("v3")
        .settings(settings)
        .start()
        .await
        .unwrap();
    assert_eq!(new.query(Consistency::Local, |c| c.value).await.unwrap(), 9);
    // And a v3 build writes at the active version 2, downcast, in MessagePack.
    new.execute(v3::Cmd::Add { amount: 1 }).await.unwrap();
    assert_eq!(
        new.query(Consistency::Local, |c| c.value).await.unwrap(),
        10
    );
    new.shutdown().await;
    // (A clean shutdown writes a departure after it.)
    let (codec, envelopes) = stream
        .payloads()
        .iter()
        .rev()
        .map(|p| decode_frame_with_codec(p).unwrap())
        .find(|(_, e)| matches!(e[0].body, Body::Command(_)))
        .unwrap();
    let Body::Command(c) = &envelopes[0].body else {
        panic!("a command: {envelopes:?}")
    };
    assert_eq!((codec, envelopes[0].model_version), (Codec::MsgPack, 2));
    assert_eq!(c.to_value().unwrap(), serde_json::json!({"Add": 1}));
}
