//! The HTTP tier: what the HTTP edge costs on top of the engine.
//!
//! One engine of the built-in key-value model on a file journal, served in
//! this process by the same server `memstate serve` builds
//! ([`crate::serve::kv_server`]) on a loopback port. Two tiers alternate on
//! that one engine, so on the same journal, in the same run:
//!
//! - `embedded`: `Engine::execute(KvCommand::Put)`, as an application that
//!   links the library calls it;
//! - `http`: `POST /commands/put` with the same key and value as JSON and a
//!   fresh `Idempotency-Key`, from closed-loop clients on keep-alive
//!   connections (hyper's client); a request counts when it answered `200`
//!   and its body says the command was applied (not `already_applied`).
//!
//! The clients run in the same process and on the same cores as the server:
//! their own HTTP work is part of what the tier measures.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use memstate_core::{Engine, Stream};
use memstate_file::FileStream;
use memstate_server::kv::{KvCommand, KvStore};
use serde::{Deserialize, Serialize};

use super::load::{Measurement, closed_loop};
use super::report::{cells, opt};
use super::tiers::start_engine;
use super::workload::mix;
use super::{Extra, Plan};

/// A response body larger than this is an error (a `put` answer is ~200 bytes).
const RESPONSE_LIMIT: usize = 64 * 1024;

/// The tier's figures.
#[derive(Debug, Serialize)]
pub(crate) struct HttpTier {
    /// Concurrent clients of each pass.
    pub clients: usize,
    /// Distinct keys the `put`s spread over.
    pub keys: u64,
    /// Bytes of one request body (the first one; they differ by a few digits).
    pub body_bytes: usize,
    /// The best round of `Engine::execute`.
    pub embedded: Measurement,
    /// The best round of `POST /commands/put`.
    pub http: Measurement,
    /// `http.per_sec / embedded.per_sec`.
    pub ratio: f64,
    /// Every round, in the order run.
    pub rounds: Vec<Round>,
    /// Commands the HTTP clients got a fresh `200` for, warm-up included.
    pub http_acknowledged: u64,
    /// Commands `Engine::execute` returned for, warm-up included.
    pub embedded_acknowledged: u64,
    /// The engine's applied index at the end (every acknowledged command is in it).
    pub applied_index: u64,
}

/// One round: both tiers, in the order they ran.
#[derive(Debug, Serialize)]
pub(crate) struct Round {
    pub http_first: bool,
    pub embedded: Measurement,
    pub http: Measurement,
}

/// The part of a write response the clients check.
#[derive(Deserialize)]
struct Answer {
    index: u64,
    already_applied: bool,
}

/// Runs the tier in a directory under `work`.
pub(crate) async fn run(plan: &Plan, clients: usize, work: &Path) -> Extra {
    let dir = work.join("http");
    let result = measure(plan, clients, &dir).await;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    match result {
        Ok(tier) => Extra::new("http", serde_json::to_value(&tier), table(&tier), false),
        Err(e) => Extra::new(
            "http",
            Ok(serde_json::json!({ "error": e })),
            format!("\nhttp: FAILED: {e}\n"),
            true,
        ),
    }
}

/// The key and value of client `client`'s `seq`-th `put`.
fn put(keys: u64, client: usize, seq: u64) -> (String, serde_json::Value) {
    let key = mix(((client as u64) << 40) ^ seq) % keys.max(1);
    (
        format!("key/{key:07}"),
        serde_json::json!({ "client": client, "seq": seq }),
    )
}

/// Starts the engine and the server, runs the rounds, stops both.
async fn measure(plan: &Plan, clients: usize, dir: &Path) -> Result<HttpTier, String> {
    let clients = clients.max(1);
    plan.progress(&format!(
        "http: {clients} clients, POST /commands/put against Engine::execute, file journal"
    ));
    // As `memstate serve` does, before the engine starts (it takes its metric
    // handles then): both tiers record the same figures.
    let prometheus = memstate_server::install_prometheus()?;
    let stream: Arc<dyn Stream> = Arc::new(
        FileStream::open(dir)
            .await
            .map_err(|e| format!("opening {}: {e}", dir.display()))?,
    );
    let engine = start_engine(KvStore::default(), stream, "bench-http", plan).await?;
    let served = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => match listener.local_addr() {
            Ok(addr) => Ok((listener, addr)),
            Err(e) => Err(format!("the listener has no address: {e}")),
        },
        Err(e) => Err(format!("cannot listen on 127.0.0.1: {e}")),
    };
    let (listener, addr) = match served {
        Ok(served) => served,
        Err(e) => {
            engine.shutdown().await;
            return Err(e);
        }
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = crate::serve::kv_server(&engine, prometheus).build();
    let serving = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    let result = rounds(plan, &engine, addr, clients).await;
    let _ = stop.send(());
    // The clients are gone, so their connections are closed; do not hang on a straggler.
    let _ = tokio::time::timeout(Duration::from_secs(10), serving).await;
    let applied_index = engine.stats().applied_index;
    engine.shutdown().await;
    let mut tier = result?;
    tier.applied_index = applied_index;
    let acknowledged = tier.http_acknowledged + tier.embedded_acknowledged;
    if applied_index < acknowledged {
        return Err(format!(
            "{acknowledged} commands were acknowledged but the engine applied only {applied_index}"
        ));
    }
    plan.progress(&format!(
        "http: {:.0} commands/s over HTTP (p99 {} ms), {:.0} embedded (p99 {} ms)",
        tier.http.per_sec,
        opt(tier.http.p99_ms),
        tier.embedded.per_sec,
        opt(tier.embedded.p99_ms)
    ));
    Ok(tier)
}

/// `plan.rounds` rounds of both tiers, alternating which goes first.
async fn rounds(
    plan: &Plan,
    engine: &Engine<KvStore>,
    addr: SocketAddr,
    clients: usize,
) -> Result<HttpTier, String> {
    let http = HttpLoad {
        client: Client::builder(TokioExecutor::new()).build_http(),
        uri: format!("http://{addr}/commands/put")
            .parse()
            .map_err(|e| format!("the server's address makes no URI: {e}"))?,
        run: uuid::Uuid::new_v4().simple().to_string(),
        keys: plan.accounts,
        acknowledged: Arc::new(AtomicU64::new(0)),
    };
    let embedded_acknowledged = Arc::new(AtomicU64::new(0));
    let mut all = Vec::new();
    for round in 0..plan.rounds {
        let http_first = round % 2 == 1;
        let (embedded, over_http) = if http_first {
            let h = http.pass(plan, clients, round).await?;
            let e = embedded_pass(plan, engine, clients, &embedded_acknowledged).await?;
            (e, h)
        } else {
            let e = embedded_pass(plan, engine, clients, &embedded_acknowledged).await?;
            (e, http.pass(plan, clients, round).await?)
        };
        all.push(Round {
            http_first,
            embedded,
            http: over_http,
        });
    }
    let best = |pick: fn(&Round) -> &Measurement| {
        all.iter()
            .map(pick)
            .max_by(|a, b| a.per_sec.total_cmp(&b.per_sec))
            .cloned()
            .ok_or_else(|| "no round ran".to_owned())
    };
    let embedded = best(|r| &r.embedded)?;
    let over_http = best(|r| &r.http)?;
    let (key, value) = put(plan.accounts, 0, 0);
    Ok(HttpTier {
        clients,
        keys: plan.accounts,
        body_bytes: serde_json::to_vec(&serde_json::json!({ "key": key, "value": value }))
            .map_or(0, |b| b.len()),
        ratio: over_http.per_sec / embedded.per_sec.max(f64::EPSILON),
        embedded,
        http: over_http,
        rounds: all,
        http_acknowledged: http.acknowledged.load(Ordering::Relaxed),
        embedded_acknowledged: embedded_acknowledged.load(Ordering::Relaxed),
        applied_index: 0,
    })
}

async fn embedded_pass(
    plan: &Plan,
    engine: &Engine<KvStore>,
    clients: usize,
    acknowledged: &Arc<AtomicU64>,
) -> Result<Measurement, String> {
    let (engine, acknowledged, keys) = (engine.clone(), Arc::clone(acknowledged), plan.accounts);
    closed_loop(clients, plan.budget, move |client, seq| {
        let (engine, acknowledged) = (engine.clone(), Arc::clone(&acknowledged));
        async move {
            let (key, value) = put(keys, client, seq);
            engine
                .execute(KvCommand::Put { key, value })
                .await
                .map_err(|e| format!("Engine::execute failed: {e}"))?;
            acknowledged.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    })
    .await
}

/// What every HTTP client shares.
#[derive(Clone)]
struct HttpLoad {
    client: Client<HttpConnector, Body>,
    uri: Uri,
    /// Makes this run's idempotency keys its own.
    run: String,
    keys: u64,
    acknowledged: Arc<AtomicU64>,
}

impl HttpLoad {
    async fn pass(&self, plan: &Plan, clients: usize, round: usize) -> Result<Measurement, String> {
        let load = self.clone();
        closed_loop(clients, plan.budget, move |client, seq| {
            let load = load.clone();
            async move { load.post(round, client, seq).await }
        })
        .await
    }

    async fn post(&self, round: usize, client: usize, seq: u64) -> Result<(), String> {
        let (key, value) = put(self.keys, client, seq);
        let body = serde_json::to_vec(&serde_json::json!({ "key": key, "value": value }))
            .map_err(|e| format!("encoding a put: {e}"))?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                "idempotency-key",
                format!("{}-{round}-{client}-{seq}", self.run),
            )
            .body(Body::from(body))
            .map_err(|e| format!("building a request: {e}"))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("POST /commands/put: {e}"))?;
        let status = response.status();
        let bytes = axum::body::to_bytes(Body::new(response.into_body()), RESPONSE_LIMIT)
            .await
            .map_err(|e| format!("reading the answer to POST /commands/put: {e}"))?;
        if status != StatusCode::OK {
            return Err(format!(
                "POST /commands/put answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        let answer: Answer = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the answer to POST /commands/put is not a write: {e}"))?;
        if answer.already_applied || answer.index == 0 {
            return Err(format!(
                "a fresh Idempotency-Key was answered as already applied (index {})",
                answer.index
            ));
        }
        self.acknowledged.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The tier's lines of the printed table.
fn table(tier: &HttpTier) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nhttp (built-in key-value model, one engine on a file journal, {} clients, put over {} keys, {}-byte bodies)",
        tier.clients, tier.keys, tier.body_bytes
    );
    let _ = writeln!(
        out,
        "{:>8} | cmd/s  p50 p99 p999 (ms)  CPU µs/command (process)",
        "tier"
    );
    for (name, m) in [("embedded", &tier.embedded), ("http", &tier.http)] {
        let _ = writeln!(out, "{name:>8} | {}", cells(m));
    }
    let _ = writeln!(out, "{:>8} | http/embedded {:.2}", "", tier.ratio);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(operations: u64, rounds: usize) -> Plan {
        Plan::for_tests(vec![4], operations, rounds)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_tiers_run_their_commands_on_one_journal() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let tier = measure(&plan(24, 2), 4, &dir.path().join("http")).await?;
        assert_eq!(tier.rounds.len(), 2);
        assert!(tier.rounds[1].http_first && !tier.rounds[0].http_first);
        for round in &tier.rounds {
            assert_eq!((round.embedded.ops, round.http.ops), (24, 24));
        }
        assert!(tier.http.per_sec > 0.0 && tier.embedded.per_sec > 0.0);
        assert!(tier.http.p99_ms.is_some() && tier.embedded.p99_ms.is_some());
        assert_eq!(
            (tier.http_acknowledged, tier.embedded_acknowledged),
            (48, 48)
        );
        assert!(tier.applied_index >= 96, "applied {}", tier.applied_index);
        assert!(tier.body_bytes > 20, "{}", tier.body_bytes);
        #[cfg(target_os = "linux")]
        for round in &tier.rounds {
            assert!(round.http.cpu_us_per_op.is_some(), "{round:?}");
            assert!(round.embedded.cpu_us_per_op.is_some(), "{round:?}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_failed_tier_is_reported_as_failed() -> Result<(), String> {
        // A regular file where the journal's parent directory should be.
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, b"not a directory").map_err(|e| e.to_string())?;
        let extra = run(&plan(4, 1), 2, &blocked).await;
        assert!(extra.failed);
        assert!(extra.table.contains("http: FAILED"), "{}", extra.table);
        Ok(())
    }

    #[test]
    fn puts_spread_over_the_keys() {
        let keys: std::collections::BTreeSet<String> =
            (0..200).map(|seq| put(10, 3, seq).0).collect();
        assert_eq!(keys.len(), 10);
        assert_eq!(put(10, 1, 5), put(10, 1, 5));
    }
}
