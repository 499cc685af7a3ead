//! `memstate upgrade`: the stream's model versions, for rolling upgrades
//! (see `docs/upgrades.md`).
//!
//! `status` reads the log (never writes) and prints the active model version
//! and what each live node announced it reads; `activate` and `forget` append
//! one control record each, which every node applies alike.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Args, Subcommand};
use memstate_core::envelope::{encode_envelope, encode_frame};
use memstate_core::history::History;
use memstate_core::{Body, CommandId, Control, Envelope, ModelVersions, NodeId, Stream};
use serde_json::{Value, json};

use crate::CliError;
use crate::backend::{BackendArgs, BackendKind};

/// The stream's model versions: status, activation, forgetting a node.
#[derive(Debug, Clone, Args)]
pub struct UpgradeArgs {
    #[command(subcommand)]
    pub action: Action,
}

/// What to do.
#[derive(Debug, Clone, Subcommand)]
pub enum Action {
    /// Print the active model version, each live node's readable version,
    /// and which version can be activated now (JSON).
    Status {
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Make VERSION the stream's active model version: refused while a live
    /// node announced it cannot read it.
    Activate {
        /// The model version to activate.
        version: u32,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Record that NODE has left for good (it crashed and will not come back
    /// under this id), so it no longer holds activations back.
    Forget {
        /// The node id.
        node: String,
        #[command(flatten)]
        backend: BackendArgs,
    },
}

/// Runs the action; `Ok(false)` when an activation is refused.
pub async fn run(args: UpgradeArgs) -> Result<bool, CliError> {
    match args.action {
        Action::Status { backend } => {
            let stream = open(&backend).await?;
            let versions = read(&stream, None).await?;
            println!("{}", status_json(&versions));
            Ok(true)
        }
        Action::Activate { version, backend } => {
            let stream = open(&backend).await?;
            let before = read(&stream, None).await?;
            let blocking = before.blocking(version);
            if version < before.active || !blocking.is_empty() {
                eprintln!("{}", refusal(version, &before));
                return Ok(false);
            }
            let after = append_and_read(&stream, Control::Activate { version }).await?;
            if after.active == version {
                eprintln!("model version {version} is active");
                Ok(true)
            } else {
                // A node announced itself between the check and the record.
                eprintln!("{}", refusal(version, &after));
                Ok(false)
            }
        }
        Action::Forget { node, backend } => {
            let stream = open(&backend).await?;
            let node = NodeId::new(node);
            let after = append_and_read(&stream, Control::Depart { node: node.clone() }).await?;
            eprintln!("forgot node {node}");
            println!("{}", status_json(&after));
            Ok(true)
        }
    }
}

async fn open(backend: &BackendArgs) -> Result<std::sync::Arc<dyn Stream>, CliError> {
    let named = match backend.backend {
        BackendKind::File => backend.dir.is_some(),
        _ => backend.stream_name.is_some(),
    };
    if !named {
        return Err(CliError::Backend(
            "memstate upgrade works on an existing stream: name it with --dir (file) or --stream-name".into(),
        ));
    }
    backend.open().await?.client().await
}

/// Reads the log up to `until` (else its head) and returns its model versions.
async fn read(
    stream: &std::sync::Arc<dyn Stream>,
    until: Option<memstate_core::Cursor>,
) -> Result<ModelVersions, CliError> {
    let history = History::<Value>::open(std::sync::Arc::clone(stream)).await?;
    let mut history = match until {
        Some(cursor) => history.until(cursor),
        None => history.until_head().await?,
    };
    while history.next().await?.is_some() {}
    Ok(history.model_versions().clone())
}

/// Appends one control record from this tool and reads the log up to it.
async fn append_and_read(
    stream: &std::sync::Arc<dyn Stream>,
    control: Control,
) -> Result<ModelVersions, CliError> {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let envelope = Envelope {
        id: CommandId::random(),
        origin: NodeId::new("memstate-upgrade"),
        ts,
        epoch: None,
        model_version: 1,
        reads: 1,
        body: Body::Control(control),
    };
    let encoded = encode_envelope(&envelope)
        .map_err(|e| CliError::Backend(format!("cannot encode the control record: {e}")))?;
    let frame = Bytes::from(encode_frame([encoded.as_slice()]));
    let cursors = stream
        .append(vec![frame])
        .await
        .map_err(|e| CliError::Backend(format!("cannot append to {}: {e}", stream.describe())))?;
    let cursor = cursors
        .into_iter()
        .next()
        .ok_or_else(|| CliError::Backend("the append returned no cursor".into()))?;
    read(stream, Some(cursor)).await
}

fn status_json(versions: &ModelVersions) -> Value {
    let nodes: serde_json::Map<String, Value> = versions
        .nodes
        .iter()
        .map(|(node, reads)| (node.to_string(), json!(reads)))
        .collect();
    // The highest version every live node reads: what can be activated now.
    let readable_by_all = versions.nodes.values().min().copied();
    json!({
        "active_version": versions.active,
        "nodes_read_up_to": nodes,
        "activatable_up_to": readable_by_all.map(|v| v.max(versions.active)),
    })
}

fn refusal(version: u32, versions: &ModelVersions) -> String {
    memstate_core::Error::ActivationRefused {
        version,
        active: versions.active,
        blocking: versions.blocking(version),
    }
    .to_string()
}
