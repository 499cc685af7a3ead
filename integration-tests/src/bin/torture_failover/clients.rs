//! The clients: each keeps one command in flight, sends it to the node it
//! believes leads, and retries it under the same command id until some node
//! acknowledges it (`Ok`, or `AlreadyApplied` for a copy that had landed).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memstate_core::CommandId;
use tokio::sync::watch;

use crate::cluster::{Cluster, Reply, lock};
use crate::command_id;

/// How long one command may be retried before its client gives up on it
/// (it then counts as given up, never as acknowledged).
const RETRY_HORIZON: Duration = Duration::from_secs(120);
/// Pause before a retry.
const BACKOFF: Duration = Duration::from_millis(100);
/// A node that did not answer is not asked again for this long, even when
/// another node names it leader.
const AVOID: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug)]
pub struct Ack {
    pub at: Instant,
    pub slot: usize,
}

#[derive(Debug, Default)]
pub struct Counts {
    pub attempts: AtomicU64,
    pub acknowledged: AtomicU64,
    pub already_applied: AtomicU64,
    pub given_up: AtomicU64,
    /// Answers other than an acknowledgement, by kind.
    pub retried: Mutex<BTreeMap<String, u64>>,
}

#[derive(Debug)]
pub struct Clients {
    cluster: Arc<Cluster>,
    attempt_timeout: Duration,
    /// While true, a retry of a command the leader held back waits: its late
    /// copy must land first.
    gate_closed: watch::Sender<bool>,
    stop: AtomicBool,
    next_token: AtomicU64,
    /// The node that last acknowledged a command: where new commands go.
    hint: AtomicUsize,
    pub counts: Counts,
    acks: Mutex<Vec<Ack>>,
    acked: Mutex<HashSet<CommandId>>,
}

impl Clients {
    pub fn new(cluster: Arc<Cluster>, attempt_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            cluster,
            attempt_timeout,
            gate_closed: watch::channel(false).0,
            stop: AtomicBool::new(false),
            next_token: AtomicU64::new(1),
            hint: AtomicUsize::new(0),
            counts: Counts::default(),
            acks: Mutex::new(Vec::new()),
            acked: Mutex::new(HashSet::new()),
        })
    }

    pub fn spawn(self: &Arc<Self>, n: usize) -> Vec<tokio::task::JoinHandle<()>> {
        (0..n)
            .map(|_| tokio::spawn(Arc::clone(self).client()))
            .collect()
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn set_gate(&self, closed: bool) {
        self.gate_closed.send_replace(closed);
    }

    pub fn all_acked(&self, ids: &HashSet<CommandId>) -> bool {
        let acked = lock(&self.acked);
        ids.iter().all(|id| acked.contains(id))
    }

    /// The first acknowledgement by node `slot` at or after `since`.
    pub fn first_ack(&self, slot: usize, since: Instant) -> Option<Instant> {
        lock(&self.acks)
            .iter()
            .filter(|a| a.slot == slot && a.at >= since)
            .map(|a| a.at)
            .min()
    }

    /// The tokens of every acknowledged command.
    pub fn acked_ids(&self) -> HashSet<CommandId> {
        lock(&self.acked).clone()
    }

    fn count(&self, kind: &str) {
        *lock(&self.counts.retried)
            .entry(kind.to_owned())
            .or_default() += 1;
    }

    async fn wait_gate(&self, id: &CommandId) {
        if *self.gate_closed.borrow() && self.cluster.held.contains(id) {
            let mut closed = self.gate_closed.subscribe();
            let _ = closed.wait_for(|c| !*c).await;
        }
    }

    fn next_node(&self, after: usize, failed: &HashMap<usize, Instant>) -> usize {
        let n = self.cluster.slots.len();
        (1..=n)
            .map(|i| (after + i) % n)
            .find(|s| failed.get(s).is_none_or(|at| at.elapsed() > AVOID))
            .unwrap_or((after + 1) % n)
    }

    /// Runs one fresh command, first sent to node `slot`; returns its id.
    pub fn send_one(self: &Arc<Self>, slot: usize) -> CommandId {
        let token = self.next_token.fetch_add(1, Ordering::SeqCst);
        let this = Arc::clone(self);
        tokio::spawn(async move { this.run_command(token, slot).await });
        command_id(token)
    }

    async fn client(self: Arc<Self>) {
        while !self.stop.load(Ordering::SeqCst) {
            let token = self.next_token.fetch_add(1, Ordering::SeqCst);
            let target = self.hint.load(Ordering::SeqCst);
            self.run_command(token, target).await;
        }
    }

    /// Sends command `token` to `target`, then retries it under the same id
    /// wherever the answers point, until it is acknowledged or given up.
    async fn run_command(&self, token: u64, mut target: usize) {
        let id = command_id(token);
        let mut failed: HashMap<usize, Instant> = HashMap::new();
        let first_try = Instant::now();
        let mut attempt = 0u64;
        loop {
            if attempt > 0 {
                self.wait_gate(&id).await;
            }
            attempt += 1;
            self.counts.attempts.fetch_add(1, Ordering::SeqCst);
            let reply = self
                .cluster
                .execute(target, token, self.attempt_timeout)
                .await;
            match reply {
                Reply::Ok | Reply::AlreadyApplied => {
                    if matches!(reply, Reply::AlreadyApplied) {
                        self.counts.already_applied.fetch_add(1, Ordering::SeqCst);
                    }
                    self.counts.acknowledged.fetch_add(1, Ordering::SeqCst);
                    lock(&self.acks).push(Ack {
                        at: Instant::now(),
                        slot: target,
                    });
                    lock(&self.acked).insert(id);
                    self.hint.store(target, Ordering::SeqCst);
                    return;
                }
                Reply::NotLeader(leader) => {
                    self.count("NotLeader");
                    let named = leader.and_then(|l| self.cluster.slot_of(&l));
                    target = match named {
                        Some(n)
                            if n != target
                                && failed.get(&n).is_none_or(|at| at.elapsed() > AVOID) =>
                        {
                            n
                        }
                        _ => self.next_node(target, &failed),
                    };
                }
                Reply::Failed(kind) => {
                    self.count(&kind);
                    if matches!(kind.as_str(), "NodeDown" | "NodeDied" | "NoAnswer") {
                        failed.insert(target, Instant::now());
                    }
                    target = self.next_node(target, &failed);
                }
            }
            if first_try.elapsed() > RETRY_HORIZON {
                eprintln!("torture_failover: command {token} given up after {attempt} attempts");
                self.counts.given_up.fetch_add(1, Ordering::SeqCst);
                return;
            }
            tokio::time::sleep(BACKOFF).await;
        }
    }
}
