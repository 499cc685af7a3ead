//! `memstate demo --codec`: the demo creates its stream in the codec asked
//! for, and the bank ends in the same state under either codec. Transfers are
//! small against the balances, so none is refused and the final balances do
//! not depend on the order the nodes' transfers reached the stream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::path::Path;
use std::process::Command;

use memstate_core::Codec;

/// Runs a two-node demo on a journal in `dir`; returns its stdout.
fn demo(dir: &Path, codec: Codec) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_memstate"))
        .args(["demo", "--quiet", "--nodes", "2", "--accounts", "8"])
        .args([
            "--initial",
            "10000",
            "--transfers",
            "300",
            "--max-amount",
            "5",
        ])
        .args(["--concurrency", "4", "--snapshot-every", "100"])
        .args(["--codec", codec.name()])
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{codec}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The state hashes the demo printed, one per node.
fn state_hashes(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.contains("applied index"))
        .filter_map(|l| l.split("state hash ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_msgpack_demo_ends_in_the_state_of_a_json_one_and_its_journal_says_msgpack() {
    let mut finals = Vec::new();
    for codec in Codec::ALL {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("journal");
        let stdout = demo(&dir, codec);
        assert!(
            stdout.contains(&format!("command codec {codec}")),
            "{stdout}"
        );
        assert!(stdout.contains(" 0 refused"), "{stdout}");
        assert!(
            stdout.contains("state hash after both restarts equals the cluster's: yes"),
            "{stdout}"
        );
        let hashes = state_hashes(&stdout);
        assert_eq!(hashes.len(), 2, "{stdout}");
        assert_eq!(hashes[0], hashes[1], "{stdout}");
        finals.push(hashes[0].clone());

        let out = Command::new(env!("CARGO_BIN_EXE_memstate"))
            .args(["inspect", "--summary"])
            .arg(&dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        common::assert_clean_inspect_summary(&stderr, codec);
    }
    assert_eq!(finals[0], finals[1], "json and msgpack: {finals:?}");
}
