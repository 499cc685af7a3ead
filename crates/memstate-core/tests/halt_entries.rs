//! Every halt that a skip can get past prints the exact entry that gets past
//! it: `skip_commands ["ID"]` or `skip_records ["CURSOR#CRC"]`. Each test
//! here reads the entry from the halt message's text alone, as an operator
//! copies it, configures it on a fresh node and checks that the node gets
//! past exactly what halted it; the same entry with one character changed
//! gets nowhere (the node halts where it did).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod versioned;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use memstate_core::envelope::{encode_envelope, encode_frame};
use memstate_core::{
    BadRecordPolicy, Body, CommandContext, CommandId, CommandJson, Consistency, Engine,
    EngineBuilder, Envelope, Error, HaltReason, MemoryStream, Model, NodeId, Settings, SkipEntry,
    Status, Stream,
};
use serde::{Deserialize, Serialize};
use versioned::{v1, v2};

/// The entry in a halt message, read back as an operator would: the list it
/// names and the quoted text, parsed by the same `FromStr` the
/// configuration uses. Exactly one entry must be printed.
fn printed_entry(message: &str) -> SkipEntry {
    let lists = ["skip_commands [\"", "skip_records [\""];
    let found: Vec<(usize, &str)> = lists
        .iter()
        .flat_map(|list| message.match_indices(list))
        .collect();
    assert_eq!(found.len(), 1, "one entry in: {message}");
    let (at, list) = found[0];
    let rest = &message[at + list.len()..];
    let text = &rest[..rest.find("\"]").expect("the entry's closing \"]")];
    if list.starts_with("skip_commands") {
        SkipEntry::Command(text.parse().unwrap())
    } else {
        SkipEntry::Record(text.parse().unwrap())
    }
}

/// The same entry with one character changed: another command id, or the
/// right cursor with a checksum one bit off.
fn altered(entry: &SkipEntry) -> SkipEntry {
    match entry {
        SkipEntry::Command(_) => SkipEntry::Command(CommandId::random()),
        SkipEntry::Record(record) => {
            let mut text = record.to_string();
            let last = text.pop().unwrap();
            text.push(if last == '0' { '1' } else { '0' });
            SkipEntry::Record(text.parse().unwrap())
        }
        other => panic!("an entry of a kind this test does not know: {other:?}"),
    }
}

fn configure<M: Model>(mut builder: EngineBuilder<M>, entries: &[SkipEntry]) -> EngineBuilder<M> {
    for entry in entries {
        builder = match entry {
            SkipEntry::Command(id) => builder.skip_commands([*id]),
            SkipEntry::Record(record) => builder.skip_records([record.clone()]),
            other => panic!("an entry of a kind this test does not know: {other:?}"),
        };
    }
    builder
}

/// A fresh node with `entries` configured: the reason it halts at start.
async fn halts_with<M: Model + Default>(
    stream: &MemoryStream,
    settings: &Settings,
    entries: &[SkipEntry],
) -> HaltReason {
    match start::<M>(stream, settings, entries).await {
        Err(Error::Halted(reason)) => reason,
        Err(other) => panic!("expected a halt, got {other}"),
        Ok(engine) => {
            let status = engine.status();
            engine.shutdown().await;
            panic!("expected a halt, the node started ({status:?})")
        }
    }
}

async fn start<M: Model + Default>(
    stream: &MemoryStream,
    settings: &Settings,
    entries: &[SkipEntry],
) -> Result<Engine<M>, Error> {
    let builder = EngineBuilder::new(M::default(), stream.clone())
        .settings(settings.clone())
        .execute_timeout(Duration::from_secs(60))
        .read_timeout(Duration::from_secs(60));
    configure(builder, entries).start().await
}

/// The halt of a fresh node configured with `entries`, its printed entry
/// (checked against [`HaltReason::skip`]), and the proof that the entry
/// with one character changed leaves the node halted at the same place.
async fn next_halt<M: Model + Default>(
    stream: &MemoryStream,
    settings: &Settings,
    entries: &[SkipEntry],
) -> (HaltReason, SkipEntry) {
    let reason = halts_with::<M>(stream, settings, entries).await;
    let entry = printed_entry(&reason.to_string());
    assert_eq!(reason.skip(), Some(entry.clone()), "{reason}");
    let mut wrong = entries.to_vec();
    wrong.push(altered(&entry));
    assert_eq!(
        halts_with::<M>(stream, settings, &wrong).await,
        reason,
        "a wrong entry must leave the node where it halted"
    );
    (reason, entry)
}

/// An `UpgradeRequired` halt's version needed and version read.
fn version_needed(reason: &HaltReason) -> (u32, u32) {
    match reason {
        HaltReason::UpgradeRequired { version, reads, .. } => (*version, *reads),
        other => panic!("expected UpgradeRequired, got {other}"),
    }
}

async fn total(engine: &Engine<v1::Calc>) -> i64 {
    engine
        .query(Consistency::Linearizable, |m| m.total)
        .await
        .unwrap()
}

/// A model whose command can panic (poisoning the engine in direct mode).
#[derive(Clone, Debug, Default)]
struct Fragile {
    total: i64,
}

#[derive(Debug, Serialize, Deserialize)]
enum FragileCmd {
    Add(i64),
    Panic,
}

impl Model for Fragile {
    type Command = FragileCmd;
    type Output = i64;
    type Error = String;

    fn apply(&mut self, cmd: FragileCmd, _ctx: &mut CommandContext<'_>) -> Result<i64, String> {
        match cmd {
            FragileCmd::Add(n) => self.total += n,
            FragileCmd::Panic => panic!("the model gives up"),
        }
        Ok(self.total)
    }
}

#[tokio::test]
async fn a_poisoned_engine_prints_the_command_entry_that_gets_a_fresh_node_past_it() {
    let stream = MemoryStream::new();
    let settings = Settings::default();
    let node = start::<Fragile>(&stream, &settings, &[]).await.unwrap();
    node.execute(FragileCmd::Add(3)).await.unwrap();
    let poison = CommandId::random();
    assert!(
        node.execute_with_id(poison, FragileCmd::Panic)
            .await
            .is_err()
    );
    assert!(matches!(
        node.status(),
        Status::Halted(HaltReason::Poisoned { .. })
    ));
    let printed = match node.status() {
        Status::Halted(reason) => printed_entry(&reason.to_string()),
        other => panic!("{other:?}"),
    };
    node.shutdown().await;
    assert_eq!(printed, SkipEntry::Command(poison));

    let (reason, entry) = next_halt::<Fragile>(&stream, &settings, &[]).await;
    assert!(matches!(reason, HaltReason::Poisoned { command_id, .. } if command_id == poison));
    assert_eq!(entry, printed);
    let healed = start::<Fragile>(&stream, &settings, &[entry])
        .await
        .unwrap();
    assert_eq!(healed.execute(FragileCmd::Add(1)).await.unwrap().output, 4);
    assert_eq!(healed.status(), Status::Running);
    healed.shutdown().await;
}

fn now_ms() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(now.as_millis()).unwrap()
}

/// A command envelope as another build would write it.
fn command(id: CommandId, model_version: u32, json: serde_json::Value) -> Vec<u8> {
    encode_envelope(&Envelope {
        id,
        origin: NodeId::new("another-build"),
        ts: now_ms(),
        epoch: None,
        model_version,
        reads: 1,
        body: Body::Command(CommandJson::encode(&json).unwrap()),
    })
    .unwrap()
}

async fn append_frame(stream: &MemoryStream, envelopes: &[Vec<u8>]) {
    let frame = encode_frame(envelopes.iter().map(Vec::as_slice));
    stream.append(vec![Bytes::from(frame)]).await.unwrap();
}

#[tokio::test]
async fn commands_no_build_here_reads_print_command_entries_that_spare_the_rest_of_their_record() {
    let stream = MemoryStream::new();
    let settings = Settings::default();
    let writer = start::<v1::Calc>(&stream, &settings, &[]).await.unwrap();
    writer.execute(v1::Cmd::Add(1)).await.unwrap();
    writer.shutdown().await;
    // Two records from other builds, each with good commands around the one
    // this build cannot apply: a command of an unknown shape at this model
    // version, and one written at model version 7.
    let (unknown, newer) = (CommandId::random(), CommandId::random());
    let add = |n: i64| command(CommandId::random(), 1, serde_json::json!({ "Add": n }));
    append_frame(
        &stream,
        &[
            add(2),
            command(unknown, 1, serde_json::json!({ "Triple": null })),
            add(10),
        ],
    )
    .await;
    append_frame(
        &stream,
        &[
            command(newer, 7, serde_json::json!({ "Add": 1000 })),
            add(100),
        ],
    )
    .await;

    let (reason, first) = next_halt::<v1::Calc>(&stream, &settings, &[]).await;
    assert!(
        matches!(reason, HaltReason::UndecodableCommand { command_id, .. } if command_id == unknown),
        "{reason}"
    );
    assert_eq!(first, SkipEntry::Command(unknown));
    let (reason, second) =
        next_halt::<v1::Calc>(&stream, &settings, std::slice::from_ref(&first)).await;
    assert_eq!(version_needed(&reason), (7, 1));
    assert_eq!(second, SkipEntry::Command(newer));

    let node = start::<v1::Calc>(&stream, &settings, &[first, second])
        .await
        .unwrap();
    // Only the two named commands were passed over.
    assert_eq!(total(&node).await, 1 + 2 + 10 + 100);
    assert_eq!(node.execute(v1::Cmd::Add(5)).await.unwrap().output, 118);
    node.shutdown().await;
}

#[tokio::test]
async fn an_activation_no_node_here_can_follow_prints_the_record_entry_then_its_commands_theirs() {
    let stream = MemoryStream::new();
    let settings = Settings::default();
    let old = start::<v1::Calc>(&stream, &settings, &[]).await.unwrap();
    old.execute(v1::Cmd::Add(5)).await.unwrap();
    old.shutdown().await;
    // A build of version 2 activates it and writes a command at it, then
    // is rolled back: no node of version 2 will run again.
    let new = start::<v2::Calc>(&stream, &settings, &[]).await.unwrap();
    new.activate_version(2).await.unwrap();
    let doubled = CommandId::random();
    new.execute_with_id(doubled, v2::Cmd::Double).await.unwrap();
    new.shutdown().await;

    let (reason, activation) = next_halt::<v1::Calc>(&stream, &settings, &[]).await;
    assert_eq!(version_needed(&reason), (2, 1));
    assert!(
        matches!(activation, SkipEntry::Record(_)),
        "a control message is passed over with its record: {activation}"
    );
    let (reason, command) =
        next_halt::<v1::Calc>(&stream, &settings, std::slice::from_ref(&activation)).await;
    assert_eq!(version_needed(&reason), (2, 1));
    assert_eq!(command, SkipEntry::Command(doubled));

    let node = start::<v1::Calc>(&stream, &settings, &[activation, command])
        .await
        .unwrap();
    assert_eq!(node.model_versions().active, 1);
    assert_eq!(total(&node).await, 5);
    assert_eq!(node.execute(v1::Cmd::Add(1)).await.unwrap().output, 6);
    node.shutdown().await;
}

#[tokio::test]
async fn records_that_are_no_frame_of_this_format_print_record_entries() {
    let mut settings = Settings::default();
    settings.bad_records = BadRecordPolicy::Halt;
    for payload in [
        &br#"{"v":99,"envelopes":[{"from":"the future"}]}"#[..],
        &b"\x00\x01 not a frame"[..],
    ] {
        let stream = MemoryStream::new();
        let writer = start::<v1::Calc>(&stream, &settings, &[]).await.unwrap();
        writer.execute(v1::Cmd::Add(1)).await.unwrap();
        stream
            .append(vec![Bytes::copy_from_slice(payload)])
            .await
            .unwrap();
        writer.shutdown().await;

        let (reason, entry) = next_halt::<v1::Calc>(&stream, &settings, &[]).await;
        assert!(
            matches!(
                reason,
                HaltReason::UnknownFormat { .. } | HaltReason::BadRecord { .. }
            ),
            "{reason}"
        );
        assert!(matches!(entry, SkipEntry::Record(_)), "{entry}");
        let node = start::<v1::Calc>(&stream, &settings, &[entry])
            .await
            .unwrap();
        assert_eq!(node.execute(v1::Cmd::Add(2)).await.unwrap().output, 3);
        assert_eq!(node.stats().bad_records_skipped, 1);
        node.shutdown().await;
    }
}
