//! The bank workload every tier runs, and the helpers the raw tiers share:
//! command-sized payloads that carry a tag, and the table of callers waiting
//! for their tag to be read back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use memstate_core::envelope::{encode_envelope_as, encode_frame_as};
use memstate_core::{Body, Codec, CommandId, CommandJson, Engine, Envelope, ExecuteError, NodeId};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::bank::{Bank, BankCommand};

/// Initial balance of every benchmark account: large enough that no
/// transfer of the run is refused for want of money.
pub(crate) const INITIAL_BALANCE: u64 = 1_000_000_000_000;

/// The name of account `i` (fixed width, as an application key would be).
pub(crate) fn account(i: u64) -> String {
    format!("acct-{i:07}")
}

/// A 64-bit mix (splitmix64): the workload is a pure function of its inputs,
/// so every tier and every run sends the same transfers.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The `seq`-th transfer of client `client` among `accounts` accounts:
/// two distinct accounts, an amount in 1..=100.
pub(crate) fn transfer_indices(accounts: u64, client: usize, seq: u64) -> (u64, u64, u64) {
    let accounts = accounts.max(2);
    let r = mix((client as u64) << 40 ^ seq);
    let from = r % accounts;
    let to = (from + 1 + mix(r) % (accounts - 1)) % accounts;
    let amount = 1 + (r >> 48) % 100;
    (from, to, amount)
}

/// [`transfer_indices`] as a bank command.
pub(crate) fn transfer(accounts: u64, client: usize, seq: u64) -> BankCommand {
    let (from, to, amount) = transfer_indices(accounts, client, seq);
    BankCommand::Transfer {
        from: account(from),
        to: account(to),
        amount,
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An envelope as the engine writes it for `command`.
pub(crate) fn envelope_for(command: &BankCommand, origin: &str, ts: u64) -> Envelope {
    Envelope {
        id: CommandId::random(),
        origin: NodeId::new(origin),
        ts,
        epoch: None,
        model_version: 1,
        reads: 1,
        body: Body::Command(CommandJson::encode(command).unwrap_or_default()),
    }
}

/// The size of a one-envelope frame carrying a typical transfer: what the
/// engine appends for one command, and so the payload of one raw operation.
pub(crate) fn command_frame_size(codec: Codec, origin: &str) -> usize {
    let envelope = envelope_for(&transfer(1_000_000, 7, 7), origin, now_ms());
    let encoded = encode_envelope_as(codec, &envelope).unwrap_or_default();
    encode_frame_as(codec, [encoded.as_slice()]).len()
}

/// A payload of `size` bytes (at least 16) that starts with a tag naming the
/// client and its operation, so a reader can tell whose write it read back.
pub(crate) fn tagged_payload(tag: Tag, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size.max(16));
    out.extend_from_slice(&tag.client.to_be_bytes());
    out.extend_from_slice(&tag.seq.to_be_bytes());
    // JSON-like filler, so compression (none is configured) would not flatter the raw tier.
    let filler =
        b"{\"transfer\":{\"from\":\"acct-0000000\",\"to\":\"acct-0000001\",\"amount\":42}}";
    while out.len() < size {
        let room = size - out.len();
        out.extend_from_slice(&filler[..room.min(filler.len())]);
    }
    out
}

/// Whose operation a payload belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Tag {
    pub client: u64,
    pub seq: u64,
}

/// Numbers each measured point, so that tags never repeat across points.
static POINTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A number no other point of this process has.
pub(crate) fn next_point() -> u64 {
    POINTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Tag {
    /// The tag of operation `seq` of client `client` in point `point`
    /// (from [`next_point`]).
    pub(crate) fn new(point: u64, client: usize, seq: u64) -> Self {
        Self {
            client: point << 24 | client as u64,
            seq,
        }
    }

    /// The tag at the start of `payload`, if it is long enough.
    pub(crate) fn read(payload: &[u8]) -> Option<Self> {
        let client = u64::from_be_bytes(payload.get(0..8)?.try_into().ok()?);
        let seq = u64::from_be_bytes(payload.get(8..16)?.try_into().ok()?);
        Some(Self { client, seq })
    }
}

/// Callers waiting until their payload is read back from the stream: the
/// engine's execute path without the engine (no envelope, no model).
#[derive(Clone, Default)]
pub(crate) struct Waiters {
    inner: Arc<Mutex<HashMap<Tag, oneshot::Sender<()>>>>,
}

impl Waiters {
    /// Registers `tag`; the receiver resolves when a reader sees it.
    pub(crate) fn register(&self, tag: Tag) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.inner.lock().insert(tag, tx);
        rx
    }

    /// A reader saw `payload`: wake its caller, if any.
    pub(crate) fn seen(&self, payload: &[u8]) {
        if let Some(tag) = Tag::read(payload)
            && let Some(tx) = self.inner.lock().remove(&tag)
        {
            let _ = tx.send(());
        }
    }

    /// Forgets `tag` (its caller gave up).
    pub(crate) fn forget(&self, tag: Tag) {
        self.inner.lock().remove(&tag);
    }
}

/// Waits for `rx` at most `timeout`.
///
/// # Errors
///
/// A message naming what was not read back in time, or a reader that stopped.
pub(crate) async fn read_back(
    waiters: &Waiters,
    tag: Tag,
    rx: oneshot::Receiver<()>,
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("the reader stopped before reading the record back".into()),
        Err(_) => {
            waiters.forget(tag);
            Err(format!(
                "record {tag:?} was not read back within {timeout:?}"
            ))
        }
    }
}

/// How long a raw operation may wait to see its record again.
pub(crate) const READ_BACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens `accounts` accounts through `engine`, `parallel` commands at a time.
///
/// # Errors
///
/// The first engine failure.
pub(crate) async fn open_accounts(
    engine: &Engine<Bank>,
    accounts: u64,
    parallel: usize,
) -> Result<(), String> {
    let parallel = parallel.max(1) as u64;
    let mut tasks = Vec::new();
    for lane in 0..parallel {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = lane;
            while i < accounts {
                let cmd = BankCommand::Open {
                    account: account(i),
                    initial: INITIAL_BALANCE,
                };
                match engine.execute(cmd).await {
                    Ok(_) | Err(ExecuteError::Rejected { .. }) => {}
                    Err(e) => return Err(format!("opening account {i} failed: {e}")),
                }
                i += parallel;
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| format!("an account-opening task failed: {e}"))??;
    }
    Ok(())
}

/// Executes one command; a domain refusal counts as done (it was applied).
///
/// # Errors
///
/// Engine failures, as text.
pub(crate) async fn execute(engine: &Engine<Bank>, command: BankCommand) -> Result<(), String> {
    match engine.execute(command).await {
        Ok(_) | Err(ExecuteError::Rejected { .. }) => Ok(()),
        Err(e) => Err(format!("execute failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_are_deterministic_and_between_distinct_accounts() {
        for seq in 0..1000 {
            let (from, to, amount) = transfer_indices(10, 3, seq);
            assert!(from < 10 && to < 10 && from != to, "{from} -> {to}");
            assert!((1..=100).contains(&amount));
            assert_eq!(transfer_indices(10, 3, seq), (from, to, amount));
        }
        assert_ne!(transfer_indices(1000, 1, 0), transfer_indices(1000, 2, 0));
    }

    #[test]
    fn tagged_payload_has_the_size_asked_and_its_tag_reads_back() {
        let tag = Tag {
            client: 63,
            seq: 1 << 40,
        };
        for size in [16, 17, 180, 1000] {
            let p = tagged_payload(tag, size);
            assert_eq!(p.len(), size);
            assert_eq!(Tag::read(&p), Some(tag));
        }
        assert_eq!(Tag::read(b"short"), None);
    }

    #[test]
    fn a_command_frame_is_a_few_hundred_bytes() {
        let size = command_frame_size(Codec::Json, "bench-file");
        assert!((100..400).contains(&size), "{size}");
        let binary = command_frame_size(Codec::MsgPack, "bench-file");
        assert!((50..size).contains(&binary), "{binary} against {size}");
    }

    #[tokio::test]
    async fn waiters_wake_the_caller_whose_tag_was_read() {
        let waiters = Waiters::default();
        let tag = Tag { client: 1, seq: 2 };
        let rx = waiters.register(tag);
        waiters.seen(&tagged_payload(Tag { client: 1, seq: 3 }, 20));
        waiters.seen(&tagged_payload(tag, 20));
        read_back(&waiters, tag, rx, Duration::from_secs(1))
            .await
            .unwrap();
        let lost = Tag { client: 9, seq: 9 };
        let rx = waiters.register(lost);
        let err = read_back(&waiters, lost, rx, Duration::from_millis(10))
            .await
            .unwrap_err();
        assert!(err.contains("not read back"), "{err}");
    }
}
