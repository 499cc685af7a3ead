//! Model versions on a running node: activation and departure, both control
//! records that the log decides (`replicated.rs`), and the node's view of them.

use std::time::Duration;

use super::Node;
use super::replicated::ModelVersions;
use crate::envelope::{Control, NodeId};
use crate::error::Error;
use crate::model::Model;
use crate::stream::StreamError;

/// How long a departing node waits for its departure to come back (the
/// record usually lands even when the wait runs out: a slow read-back must
/// not hold a shutdown up for long).
const DEPART_TIMEOUT: Duration = Duration::from_secs(2);

impl<M: Model> Node<M> {
    /// The model versions as far as this node has applied the log.
    pub(super) fn model_versions(&self) -> ModelVersions {
        self.applied.state.lock().versions.clone()
    }

    /// Appends an activation of `version` and waits until it is applied;
    /// returns its applied index.
    pub(super) async fn activate(&self, version: u32) -> Result<u64, Error> {
        self.check_running()?;
        let timeout = self.info.config.execute_timeout;
        let applied = self
            .round_trip(Control::Activate { version }, timeout)
            .await?;
        if applied.accepted {
            return Ok(applied.index);
        }
        let versions = self.model_versions();
        Err(Error::ActivationRefused {
            version,
            active: versions.active,
            blocking: versions.blocking(version),
        })
    }

    /// Appends a departure of `node` (this node on shutdown, or one an
    /// operator knows is gone) and waits until it is applied.
    pub(super) async fn depart(&self, node: NodeId, timeout: Duration) -> Result<u64, Error> {
        self.check_running()?;
        let applied = self.round_trip(Control::Depart { node }, timeout).await?;
        Ok(applied.index)
    }

    /// On a clean shutdown of a running node: its announcement stops holding
    /// activations back. Best effort: a node that cannot append now is
    /// forgotten by an operator later.
    pub(super) async fn depart_on_shutdown(&self) {
        if self.check_running().is_err() {
            return;
        }
        let me = self.info.node_id.clone();
        match self.depart(me, DEPART_TIMEOUT).await {
            Ok(_) | Err(Error::ShutDown | Error::Halted(_)) => {}
            Err(Error::Stream(StreamError::Closed)) => {}
            Err(error) => {
                tracing::warn!(node = %self.info.node_id, %error, "could not record this node's departure; forget it with `memstate upgrade forget` if it does not come back")
            }
        }
    }
}
