//! `memstate inspect` names a journal's command codec (from its Genesis
//! record) and decodes the frames of either codec, showing a binary frame's
//! commands as the JSON they hold.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::Path;
use std::process::Command;

use memstate_core::{Codec, CommandContext, EngineBuilder, Model};
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

#[tokio::test]
async fn inspect_names_the_codec_and_decodes_the_frames_of_both() {
    for codec in Codec::ALL {
        let dir = tempfile::tempdir().unwrap();
        let (lines, stderr) = inspect_journal(dir.path(), codec).await;
        assert!(
            stderr.contains(&format!("command codec {codec}")),
            "{stderr}"
        );
        assert!(
            stderr.contains("0 record(s) that are not frames"),
            "{stderr}"
        );
        assert_eq!(lines[0]["kind"], "genesis");
        assert_eq!(lines[0]["codec"], "json", "a Genesis record is JSON");
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
