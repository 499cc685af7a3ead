//! The apply loop's answer to a failing subscription: a transient error is
//! resubscribed after the last applied record, with a doubling back-off, a
//! bounded number of times in a row; an error resubscribing cannot help
//! halts at once. Paused clock: the back-off is read off the runtime's clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use memstate_core::{
    Consistency, Engine, Error, HaltReason, MemoryStream, Status, Stream, StreamError,
};
use support::{Board, BoardCmd, TestStream, builder, eventually, paused_runtime};

fn transient() -> StreamError {
    StreamError::Timeout {
        action: "reading".into(),
        after: Duration::from_secs(1),
    }
}

/// A reader on `client` and a writer on the shared stream; the reader has
/// applied the writer's first command.
async fn reader_and_writer(client: &TestStream) -> (Engine<Board>, Engine<Board>) {
    let reader = builder(client.clone(), "reader").start().await.unwrap();
    let writer = builder(client.memory().clone(), "writer")
        .start()
        .await
        .unwrap();
    let first = writer.execute(BoardCmd::Set(1)).await.unwrap();
    reader.wait_for_index(first.index).await.unwrap();
    (reader, writer)
}

async fn register(e: &Engine<Board>) -> u64 {
    e.query(Consistency::Local, |m| m.register).await.unwrap()
}

#[test]
fn a_failed_read_resubscribes_after_the_last_applied_record_with_a_doubling_back_off() {
    paused_runtime().block_on(async {
        let client = TestStream::new(MemoryStream::new());
        let (reader, writer) = reader_and_writer(&client).await;
        let opened = client.subscriptions().len();
        // The read under way returns the next record; the two after it fail.
        client.fail_reads(vec![transient(), transient()]);
        let second = writer.execute(BoardCmd::Set(2)).await.unwrap();
        reader.wait_for_index(second.index).await.unwrap();
        let last_applied = client.memory().head().await.unwrap();
        eventually(Duration::from_secs(5), "two resubscriptions", || {
            client.subscriptions().len() == opened + 2
        })
        .await;
        let third = writer.execute(BoardCmd::Set(3)).await.unwrap();
        reader.wait_for_index(third.index).await.unwrap();

        assert_eq!(reader.status(), Status::Running);
        assert_eq!(register(&reader).await, 3);
        assert_eq!(reader.stats().applied_index, writer.stats().applied_index);
        let failed = client.reads_failed();
        let resubscribed = &client.subscriptions()[opened..];
        assert_eq!((failed.len(), resubscribed.len()), (2, 2));
        for (at, after) in resubscribed {
            assert_eq!(after, &last_applied, "resumed at {after:?}");
            assert!(*at >= failed[0]);
        }
        // 200 ms after the first failure, 400 ms after the second.
        assert_eq!(resubscribed[0].0 - failed[0], Duration::from_millis(200));
        assert_eq!(resubscribed[1].0 - failed[1], Duration::from_millis(400));
        reader.shutdown().await;
        writer.shutdown().await;
    });
}

#[test]
fn an_error_resubscribing_cannot_help_halts_at_once() {
    paused_runtime().block_on(async {
        let client = TestStream::new(MemoryStream::new());
        let (reader, writer) = reader_and_writer(&client).await;
        let opened = client.subscriptions().len();
        client.fail_reads(vec![StreamError::HistoryTruncated {
            name: "test".into(),
            reason: "trimmed".into(),
        }]);
        writer.execute(BoardCmd::Set(2)).await.unwrap();
        eventually(Duration::from_secs(5), "the reader halts", || {
            matches!(reader.status(), Status::Halted(_))
        })
        .await;
        let Status::Halted(HaltReason::StreamFailed(message)) = reader.status() else {
            panic!("halted for {:?}", reader.status());
        };
        assert!(message.contains("trimmed"), "{message}");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(client.subscriptions().len(), opened, "it resubscribed");
        assert!(matches!(reader.status(), Status::Halted(_)));
        reader.shutdown().await;
        writer.shutdown().await;
    });
}

/// A read waiting for an index the node will never reach hears of a halt at
/// once, not at its timeout.
#[test]
fn a_read_waiting_when_the_node_halts_is_told_of_the_halt() {
    paused_runtime().block_on(async {
        let client = TestStream::new(MemoryStream::new());
        let (reader, writer) = reader_and_writer(&client).await;
        let waiting = tokio::spawn({
            let reader = reader.clone();
            async move { reader.wait_for_index(1_000).await }
        });
        // The record is applied, the read after it fails and is resubscribed
        // 200 ms later; the next read fails for good.
        client.fail_reads(vec![
            transient(),
            StreamError::HistoryTruncated {
                name: "test".into(),
                reason: "trimmed".into(),
            },
        ]);
        writer.execute(BoardCmd::Set(2)).await.unwrap();
        let waited = waiting.await.unwrap();
        assert!(
            matches!(waited, Err(Error::Halted(HaltReason::StreamFailed(_)))),
            "{waited:?}"
        );
        assert_eq!(client.reads_failed().len(), 2);
        reader.shutdown().await;
        writer.shutdown().await;
    });
}

/// Five failed reads in a row are resubscribed; a sixth halts the node.
#[test]
fn a_read_failing_six_times_in_a_row_halts_after_five_resubscriptions() {
    paused_runtime().block_on(async {
        for fails in [5, 6] {
            let client = TestStream::new(MemoryStream::new());
            let (reader, writer) = reader_and_writer(&client).await;
            let opened = client.subscriptions().len();
            client.fail_reads((0..fails).map(|_| transient()).collect());
            writer.execute(BoardCmd::Set(2)).await.unwrap();
            // The back-offs add up to 6.2 s.
            tokio::time::sleep(Duration::from_secs(60)).await;
            let third = writer.execute(BoardCmd::Set(3)).await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(client.reads_failed().len(), fails);
            assert_eq!(client.subscriptions().len() - opened, 5);
            if fails == 5 {
                assert_eq!(reader.status(), Status::Running);
                reader.wait_for_index(third.index).await.unwrap();
                assert_eq!(register(&reader).await, 3);
            } else {
                let Status::Halted(HaltReason::StreamFailed(message)) = reader.status() else {
                    panic!("halted for {:?}", reader.status());
                };
                assert!(message.contains("timed out"), "{message}");
            }
            reader.shutdown().await;
            writer.shutdown().await;
        }
    });
}
