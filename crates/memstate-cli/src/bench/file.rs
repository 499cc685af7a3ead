//! The file journal: the engine and the adapter on `FileStream`, against the
//! physical limit of the disk: `write` + `fdatasync` of whatever is waiting
//! (group commit, the same batching `FileStream`'s writer thread does), with
//! no framing, checksums, locks or readers.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use memstate_core::Stream;
use memstate_file::{FRAME_HEADER_LEN, FileStream};
use tokio::sync::oneshot;

use super::load::closed_loop;
use super::tiers::{TierPoint, adapter_tier, engine_tier};
use super::workload::{Tag, tagged_payload};
use super::{BackendRun, Plan};

/// Runs the three tiers on journals under `work`.
///
/// # Errors
///
/// I/O or engine failures, as text.
pub(crate) async fn run(plan: &Plan, work: &Path) -> Result<BackendRun, String> {
    let open = |name: &str| {
        let dir = work.join(name);
        async move {
            FileStream::open(&dir)
                .await
                .map_err(|e| format!("opening the journal at {}: {e}", dir.display()))
        }
    };
    plan.progress("file: memstate (Engine::execute on FileStream)");
    let stream: Arc<dyn Stream> = Arc::new(open("engine").await?);
    let memstate = engine_tier(stream, "bench-file", plan).await?;
    plan.progress("file: adapter (FileStream::append + subscription read-back)");
    let stream: Arc<dyn Stream> = Arc::new(open("adapter").await?);
    let adapter = adapter_tier(stream, plan).await?;
    plan.progress("file: raw (write + fdatasync, group commit)");
    let raw = raw_tier(plan, &work.join("raw.log")).await?;
    Ok(BackendRun::new(
        "file",
        format!("journal under {}", work.display()),
        memstate,
        Some(adapter),
        raw,
    ))
}

type Append = (Vec<u8>, oneshot::Sender<Result<(), String>>);

/// Each operation hands one command-sized frame to a writer thread and waits
/// until it is on disk; the thread writes everything queued in one `write`
/// and one `fdatasync`, as the journal does.
async fn raw_tier(plan: &Plan, path: &Path) -> Result<Vec<TierPoint>, String> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    let (tx, rx) = mpsc::channel::<Append>();
    let writer = std::thread::Builder::new()
        .name("bench-raw-writer".into())
        .spawn(move || group_commit(file, rx))
        .map_err(|e| format!("starting the raw writer thread: {e}"))?;
    let mut points = Vec::new();
    let mut failure = None;
    for &clients in &plan.clients {
        let size = plan.payload_size;
        let queue = tx.clone();
        let measured = closed_loop(clients, plan.budget, move |client, seq| {
            let queue = queue.clone();
            async move {
                let payload = tagged_payload(
                    Tag {
                        client: client as u64,
                        seq,
                    },
                    size,
                );
                let (done, wait) = oneshot::channel();
                queue
                    .send((payload, done))
                    .map_err(|_| "the raw writer thread stopped".to_owned())?;
                wait.await
                    .map_err(|_| "the raw writer thread stopped".to_owned())?
            }
        })
        .await;
        match measured {
            Ok(m) => {
                plan.progress(&format!(
                    "raw      {clients:>3} clients: {:>9.0} appends/s",
                    m.per_sec
                ));
                points.push(TierPoint::plain(m));
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    match failure {
        Some(e) => Err(e),
        None => Ok(points),
    }
}

fn group_commit(mut file: File, rx: mpsc::Receiver<Append>) {
    let header = [0u8; FRAME_HEADER_LEN as usize];
    let mut buffer = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        buffer.clear();
        for (payload, _) in &batch {
            // The same bytes per record as the journal: a header, then the payload.
            buffer.extend_from_slice(&header);
            buffer.extend_from_slice(payload);
        }
        let result = file
            .write_all(&buffer)
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("raw append failed: {e}"));
        for (_, done) in batch {
            let _ = done.send(result.clone());
        }
    }
}
