//! Reads and writes share the runtime: a task looping over reads whose level
//! is already met must still let the writer, the apply loop and the writing
//! callers run. Checked on a current-thread runtime, where a read that never
//! yields would keep every other task from running at all. Progress is
//! counted in reads, never in time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use memstate_core::{Consistency, MemoryStream};
use support::{BoardCmd, builder};

/// Writes one client makes, one after the other.
const WRITES: u64 = 20;
/// Reads each query loop may make before it gives up on seeing the writes.
/// A loop that yields lets the writes through within a few thousand reads;
/// one that never yields spends all of these before any write can land.
const READ_LIMIT: u64 = 1_000_000;
/// Query loops spinning beside the writer.
const QUERY_LOOPS: usize = 4;

/// Spawns `QUERY_LOOPS` loops of reads at `level` beside one writer and
/// checks that every loop saw all the writes applied before its limit.
fn writers_progress_while_queries_spin(level: Consistency) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let engine = builder(MemoryStream::new(), "n").start().await.unwrap();
        let writer = {
            let engine = engine.clone();
            tokio::spawn(async move {
                for value in 1..=WRITES {
                    engine.execute(BoardCmd::Set(value)).await.unwrap();
                }
            })
        };
        let loops: Vec<_> = (0..QUERY_LOOPS)
            .map(|_| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    for reads in 1..=READ_LIMIT {
                        let value = engine.query(level, |b| b.register).await.unwrap();
                        if value == WRITES {
                            return Some(reads);
                        }
                    }
                    None
                })
            })
            .collect();
        for (i, handle) in loops.into_iter().enumerate() {
            let reads = handle.await.unwrap();
            assert!(
                reads.is_some(),
                "query loop {i} ran {READ_LIMIT} {level:?} reads and never saw the writer's \
                 {WRITES} writes applied: the reads starve the writer"
            );
        }
        writer.await.unwrap();
        let value = engine
            .query(Consistency::Local, |b| b.register)
            .await
            .unwrap();
        assert_eq!(value, WRITES);
        engine.shutdown().await;
    });
}

#[test]
fn local_query_loops_do_not_starve_writers() {
    writers_progress_while_queries_spin(Consistency::Local);
}

#[test]
fn met_at_least_query_loops_do_not_starve_writers() {
    // Index 1 (the Genesis record) is applied before `start` returns, so this
    // level is met from the first read: the same fast path as `Local`.
    writers_progress_while_queries_spin(Consistency::AtLeast(1));
}
