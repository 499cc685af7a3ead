//! What a node is and how it was configured: fixed once it starts.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::leadership::LeadershipConfig;
use crate::envelope::{Body, CommandId, Control, Envelope, NodeId};
use crate::events::EventWindow;
use crate::settings::Settings;
use crate::stream::Stream;

/// Tunables that stay local to a node (not replicated).
#[derive(Clone, Debug)]
pub(super) struct LocalConfig {
    pub(super) execute_timeout: Duration,
    pub(super) read_timeout: Duration,
    pub(super) startup_timeout: Duration,
    pub(super) append_timeout: Duration,
    pub(super) max_in_flight_appends: usize,
    pub(super) min_in_flight_appends: usize,
    pub(super) adaptive_in_flight: bool,
    pub(super) max_frame_bytes: usize,
    pub(super) queue_capacity: usize,
    pub(super) resubscribe_attempts: u32,
    pub(super) leadership: Option<LeadershipConfig>,
    pub(super) event_window: EventWindow,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            execute_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(30),
            startup_timeout: Duration::from_secs(600),
            append_timeout: Duration::from_secs(60),
            max_in_flight_appends: 256,
            min_in_flight_appends: 32,
            adaptive_in_flight: true,
            max_frame_bytes: usize::MAX,
            queue_capacity: 16 * 1024,
            resubscribe_attempts: 5,
            leadership: None,
            event_window: EventWindow::default(),
        }
    }
}

/// Who this node is and what it was configured with; fixed after start.
#[derive(Debug)]
pub(super) struct NodeInfo {
    pub(super) node_id: NodeId,
    pub(super) stream: Arc<dyn Stream>,
    /// This node's replicated settings (they must match the stream's Genesis).
    pub(super) settings: Settings,
    pub(super) config: LocalConfig,
    /// The largest frame this node writes: the stream's record limit, or less.
    pub(super) frame_limit: usize,
    /// Whether the stream reports its head exactly (else reads use a marker).
    pub(super) exact_head: bool,
    /// The newest model version this build reads (`Model::VERSION`),
    /// announced in this node's Genesis restatement.
    pub(super) reads: u32,
}

impl NodeInfo {
    /// A fresh envelope from this node, stamped with its clock; a Genesis
    /// restatement carries this node's announcement.
    pub(super) fn envelope(&self, body: Body) -> Envelope {
        let reads = match &body {
            Body::Control(Control::Genesis(_)) => self.reads,
            _ => 1,
        };
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Envelope {
            id: CommandId::random(),
            origin: self.node_id.clone(),
            ts,
            epoch: None,
            model_version: 1,
            reads,
            body,
        }
    }
}
