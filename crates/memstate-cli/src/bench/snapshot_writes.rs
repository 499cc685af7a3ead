//! Writers for the snapshot tier's case under writes: tasks that keep
//! executing deposits through the engine, before, while and after a snapshot
//! is taken, so that a shared model's copy-on-write growth while the snapshot
//! is serialized shows in the case's peak memory, and the applying pause in
//! what the writers wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use memstate_core::{Engine, Model};
use tokio::task::JoinHandle;

use super::workload::{account, mix};
use crate::bank::BankCommand;

/// The writers are warming up: their waits are not counted.
const WARMING: u8 = 0;
/// The snapshot is being taken: the waits of commands in flight count.
const SNAPSHOT: u8 = 1;
/// The snapshot is stored: the writers finish their command and stop.
const STOPPING: u8 = 2;

/// Writer tasks running against one engine.
pub(crate) struct Writers {
    phase: Arc<AtomicU8>,
    done: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<Result<Duration, String>>>,
    /// Commands done when the snapshot began.
    at_begin: u64,
}

/// What the writers saw.
pub(crate) struct WritesFigures {
    /// Commands completed while the snapshot was being taken.
    pub during: u64,
    /// The longest wait of a command in flight while the snapshot was taken.
    pub max_wait: Duration,
}

impl Writers {
    /// Starts `count` tasks, each executing one deposit after another into
    /// accounts spread over `accounts`, until [`Writers::stop`].
    pub(crate) fn start<M>(engine: &Engine<M>, count: u32, accounts: u64) -> Self
    where
        M: Model<Command = BankCommand>,
    {
        let phase = Arc::new(AtomicU8::new(WARMING));
        let done = Arc::new(AtomicU64::new(0));
        let tasks = (0..count)
            .map(|w| {
                let engine = engine.clone();
                let (phase, done) = (Arc::clone(&phase), Arc::clone(&done));
                tokio::spawn(async move {
                    // Each writer its own sequence of accounts.
                    let mut i = u64::from(w) << 40;
                    let mut max_wait = Duration::ZERO;
                    while phase.load(Ordering::Acquire) != STOPPING {
                        let deposit = BankCommand::Deposit {
                            account: account(mix(i) % accounts.max(1)),
                            amount: 1,
                        };
                        let during = phase.load(Ordering::Acquire) == SNAPSHOT;
                        let sent = Instant::now();
                        engine
                            .execute(deposit)
                            .await
                            .map_err(|e| format!("a deposit under the snapshot: {e}"))?;
                        if during || phase.load(Ordering::Acquire) == SNAPSHOT {
                            max_wait = max_wait.max(sent.elapsed());
                        }
                        done.fetch_add(1, Ordering::AcqRel);
                        i += 1;
                    }
                    Ok(max_wait)
                })
            })
            .collect();
        Self {
            phase,
            done,
            tasks,
            at_begin: 0,
        }
    }

    /// Waits until the writers have completed `commands` commands between
    /// them: they are writing at their pace when the snapshot begins.
    pub(crate) async fn warm_up(&self, commands: u64) {
        while self.done.load(Ordering::Acquire) < commands
            && self.tasks.iter().any(|t| !t.is_finished())
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Marks the start of the snapshot.
    pub(crate) fn begin_snapshot(&mut self) {
        self.at_begin = self.done.load(Ordering::Acquire);
        self.phase.store(SNAPSHOT, Ordering::Release);
    }

    /// Marks the end of the snapshot, stops the writers and reports.
    ///
    /// # Errors
    ///
    /// When a writer's command failed or its task did.
    pub(crate) async fn stop(self) -> Result<WritesFigures, String> {
        let during = self
            .done
            .load(Ordering::Acquire)
            .saturating_sub(self.at_begin);
        self.phase.store(STOPPING, Ordering::Release);
        let mut max_wait = Duration::ZERO;
        for task in self.tasks {
            let wait = task
                .await
                .map_err(|e| format!("a writer task failed: {e}"))??;
            max_wait = max_wait.max(wait);
        }
        Ok(WritesFigures { during, max_wait })
    }
}
