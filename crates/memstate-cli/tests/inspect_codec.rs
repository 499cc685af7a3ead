//! `memstate inspect` names a journal's command codec (from its Genesis
//! record) and decodes the frames of either codec, showing a binary frame's
//! commands as the JSON they hold. A journal a newer build created with a
//! codec this build does not know: the engine refuses it by the codec's
//! name, and `inspect` names that codec too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use memstate_core::{
    Codec, CommandContext, EngineBuilder, Error, HaltReason, Model, Settings, Stream,
};
use memstate_file::FileStream;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Tally(u64);

#[derive(Debug, Serialize, Deserialize)]
enum Op {
    Add { amount: u64, note: String },
}

impl Model for Tally {
    type Command = Op;
    type Output = u64;
    type Error = String;
    fn apply(&mut self, op: Op, _ctx: &mut CommandContext<'_>) -> Result<u64, String> {
        let Op::Add { amount, .. } = op;
        self.0 += amount;
        Ok(self.0)
    }
}

/// `memstate inspect DIR`: stdout lines as JSON, stderr.
fn inspect(dir: &Path) -> (Vec<serde_json::Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_memstate"))
        .arg("inspect")
        .arg(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lines, stderr)
}

/// Writes a journal of `codec` with two commands; returns its inspection
/// (stdout lines as JSON, stderr).
async fn inspect_journal(dir: &Path, codec: Codec) -> (Vec<serde_json::Value>, String) {
    let stream = FileStream::open(dir).await.unwrap();
    let engine = EngineBuilder::new(Tally::default(), stream)
        .node_id("writer")
        .codec(codec)
        .start()
        .await
        .unwrap();
    for amount in [2, 3] {
        engine
            .execute(Op::Add {
                amount,
                note: format!("n{amount}"),
            })
            .await
            .unwrap();
    }
    engine.shutdown().await;
    inspect(dir)
}

#[tokio::test]
async fn inspect_names_the_codec_and_decodes_the_frames_of_both() {
    for codec in Codec::ALL {
        let dir = tempfile::tempdir().unwrap();
        let (lines, stderr) = inspect_journal(dir.path(), codec).await;
        common::assert_clean_inspect_summary(&stderr, codec);
        assert_eq!(lines[0]["kind"], "genesis");
        assert_eq!(lines[0]["codec"], "json", "a Genesis record is JSON");
        let settings = &lines[0]["envelope"]["body"]["control"]["genesis"];
        let (recorded, version) = match codec {
            // A JSON stream's Genesis keeps the bytes of builds before codecs.
            Codec::Json => (serde_json::Value::Null, 1),
            _ => (codec.name().into(), 2),
        };
        assert_eq!(settings["command_codec"], recorded, "{settings}");
        assert_eq!(settings["format_version"], version, "{settings}");
        let commands: Vec<_> = lines.iter().filter(|l| l["kind"] == "command").collect();
        assert_eq!(commands.len(), 2, "{lines:?}");
        for (line, amount) in commands.iter().zip([2, 3]) {
            assert_eq!(line["codec"], codec.name(), "{line}");
            assert_eq!(
                line["envelope"]["body"]["command"],
                serde_json::json!({"Add": {"amount": amount, "note": format!("n{amount}")}}),
                "{line}"
            );
        }
    }
}

#[tokio::test]
async fn a_journal_a_newer_build_created_with_an_unknown_codec_is_refused_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let stream = FileStream::open(dir.path()).await.unwrap();
    // The Genesis record a newer build writes for a stream of its codec.
    let mut settings = serde_json::to_value(Settings::default()).unwrap();
    settings["format_version"] = 3.into();
    settings["command_codec"] = "cbor".into();
    let genesis = serde_json::json!({"v": 1, "envelopes": [{
        "id": "5f0c3c1e-8e7a-4d52-9b1e-2a1d7c9e0f11",
        "origin": "newer-build",
        "ts": 1,
        "body": {"control": {"genesis": settings}},
    }]});
    let first = Bytes::from(serde_json::to_vec(&genesis).unwrap());
    stream.append(vec![first.clone()]).await.unwrap();

    let refused = EngineBuilder::new(Tally::default(), stream.clone())
        .node_id("old")
        .start()
        .await;
    match refused {
        Err(Error::Halted(HaltReason::UnknownCodec { ref codec, .. })) => {
            assert_eq!(codec, "cbor");
            let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(message.contains("newer build"), "{message}");
        }
        other => panic!("expected an unknown codec, got {other:?}"),
    }
    drop(stream);

    let (lines, stderr) = inspect(dir.path());
    assert!(
        stderr.contains(
            r#"command codec "cbor", which this build does not read: a newer build wrote this journal"#
        ),
        "{stderr}"
    );
    let bad = lines[0]["bad_record"].as_str().unwrap_or_default();
    assert!(
        bad.contains(r#"command codec "cbor""#) && bad.contains("newer build"),
        "{lines:?}"
    );
    assert_eq!(lines[0]["bytes"], first.len(), "the record is left whole");
}
