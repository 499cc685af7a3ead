//! `memstate history` prints a journal's commands as JSON lines, with the
//! index `execute` returned, and honours `--from`/`--to`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::Path;
use std::process::Command;

use memstate_core::{CommandContext, EngineBuilder, Model};
use memstate_file::FileStream;
use serde_json::Value;

#[derive(Clone, Default)]
struct Sum(i64);

impl Model for Sum {
    type Command = i64;
    type Output = i64;
    type Error = String;
    fn apply(&mut self, add: i64, _: &mut CommandContext<'_>) -> Result<i64, String> {
        self.0 += add;
        Ok(self.0)
    }
}

fn history(dir: &Path, extra: &[&str]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_memstate"))
        .args(["history", "--backend", "file", "--dir"])
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn history_lists_every_command_with_its_index_and_honours_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let engine = EngineBuilder::new(Sum::default(), FileStream::open(dir.path()).await.unwrap())
        .node_id("writer")
        .start()
        .await
        .unwrap();
    let mut indexes = Vec::new();
    for add in [5, 7, 11] {
        indexes.push(engine.execute(add).await.unwrap().index);
    }
    engine.shutdown().await;

    let all = history(dir.path(), &[]);
    assert_eq!(all.len(), 3, "{all:?}");
    for ((line, index), add) in all.iter().zip(&indexes).zip([5, 7, 11]) {
        assert_eq!(line["index"], *index);
        assert_eq!(line["command"], add);
        assert_eq!(line["node"], "writer");
        assert_eq!(line["fate"], "applied");
        assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
    }

    let from = indexes[1].to_string();
    let middle = history(dir.path(), &["--from", &from, "--to", &from]);
    assert_eq!(middle.len(), 1, "{middle:?}");
    assert_eq!(middle[0]["command"], 7);

    let none = history(dir.path(), &["--to", "2000-01-01T00:00:00Z"]);
    assert!(none.is_empty(), "{none:?}");
}

#[test]
fn history_refuses_to_guess_which_journal() {
    let out = Command::new(env!("CARGO_BIN_EXE_memstate"))
        .args(["history", "--backend", "file"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dir"));
}
