//! The file journal: the engine and the adapter on `FileStream`, against the
//! physical limit of the disk: `write` + `fdatasync` of whatever is waiting
//! (group commit, the same batching `FileStream`'s writer thread does), with
//! no framing, checksums, locks or readers.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use async_trait::async_trait;
use memstate_core::Stream;
use memstate_file::{FRAME_HEADER_LEN, FileStream, FileStreamConfig};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::load::closed_loop;
use super::tiers::{AdapterTier, EngineTier, Tier, TierPoint, interleave_three};
use super::workload::{Tag, next_point, tagged_payload};
use super::{BackendRun, Plan};

/// Runs the three tiers, interleaved, on journals under `work`.
///
/// # Errors
///
/// I/O or engine failures, as text.
pub(crate) async fn run(plan: &Plan, work: &Path) -> Result<BackendRun, String> {
    let open = |name: &str| {
        let dir = work.join(name);
        async move {
            let config = FileStreamConfig::new(&dir).with_preallocate(plan.file_preallocate);
            FileStream::open_with(config)
                .await
                .map(|s| Arc::new(s) as Arc<dyn Stream>)
                .map_err(|e| format!("opening the journal at {}: {e}", dir.display()))
        }
    };
    plan.progress("file: memstate = Engine::execute on FileStream; adapter = FileStream::append + subscription read-back; raw = write + fdatasync, group commit");
    let engine = EngineTier::start(open("engine").await?, "bench-file", plan).await?;
    let adapter = match AdapterTier::start(open("adapter").await?).await {
        Ok(a) => a,
        Err(e) => {
            engine.close().await;
            return Err(e);
        }
    };
    let raw = match RawFile::start(&work.join("raw.log")) {
        Ok(r) => r,
        Err(e) => {
            engine.close().await;
            adapter.close().await;
            return Err(e);
        }
    };
    let (memstate, adapter, raw) = interleave_three(plan, "file", &engine, &adapter, &raw).await?;
    Ok(BackendRun::new(
        "file",
        format!(
            "journal under {}, preallocate {} bytes",
            work.display(),
            plan.file_preallocate
        ),
        memstate,
        Some(adapter),
        raw,
    ))
}

type Append = (Vec<u8>, oneshot::Sender<Result<(), String>>);

/// Each operation hands one command-sized frame to a writer thread and waits
/// until it is on disk; the thread writes everything queued in one `write`
/// and one `fdatasync`, as the journal does.
struct RawFile {
    queue: Mutex<Option<mpsc::Sender<Append>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl RawFile {
    fn start(path: &Path) -> Result<Self, String> {
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
        Ok(Self {
            queue: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
    }
}

#[async_trait]
impl Tier for RawFile {
    async fn point(&self, clients: usize, plan: &Plan) -> Result<TierPoint, String> {
        let size = plan.payload_size;
        let point = next_point();
        let queue = self
            .queue
            .lock()
            .clone()
            .ok_or("the raw writer was closed")?;
        let measured = closed_loop(clients, plan.budget, move |client, seq| {
            let queue = queue.clone();
            async move {
                let payload = tagged_payload(Tag::new(point, client, seq), size);
                let (done, wait) = oneshot::channel();
                queue
                    .send((payload, done))
                    .map_err(|_| "the raw writer thread stopped".to_owned())?;
                wait.await
                    .map_err(|_| "the raw writer thread stopped".to_owned())?
            }
        })
        .await?;
        Ok(TierPoint::plain(measured))
    }

    async fn close(&self) {
        // The thread ends when the last sender is gone.
        drop(self.queue.lock().take());
        let writer = self.writer.lock().take();
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
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
