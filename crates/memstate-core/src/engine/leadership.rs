//! Leader election through the stream (single-leader mode).
//!
//! The log decides who leads: a node appends `AssumeLeadership{epoch}` and
//! every node accepts the first claim, in log order, whose epoch is the
//! current one plus one (see `apply.rs`). The claimant learns that it won when
//! it reads its own claim back. Commands carry their writer's epoch and are
//! fenced at apply time, identically everywhere, unless they come from the
//! current leader in the current epoch. This is the shape of Restate's
//! `AnnounceLeader` and of Kafka's producer epochs.
//!
//! This module adds the *driver*: the leader heartbeats through the stream
//! and followers claim the next epoch after a silence. Silence is judged on
//! each node's own clock, from the moment it last *applied* a claim or a
//! heartbeat of the current leader — never from envelope timestamps, which
//! come from another host's clock. Before claiming, a follower catches up with
//! the tail, so that a node which is merely behind does not depose a live
//! leader: the leader's recent heartbeats are in the part it had not read.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Node;
use crate::envelope::Control;
use crate::error::Error;
use crate::model::Model;
use crate::settings::WriteMode;

/// How a node takes part in leader election (single-leader mode); set with
/// [`EngineBuilder::leadership`](crate::EngineBuilder::leadership).
///
/// Local to each node, not replicated: nodes may differ (a node with
/// `auto_claim` off never stands for election on its own).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use memstate_core::LeadershipConfig;
///
/// let config = LeadershipConfig::new(Duration::from_millis(500), Duration::from_secs(3))
///     .with_claim_at_start(false);
/// assert!(config.auto_claim);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeadershipConfig {
    /// How often the leader appends a heartbeat (default 1 s).
    pub heartbeat_interval: Duration,
    /// How long a follower waits, on its own clock, after it last applied a
    /// claim or heartbeat of the current leader before it claims the next
    /// epoch (default 5 s). At least twice the heartbeat interval.
    pub election_timeout: Duration,
    /// Claim the next epoch after `election_timeout` of silence (default
    /// true). When false the node never claims by itself; it still
    /// heartbeats while it leads (after [`Engine::claim_leadership`](crate::Engine::claim_leadership)).
    pub auto_claim: bool,
    /// With `auto_claim`: when the log has never had a leader, claim at once
    /// at start instead of waiting out the election timeout (default true).
    pub claim_at_start: bool,
}

impl Default for LeadershipConfig {
    fn default() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(5))
    }
}

impl LeadershipConfig {
    /// A configuration with these timings, `auto_claim` and `claim_at_start` on.
    pub fn new(heartbeat_interval: Duration, election_timeout: Duration) -> Self {
        Self {
            heartbeat_interval,
            election_timeout,
            auto_claim: true,
            claim_at_start: true,
        }
    }

    /// Sets [`LeadershipConfig::auto_claim`].
    pub fn with_auto_claim(mut self, auto_claim: bool) -> Self {
        self.auto_claim = auto_claim;
        self
    }

    /// Sets [`LeadershipConfig::claim_at_start`].
    pub fn with_claim_at_start(mut self, claim_at_start: bool) -> Self {
        self.claim_at_start = claim_at_start;
        self
    }

    pub(super) fn validate(&self, write_mode: WriteMode) -> Result<(), Error> {
        if write_mode != WriteMode::SingleLeader {
            return Err(Error::Config(
                "leader election needs WriteMode::SingleLeader in the settings; in MultiWriter mode every node writes and there is no leader".into(),
            ));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(Error::Config(
                "the heartbeat interval must not be zero".into(),
            ));
        }
        if self.election_timeout < self.heartbeat_interval * 2 {
            return Err(Error::Config(format!(
                "the election timeout ({:?}) must be at least twice the heartbeat interval ({:?}), or one late heartbeat starts an election",
                self.election_timeout, self.heartbeat_interval
            )));
        }
        Ok(())
    }
}

/// This node's own observations of the leader (not replicated).
#[derive(Debug)]
pub(super) struct LeaderWatch {
    started: Instant,
    /// When this node last applied an accepted claim or a heartbeat of the
    /// current leader.
    last_signal: Mutex<Option<Instant>>,
    /// The applier's running count of such signals; a change wakes the driver.
    signals: watch::Sender<u64>,
}

impl LeaderWatch {
    pub(super) fn new() -> Self {
        Self {
            started: Instant::now(),
            last_signal: Mutex::new(None),
            signals: watch::channel(0).0,
        }
    }

    /// Called after each record with the applier's count of leader signals.
    pub(super) fn observe(&self, count: u64) {
        if *self.signals.borrow() != count {
            *self.last_signal.lock() = Some(Instant::now());
            self.signals.send_replace(count);
        }
    }

    /// Since when no leader has been heard from (start, when never).
    fn silent_since(&self) -> Instant {
        self.last_signal.lock().unwrap_or(self.started)
    }

    /// How long ago this node last applied a sign of life of a leader.
    pub(super) fn last_signal_age(&self) -> Option<Duration> {
        self.last_signal.lock().map(|t| t.elapsed())
    }
}

/// How one automatic election attempt ended.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Won,
    /// Another claim came first, or a leader spoke up while catching up.
    NotNeeded,
    Failed,
}

impl<M: Model> Node<M> {
    /// Whether this node leads, as far as it has applied the log.
    pub(super) fn is_leader(&self) -> bool {
        self.applied.state.lock().leadership.leader.as_ref() == Some(&self.info.node_id)
    }

    /// Claims the next epoch; see [`Engine::claim_leadership`](super::Engine::claim_leadership).
    pub(super) async fn claim(&self) -> Result<u64, Error> {
        if self.info.settings.write_mode != WriteMode::SingleLeader {
            return Err(Error::Config(
                "claim_leadership needs WriteMode::SingleLeader: in MultiWriter mode there is no leader".into(),
            ));
        }
        self.check_running()?;
        // Learn the epoch from the tail, not from what this node happens to
        // have applied: a node that is merely behind would claim an epoch that
        // is already taken and lose to a claim it had not read yet.
        self.catch_up_to_tail(Instant::now() + self.info.config.execute_timeout)
            .await?;
        self.claim_caught_up().await
    }

    /// Claims the epoch after the newest this node has applied; the caller
    /// has just caught up with the tail.
    async fn claim_caught_up(&self) -> Result<u64, Error> {
        self.check_running()?;
        let epoch = self.applied.state.lock().leadership.epoch + 1;
        let claim = Control::AssumeLeadership { epoch };
        let read_back = self
            .round_trip(claim, self.info.config.execute_timeout)
            .await?;
        if read_back.accepted {
            tracing::info!(node = %self.info.node_id, epoch, "won leadership");
            Ok(epoch)
        } else {
            let lead = self.applied.state.lock().leadership.clone();
            Err(Error::NotLeader {
                leader: lead.leader,
                epoch: lead.epoch,
            })
        }
    }

    async fn heartbeat(&self, epoch: u64, timeout: Duration) {
        match self.round_trip(Control::Heartbeat { epoch }, timeout).await {
            Ok(read_back) if !read_back.accepted => {
                tracing::info!(node = %self.info.node_id, epoch, "heartbeat refused: this node was deposed");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(node = %self.info.node_id, epoch, error = %e, "heartbeat failed");
            }
        }
    }

    async fn try_claim(&self, config: &LeadershipConfig, leaderless_start: bool) -> Attempt {
        // A node that cannot catch up within an election timeout is too far
        // behind to judge the leader dead, let alone to lead.
        let deadline = Instant::now() + config.election_timeout;
        if let Err(e) = self.catch_up_to_tail(deadline).await {
            tracing::warn!(node = %self.info.node_id, error = %e, "could not catch up before claiming leadership");
            return Attempt::Failed;
        }
        let lead = self.applied.state.lock().leadership.clone();
        let silent = if leaderless_start {
            lead.epoch == 0
        } else {
            self.leader_watch.silent_since().elapsed() >= config.election_timeout
        };
        if !silent || lead.leader.as_ref() == Some(&self.info.node_id) {
            return Attempt::NotNeeded;
        }
        tracing::info!(node = %self.info.node_id, epoch = lead.epoch, leader = ?lead.leader, "leader silent; claiming the next epoch");
        // Caught up above: claim without asking for the tail a second time.
        match self.claim_caught_up().await {
            Ok(_) => Attempt::Won,
            Err(Error::NotLeader { .. }) => Attempt::NotNeeded,
            Err(e) => {
                tracing::warn!(node = %self.info.node_id, error = %e, "leadership claim failed");
                Attempt::Failed
            }
        }
    }
}

/// Heartbeats while this node leads; claims the next epoch after silence
/// while it follows. Ends with the engine.
pub(super) async fn drive<M: Model>(node: Arc<Node<M>>, config: LeadershipConfig) {
    let mut shutdown = node.submitter.shutdown.subscribe();
    let mut status = node.submitter.status.subscribe();
    let mut signals = node.leader_watch.signals.subscribe();
    let mut next_heartbeat: Option<Instant> = None;
    let mut hold_until: Option<Instant> = None;
    let mut leaderless_start = config.auto_claim && config.claim_at_start;
    loop {
        if *shutdown.borrow_and_update() || node.check_running().is_err() {
            return;
        }
        status.borrow_and_update();
        signals.borrow_and_update();
        let lead = node.applied.state.lock().leadership.clone();
        let now = Instant::now();
        let wake_at = if lead.leader.as_ref() == Some(&node.info.node_id) {
            leaderless_start = false;
            // On becoming leader (or restarting as one) beat at once: the
            // followers' clocks have been running since the last signal.
            let due = *next_heartbeat.get_or_insert(now);
            if due <= now {
                next_heartbeat = Some(now + config.heartbeat_interval);
                node.heartbeat(lead.epoch, config.election_timeout).await;
                continue;
            }
            Some(due)
        } else if config.auto_claim {
            next_heartbeat = None;
            let starting = leaderless_start && lead.epoch == 0;
            let due = if starting {
                now
            } else {
                node.leader_watch.silent_since() + config.election_timeout
            };
            let due = hold_until.map_or(due, |hold| due.max(hold));
            if due <= now {
                leaderless_start = false;
                if node.try_claim(&config, starting).await != Attempt::Won {
                    // Whatever went wrong, do not retry in a tight loop.
                    hold_until = Some(Instant::now() + config.heartbeat_interval);
                }
                continue;
            }
            Some(due)
        } else {
            next_heartbeat = None;
            None
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = status.changed() => {}
            _ = signals.changed() => {}
            _ = sleep_until(wake_at) => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
