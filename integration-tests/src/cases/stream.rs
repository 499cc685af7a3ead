//! Cases for the Stream contract itself: the numbered rules of
//! `memstate_core::stream`.

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
    if !f.stream.capabilities().multi_record_append {
        return Ok(Outcome::Ignored(
            "the adapter declares one record per append; \
             a_multi_record_append_is_refused_unless_declared checks the refusal"
                .into(),
        ));
    }
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
    let got = take(&mut sub, writers * rounds * 3, WAIT).await?;
    let names: Vec<String> = got
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

pub(super) async fn a_multi_record_append_is_refused_unless_declared(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    if f.stream.capabilities().multi_record_append {
        return Ok(Outcome::Ignored(
            "the adapter declares multi-record append; \
             records_of_one_append_land_contiguously checks it"
                .into(),
        ));
    }
    match f
        .stream
        .append(vec![payload("pair", 0), payload("pair", 1)])
        .await
    {
        Err(StreamError::Unsupported(_)) => {}
        other => {
            return Err(format!(
                "an append of two records where one is declared gave {other:?}, \
                 expected Unsupported"
            )
            .into());
        }
    }
    // Refused before any I/O: had the pair been written, it would come
    // before this record.
    append_one(f.stream.as_ref(), payload("single", 0)).await?;
    let got = take(&mut f.stream.subscribe(None).await?, 1, WAIT).await?;
    ensure(got[0].payload == payload("single", 0), || {
        format!("the refused records were written: {:?}", got[0].payload)
    })?;
    Ok(Outcome::Passed)
}

pub(super) async fn concurrent_appends_through_one_handle_land_once_each(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    let count = 60;
    let mut tasks = Vec::new();
    for i in 0..count {
        let stream = Arc::clone(&f.stream);
        tasks.push(tokio::spawn(async move {
            let cursor = append_one(stream.as_ref(), payload("inflight", i)).await?;
            Ok::<_, crate::fixture::BoxError>((payload("inflight", i), cursor))
        }));
    }
    let mut appended = std::collections::HashMap::new();
    for t in tasks {
        let (p, c) = t.await??;
        appended.insert(p, c);
    }
    let got = take(&mut f.stream.subscribe(None).await?, count, WAIT).await?;
    let distinct: HashSet<&Bytes> = got.iter().map(|r| &r.payload).collect();
    ensure(distinct.len() == count, || {
        format!("{} distinct records of {count}", distinct.len())
    })?;
    for r in &got {
        ensure(appended.get(&r.payload) == Some(&r.cursor), || {
            format!(
                "record {:?} was read at {} but its append returned {:?}",
                r.payload,
                r.cursor,
                appended.get(&r.payload)
            )
        })?;
    }
    Ok(Outcome::Passed)
}

pub(super) async fn optimistic_append_succeeds_only_at_the_expected_end(
    backend: Arc<dyn Backend>,
) -> CaseResult {
    let f = backend.fresh().await?;
    if !f.stream.capabilities().optimistic_append {
        return Ok(Outcome::Ignored(
            "the adapter declares no optimistic append".into(),
        ));
    }
    let mut first = f
        .stream
        .append_expecting(vec![payload("o", 0)], None)
        .await?;
    ensure(first.len() == 1, || {
        format!("one record gave {} cursors", first.len())
    })?;
    let first = first.remove(0);
    match f
        .stream
        .append_expecting(vec![payload("lost", 0)], None)
        .await
    {
        Err(StreamError::WrongExpectedPosition { expected, actual }) => {
            ensure(
                expected.is_none() && actual.as_ref() == Some(&first),
                || format!("conflict named expected {expected:?}, actual {actual:?}"),
            )?;
        }
        other => {
            return Err(format!("expecting an empty stream after an append gave {other:?}").into());
        }
    }
    let second = f
        .stream
        .append_expecting(vec![payload("o", 1)], Some(first.clone()))
        .await?;
    match f
        .stream
        .append_expecting(vec![payload("lost", 1)], Some(first.clone()))
        .await
    {
        Err(StreamError::WrongExpectedPosition { expected, actual }) => {
            ensure(
                expected.as_ref() == Some(&first) && actual.as_ref() == second.first(),
                || format!("conflict named expected {expected:?}, actual {actual:?}"),
            )?;
        }
        other => {
            return Err(format!("expecting a stale end gave {other:?}").into());
        }
    }
    // The losers wrote nothing: the next record follows the two winners.
    append_one(f.stream.as_ref(), payload("o", 2)).await?;
    let got = take(&mut f.stream.subscribe(None).await?, 3, WAIT).await?;
    let payloads: Vec<Bytes> = got.iter().map(|r| r.payload.clone()).collect();
    ensure(
        payloads == vec![payload("o", 0), payload("o", 1), payload("o", 2)],
        || format!("after two refused optimistic appends the stream holds {payloads:?}"),
    )?;
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
    // The advertised limit is real: a record of exactly that size is stored,
    // and it is the first record (the refused one was not written).
    let at_limit = Bytes::from(vec![b'y'; limit]);
    append_one(f.stream.as_ref(), at_limit.clone()).await?;
    let got = take(&mut f.stream.subscribe(None).await?, 1, WAIT).await?;
    ensure(got[0].payload == at_limit, || {
        format!(
            "expected the {limit}-byte record first, got {} bytes (the refused record was written?)",
            got[0].payload.len()
        )
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
