//! `/metrics`: the figures the engine records through the `metrics` facade,
//! exported in Prometheus text format.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusBuilder;
pub use metrics_exporter_prometheus::PrometheusHandle;

use crate::{ApiError, AppState, Hosted};

/// Latency buckets, seconds: from half a millisecond to ten seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

static INSTALLED: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs a Prometheus recorder as this process's `metrics` recorder (once;
/// later calls return the same handle) and describes memstate's metrics.
/// Install it before starting engines: an engine takes its metric handles
/// when it starts.
///
/// # Errors
///
/// Another recorder was installed first (an application with its own
/// exporter: the engine's figures already go there).
pub fn install_prometheus() -> Result<PrometheusHandle, String> {
    INSTALLED
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| format!("cannot install the Prometheus recorder: {e}"))?;
            memstate_core::metrics::describe();
            Ok(handle)
        })
        .clone()
}

pub(crate) async fn render<M: Hosted>(
    State(state): State<Arc<AppState<M>>>,
) -> Result<Response, ApiError> {
    let handle = state.prometheus.as_ref().ok_or_else(|| {
        ApiError::not_found(
            "metrics_disabled",
            "this server exports no metrics (ServerBuilder::prometheus was not set)",
        )
    })?;
    handle.run_upkeep();
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response())
}
