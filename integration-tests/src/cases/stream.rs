//! Cases for the Stream contract itself (design brief §6).

use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use memstate_core::{Cursor, Stream, StreamError};

use super::{CaseResult, Outcome, ensure, take};
use crate::fixture::Backend;

const WAIT: Duration = Duration::from_secs(60);

fn payload(tag: &str, i: usize) -> Bytes {
    Bytes::from(format!("{tag}-{i:05}"))
}

async fn append_one(stream: &dyn Stream, p: Bytes) -> Result<Cursor, crate::fixture::BoxError> {
    let mut cursors = stream.append(vec![p]).await?;
    ensure(cursors.len() == 1, || {
        format!("append of one record returned {} cursors", cursors.len())
    })?;
    Ok(cursors.remove(0))
}

pub(super) async fn append_returns_increasing_cursors(backend: Arc<dyn Backend>) -> CaseResult {
    let f = backend.fresh().await?;
    let mut cursors = Vec::new();
    for i in 0..10 {
        cursors.push(append_one(f.stream.as_ref(), payload("c", i)).await?);
    }
    for w in cursors.windows(2) {
        let order = f.stream.compare_cursors(&w[0], &w[1])?;
        ensure(order == Ordering::Less, || {
            format!("cursor {} is not before {}", w[0], w[1])
        })?;
        ensure(
            f.stream.compare_cursors(&w[1], &w[0])? == Ordering::Greater,
            || "compare_cursors is not antisymmetric".into(),
        )?;
    }
    ensure(
        f.stream.compare_cursors(&cursors[3], &cursors[3].clone())? == Ordering::Equal,
        || "a cursor does not equal itself".into(),
    )?;
    Ok(Outcome::Passed)
}

pub(super) async fn subscribe_from_the_start_sees_every_record_in_order(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let mut cursors = Vec::new();
    for i in 0..25 {
        cursors.push(append_one(f.stream.as_ref(), payload("s", i)).await?);
    }
    let mut sub = f.stream.subscribe(None).await?;
    let got = take(&mut sub, 25, WAIT).await?;
    for (i, r) in got.iter().enumerate() {
        ensure(r.payload == payload("s", i), || {
            format!("record {i} is {:?}", r.payload)
        })?;
        ensure(r.cursor == cursors[i], || {
            format!(
                "record {i} has cursor {} but append returned {}",
                r.cursor, cursors[i]
            )
        })?;
    }
    Ok(Outcome::Passed)
}

pub(super) async fn subscribe_after_a_cursor_sees_only_the_suffix(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let mut cursors = Vec::new();
    for i in 0..10 {
        cursors.push(append_one(f.stream.as_ref(), payload("m", i)).await?);
    }
    let mut sub = f.stream.subscribe(Some(cursors[6].clone())).await?;
    let got = take(&mut sub, 3, WAIT).await?;
    let payloads: Vec<Bytes> = got.iter().map(|r| r.payload.clone()).collect();
    ensure(
        payloads == vec![payload("m", 7), payload("m", 8), payload("m", 9)],
        || format!("suffix after record 6 was {payloads:?}"),
    )?;
    // Nothing else arrives until something is appended; then exactly that.
    append_one(f.stream.as_ref(), payload("m", 10)).await?;
    let next = take(&mut sub, 1, WAIT).await?;
    ensure(next[0].payload == payload("m", 10), || {
        format!("after the suffix came {:?}", next[0].payload)
    })?;
    // After the last record: nothing old comes back.
    let mut tail = f.stream.subscribe(Some(next[0].cursor.clone())).await?;
    append_one(f.stream.as_ref(), payload("m", 11)).await?;
    let last = take(&mut tail, 1, WAIT).await?;
    ensure(last[0].payload == payload("m", 11), || {
        format!(
            "subscribing after the last record yielded {:?}",
            last[0].payload
        )
    })?;
    Ok(Outcome::Passed)
}

pub(super) async fn a_subscription_follows_the_tail(backend: Arc<dyn Backend>) -> CaseResult {
    let f = backend.fresh().await?;
    let mut sub = f.stream.subscribe(None).await?;
    let writer = Arc::clone(&f.stream);
    let appends = tokio::spawn(async move {
        for i in 0..20 {
            writer.append(vec![payload("t", i)]).await?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok::<_, StreamError>(())
    });
    let got = take(&mut sub, 20, WAIT).await?;
    appends.await??;
    for (i, r) in got.iter().enumerate() {
        ensure(r.payload == payload("t", i), || {
            format!("tail record {i} is {:?}", r.payload)
        })?;
    }
    Ok(Outcome::Passed)
}

pub(super) async fn several_subscribers_see_the_same_sequence(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let other = f.new_client().await?;
    let mut a = f.stream.subscribe(None).await?;
    let mut b = other.subscribe(None).await?;
    for i in 0..15 {
        append_one(f.stream.as_ref(), payload("x", i)).await?;
    }
    let (ra, rb) = (take(&mut a, 15, WAIT).await?, take(&mut b, 15, WAIT).await?);
    ensure(ra == rb, || {
        "two subscribers saw different sequences".into()
    })?;
    Ok(Outcome::Passed)
}

pub(super) async fn records_of_one_append_land_contiguously(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let probe = f
        .stream
        .append(vec![payload("probe", 0), payload("probe", 1)])
        .await;
    if let Err(StreamError::Unsupported(reason)) = probe {
        return Ok(Outcome::Ignored(format!(
            "multi-record appends are refused by this adapter: {reason}"
        )));
    }
    probe?;
    let writers = 3;
    let rounds = 10;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let client = f.new_client().await?;
        tasks.push(tokio::spawn(async move {
            for r in 0..rounds {
                let group: Vec<Bytes> = (0..3)
                    .map(|k| Bytes::from(format!("g{w}-{r}-{k}")))
                    .collect();
                client.append(group).await?;
            }
            Ok::<_, StreamError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mut sub = f.stream.subscribe(None).await?;
    let got = take(&mut sub, 2 + writers * rounds * 3, WAIT).await?;
    let names: Vec<String> = got[2..]
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect();
    for chunk in names.chunks(3) {
        let group = chunk[0].strip_suffix("-0").unwrap_or(&chunk[0]);
        let expected: Vec<String> = (0..3).map(|k| format!("{group}-{k}")).collect();
        ensure(chunk == expected.as_slice(), || {
            format!("an append's records were split or reordered: {chunk:?}")
        })?;
    }
    Ok(Outcome::Passed)
}

pub(super) async fn concurrent_writers_are_seen_in_one_interleaving(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let writers = 3;
    let per_writer = 30;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let client = f.new_client().await?;
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                client.append(vec![payload(&format!("w{w}"), i)]).await?;
            }
            Ok::<_, StreamError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let reader_a = f.new_client().await?;
    let reader_b = f.new_client().await?;
    let total = writers * per_writer;
    let a = take(&mut reader_a.subscribe(None).await?, total, WAIT).await?;
    let b = take(&mut reader_b.subscribe(None).await?, total, WAIT).await?;
    ensure(a == b, || "two readers saw different interleavings".into())?;
    let distinct: HashSet<&Bytes> = a.iter().map(|r| &r.payload).collect();
    ensure(distinct.len() == total, || {
        format!(
            "{} distinct records of {total}: a record was lost or doubled",
            distinct.len()
        )
    })?;
    for w in 0..writers {
        let tag = format!("w{w}-");
        let mine: Vec<&Bytes> = a
            .iter()
            .map(|r| &r.payload)
            .filter(|p| p.starts_with(tag.as_bytes()))
            .collect();
        let expected: Vec<Bytes> = (0..per_writer)
            .map(|i| payload(&format!("w{w}"), i))
            .collect();
        ensure(mine.iter().copied().eq(expected.iter()), || {
            format!("writer {w}'s records are out of its own order")
        })?;
    }
    Ok(Outcome::Passed)
}

pub(super) async fn a_reopened_stream_returns_everything(backend: Arc<dyn Backend>) -> CaseResult {
    let f = backend.fresh().await?;
    let client = f.new_client().await?;
    let mut cursors = Vec::new();
    for i in 0..12 {
        cursors.push(append_one(client.as_ref(), payload("r", i)).await?);
    }
    drop(client);
    let reopened = f.new_client().await?;
    let got = take(&mut reopened.subscribe(None).await?, 12, WAIT).await?;
    for (i, r) in got.iter().enumerate() {
        ensure(
            r.payload == payload("r", i) && r.cursor == cursors[i],
            || format!("after reopening, record {i} differs"),
        )?;
    }
    Ok(Outcome::Passed)
}

pub(super) async fn head_agrees_with_the_last_append(backend: Arc<dyn Backend>) -> CaseResult {
    let f = backend.fresh().await?;
    if !f.stream.capabilities().exact_head {
        return Ok(Outcome::Ignored(
            "the adapter declares no exact head; the engine appends a sync marker instead".into(),
        ));
    }
    let empty = f.stream.head().await?;
    ensure(empty.is_none(), || {
        format!("a fresh stream reports head {empty:?}")
    })?;
    let mut last = None;
    for i in 0..5 {
        last = Some(append_one(f.stream.as_ref(), payload("h", i)).await?);
        let head = f.stream.head().await?;
        ensure(head == last, || {
            format!("head {head:?} after appending {last:?}")
        })?;
    }
    let other = f.new_client().await?;
    let head = other.head().await?;
    ensure(head == last, || {
        format!("another client reports head {head:?}, expected {last:?}")
    })?;
    Ok(Outcome::Passed)
}

pub(super) async fn an_oversized_record_is_refused_before_any_io(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let limit = f.stream.capabilities().max_record_size;
    let big = Bytes::from(vec![b'x'; limit + 1]);
    match f.stream.append(vec![big]).await {
        Err(StreamError::RecordTooLarge { size, limit: named }) => {
            ensure(size == limit + 1 && named == limit, || {
                format!(
                    "error names size {size} and limit {named}, expected {} and {limit}",
                    limit + 1
                )
            })?;
        }
        other => return Err(format!("expected RecordTooLarge, got {other:?}").into()),
    }
    // A record of exactly the limit is accepted... where the backend allows
    // the advertised limit; then the stream holds only what was accepted.
    append_one(f.stream.as_ref(), payload("after", 0)).await?;
    let got = take(&mut f.stream.subscribe(None).await?, 1, WAIT).await?;
    ensure(got[0].payload == payload("after", 0), || {
        "the refused record was written".into()
    })?;
    Ok(Outcome::Passed)
}

pub(super) async fn a_record_a_reader_has_seen_survives_a_reopen(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let mut sub = f.stream.subscribe(None).await?;
    let writer = Arc::clone(&f.stream);
    let appends = tokio::spawn(async move {
        for i in 0..10 {
            writer.append(vec![payload("d", i)]).await?;
        }
        Ok::<_, StreamError>(())
    });
    for i in 0..10 {
        let seen = take(&mut sub, 1, WAIT).await?;
        // What one reader saw, a brand-new client must find too.
        let fresh = f.new_client().await?;
        let again = take(&mut fresh.subscribe(None).await?, i + 1, WAIT).await?;
        ensure(again[i] == seen[0], || {
            format!("record {i} seen by a reader was not found by a new client")
        })?;
    }
    appends.await??;
    Ok(Outcome::Passed)
}

pub(super) async fn payload_bytes_come_back_unchanged(backend: Arc<dyn Backend>) -> CaseResult {
    let f = backend.fresh().await?;
    let mut big = Vec::with_capacity(64 * 1024);
    let mut x: u32 = 0x1234_5678;
    for _ in 0..64 * 1024 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        big.push(x as u8);
    }
    let payloads = vec![
        Bytes::from_static(b"\x00\xff\xfe binary, not UTF-8 \x80"),
        Bytes::from_static(br#"{"v":1,"envelopes":[]}"#),
        Bytes::from_static("unicode: ünïcödé ✓".as_bytes()),
        Bytes::from(big),
    ];
    for p in &payloads {
        append_one(f.stream.as_ref(), p.clone()).await?;
    }
    let got = take(&mut f.stream.subscribe(None).await?, payloads.len(), WAIT).await?;
    for (i, (r, p)) in got.iter().zip(&payloads).enumerate() {
        ensure(r.payload == p, || {
            format!(
                "payload {i} changed in transit ({} bytes in, {} out)",
                p.len(),
                r.payload.len()
            )
        })?;
    }
    Ok(Outcome::Passed)
}

pub(super) async fn an_invalid_cursor_is_refused(backend: Arc<dyn Backend>) -> CaseResult {
    let f = backend.fresh().await?;
    append_one(f.stream.as_ref(), payload("i", 0)).await?;
    let bogus = Cursor::new("not a cursor!");
    ensure(f.stream.compare_cursors(&bogus, &bogus).is_err(), || {
        "compare_cursors accepted a bogus cursor".into()
    })?;
    match f.stream.subscribe(Some(bogus)).await {
        Err(StreamError::InvalidCursor { .. }) => Ok(Outcome::Passed),
        Err(other) => Err(format!("expected InvalidCursor, got {other}").into()),
        Ok(mut sub) => match tokio::time::timeout(WAIT, sub.next()).await {
            Ok(Err(StreamError::InvalidCursor { .. })) => Ok(Outcome::Passed),
            other => Err(format!("a bogus cursor was accepted: {other:?}").into()),
        },
    }
}
