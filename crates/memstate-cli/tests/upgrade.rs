//! `memstate upgrade status|activate|forget` on a file journal that running
//! engines share, and the model version in `memstate history`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use memstate_core::{CommandContext, Consistency, Engine, EngineBuilder, Model, Stream};
use memstate_file::FileStream;
use serde_json::Value;

/// A model of one build; `V` is its model version.
#[derive(Clone, Default)]
struct Sum<const V: u32>(i64);

impl<const V: u32> Model for Sum<V> {
    type Command = i64;
    type Output = i64;
    type Error = String;
    const VERSION: u32 = V;
    fn apply(&mut self, add: i64, _: &mut CommandContext<'_>) -> Result<i64, String> {
        self.0 += add;
        Ok(self.0)
    }
}

fn memstate(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_memstate"))
        .args(args)
        .args(["--backend", "file", "--dir"])
        .arg(dir)
        .output()
        .unwrap()
}

fn status(dir: &Path) -> Value {
    let out = memstate(dir, &["upgrade", "status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn node<const V: u32>(stream: &Arc<dyn Stream>, id: &str) -> Engine<Sum<V>> {
    EngineBuilder::new(Sum::<V>::default(), Arc::clone(stream))
        .node_id(id)
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn upgrade_status_activate_and_forget_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let stream: Arc<dyn Stream> = Arc::new(FileStream::open(dir.path()).await.unwrap());
    let old = node::<1>(&stream, "old").await;
    let gone = node::<1>(&stream, "gone").await;
    let new = node::<2>(&stream, "new").await;
    old.execute(5).await.unwrap();

    let s = status(dir.path());
    assert_eq!(s["active_version"], 1);
    assert_eq!(s["nodes_read_up_to"]["old"], 1);
    assert_eq!(s["nodes_read_up_to"]["new"], 2);
    assert_eq!(s["activatable_up_to"], 1);

    let refused = memstate(dir.path(), &["upgrade", "activate", "2"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("old reads up to 1"), "{stderr}");

    // `old` leaves cleanly; `gone` crashed (dropped without a shutdown) and is forgotten.
    old.shutdown().await;
    drop(gone);
    let forgot = memstate(dir.path(), &["upgrade", "forget", "gone"]);
    assert!(
        forgot.status.success(),
        "{}",
        String::from_utf8_lossy(&forgot.stderr)
    );
    assert_eq!(status(dir.path())["activatable_up_to"], 2);
    let activated = memstate(dir.path(), &["upgrade", "activate", "2"]);
    assert!(
        activated.status.success(),
        "{}",
        String::from_utf8_lossy(&activated.stderr)
    );
    assert_eq!(status(dir.path())["active_version"], 2);

    // The running node applied the CLI's record like any other.
    new.query(Consistency::Linearizable, |_| ()).await.unwrap();
    assert_eq!(new.model_versions().active, 2);
    new.execute(1).await.unwrap();
    new.shutdown().await;
    let out = memstate(dir.path(), &["history"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let versions: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["model_version"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(versions, vec![1, 2]);
}
