//! The snapshot tier's case under writes (`memstate bench-snapshot-case
//! --writers N`): writers execute deposits through the engine while the
//! snapshot is taken, and the case still restarts from that snapshot with
//! every account. Small sizes only: the figures themselves are the bench's
//! (`memstate bench --only snapshot`), never asserted here.
#![cfg(feature = "bench")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::Command;

use memstate_core::Body;
use memstate_core::envelope::decode_frame;

/// Deposits in the journal the case writes before its engine starts.
const SEEDED: u64 = 300;

#[test]
fn the_case_under_writers_writes_through_the_snapshot_and_restarts_from_it() {
    for design in ["std", "imbl"] {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("case");
        let out = Command::new(env!("CARGO_BIN_EXE_memstate"))
            .arg("bench-snapshot-case")
            .args(["--design", design, "--accounts", "2000"])
            .args(["--commands", &SEEDED.to_string(), "--writers", "3"])
            .arg("--dir")
            .arg(&dir)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{design}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let figures: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(figures["design"], design);
        assert_eq!(figures["writers"], 3, "{figures}");
        assert_eq!(figures["accounts"], 2000, "{figures}");
        for field in ["writes_during", "writer_max_wait_ms", "pause_ms"] {
            assert!(figures[field].is_number(), "{field}: {figures}");
        }

        // The writers wrote through the engine: besides the seeded deposits,
        // the journal holds at least the 20 each completed before the
        // snapshot began.
        let report = memstate_file::inspect::read_all(dir.join("journal")).unwrap();
        let commands = report
            .records
            .iter()
            .flat_map(|r| decode_frame(&r.payload).unwrap())
            .filter(|e| matches!(e.body, Body::Command(_)))
            .count() as u64;
        assert!(commands >= SEEDED + 3 * 20, "{design}: {commands} commands");
    }
}
