//! Property-based fuzzing of the journal's segment scan and recovery: a
//! journal whose segments and watermark were damaged at random is judged the
//! same way by the read-only inspector and by opening, neither panics, and a
//! journal that opens is clean afterwards and keeps every record the
//! inspector could read before the first fault.
//!
//! `cargo test` runs a short pass; `make fuzz` sets `PROPTEST_CASES` to a
//! million inputs per target.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bytes::Bytes;
use memstate_core::Stream;
use memstate_file::{FileStream, FileStreamConfig, inspect};
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

fn config(dir: &Path) -> FileStreamConfig {
    FileStreamConfig::new(dir)
        .with_max_record_size(64)
        .with_segment_size(256)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A journal of three small segments, written once, copied by every case.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<tempfile::TempDir> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            runtime().block_on(async {
                let s = FileStream::open_with(config(dir.path())).await.unwrap();
                for i in 0..12 {
                    s.append(vec![Bytes::from(format!("record-{i:030}"))])
                        .await
                        .unwrap();
                }
                s.close();
            });
            dir
        })
        .path()
}

fn journal_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "seg")
                || p.file_name().is_some_and(|n| n == "journal.watermark")
        })
        .collect();
    files.sort();
    files
}

#[derive(Clone, Debug)]
enum Damage {
    Flip { file: usize, at: usize, xor: u8 },
    Cut { file: usize, at: usize },
    Append { file: usize, bytes: Vec<u8> },
    Zeros { file: usize, len: usize },
}

fn damage() -> impl Strategy<Value = Vec<Damage>> {
    proptest::collection::vec(
        prop_oneof![
            (any::<usize>(), any::<usize>(), 1..=255u8).prop_map(|(file, at, xor)| Damage::Flip {
                file,
                at,
                xor
            }),
            (any::<usize>(), any::<usize>()).prop_map(|(file, at)| Damage::Cut { file, at }),
            (
                any::<usize>(),
                proptest::collection::vec(any::<u8>(), 1..64)
            )
                .prop_map(|(file, bytes)| Damage::Append { file, bytes }),
            (any::<usize>(), 1..512usize).prop_map(|(file, len)| Damage::Zeros { file, len }),
        ],
        1..4,
    )
}

/// A change to one file's bytes.
type Change = Box<dyn Fn(&mut Vec<u8>)>;

fn damaged_copy(damage: &[Damage]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in journal_files(template()) {
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    let files = journal_files(dir.path());
    for d in damage {
        let (file, change): (usize, Change) = match d.clone() {
            Damage::Flip { file, at, xor } => (
                file,
                Box::new(move |b: &mut Vec<u8>| {
                    if !b.is_empty() {
                        let i = at % b.len();
                        b[i] ^= xor;
                    }
                }),
            ),
            Damage::Cut { file, at } => (
                file,
                Box::new(move |b: &mut Vec<u8>| b.truncate(at % (b.len() + 1))),
            ),
            Damage::Append { file, bytes } => (
                file,
                Box::new(move |b: &mut Vec<u8>| b.extend_from_slice(&bytes)),
            ),
            Damage::Zeros { file, len } => (
                file,
                Box::new(move |b: &mut Vec<u8>| b.resize(b.len() + len, 0)),
            ),
        };
        let path = &files[file % files.len()];
        let mut bytes = std::fs::read(path).unwrap();
        change(&mut bytes);
        std::fs::write(path, bytes).unwrap();
    }
    dir
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn inspection_and_opening_judge_a_damaged_journal_alike(damage in damage()) {
        let dir = damaged_copy(&damage);
        let before = inspect::read_all(dir.path()).unwrap();
        let refused = before.corruption.is_some() || before.data_loss.is_some();
        let opened = runtime().block_on(FileStream::open_with(config(dir.path())));
        match opened {
            Ok(s) => {
                prop_assert!(!refused, "opened a journal the inspector refuses: {:?}", before);
                let head = s.open_report().head.clone();
                s.close();
                // Recovery leaves a clean journal holding every record the
                // inspector read (a torn tail's frames were never readable).
                let after = inspect::read_all(dir.path()).unwrap();
                prop_assert!(after.is_clean(), "{:?}", after);
                prop_assert_eq!(&after.records, &before.records);
                prop_assert_eq!(head, after.records.last().map(|r| r.cursor.clone()));
            }
            Err(e) => {
                prop_assert!(refused, "the inspector found nothing wrong but opening failed: {e}; {:?}", before);
            }
        }
    }

    #[test]
    fn arbitrary_segment_bytes_never_panic_scan_or_recovery(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        watermark in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("00000000.seg"), &bytes).unwrap();
        if let Some(w) = watermark {
            std::fs::write(dir.path().join("journal.watermark"), w).unwrap();
        }
        let report = inspect::read_all(dir.path()).unwrap();
        let opened = runtime().block_on(FileStream::open_with(config(dir.path())));
        if let Ok(s) = opened {
            s.close();
            prop_assert!(inspect::read_all(dir.path()).unwrap().is_clean());
        }
        // Records are bounded by the file: nothing beyond its size is allocated.
        let total: usize = report.records.iter().map(|r| r.payload.len()).sum();
        prop_assert!(total <= bytes.len());
    }
}
