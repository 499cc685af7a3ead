//! The cluster tier: several nodes, each a separate OS process (`memstate
//! bench-node`), on one stream of each backend that runs here.
//!
//! Per backend, one after the other with the same node processes:
//! - `pair`: node 0 writes at a fixed rate while node 1 runs `Linearizable`
//!   reads; every node notes when it applied each of node 0's commands, so
//!   the delay from node 0 applying a command to node 1 applying it is
//!   measured per command;
//! - `spread`: every node writes, the closed-loop clients spread over the
//!   nodes; per node: throughput, `execute` percentiles, follower lag (send
//!   -> applied here, for the other nodes' commands) and its share of the
//!   commands;
//! - `alone`: node 0 alone with all the clients (the same total load), the
//!   reference for the fairness target.

pub(crate) mod node;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::load::{Budget, Measurement};
use super::report::Section;
use super::{BenchArgs, Extra, Plan};
use crate::backend::EndpointArgs;
use node::{NodeBackend, Phase, PhaseResult};

/// How long a node may take to start or to answer a phase beyond its length.
const NODE_TIMEOUT: Duration = Duration::from_secs(120);

/// The cluster tier over every backend that runs here.
#[derive(Debug, Serialize)]
pub(crate) struct Cluster {
    pub nodes: usize,
    pub clients: usize,
    pub pair_rate_per_sec: f64,
    pub seconds_per_phase: f64,
    pub backends: Vec<ClusterBackend>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ClusterBackend {
    pub backend: String,
    #[serde(flatten)]
    pub outcome: Section<ClusterFigures>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ClusterFigures {
    pub description: String,
    pub pair: Pair,
    pub spread: Vec<NodeFigures>,
    pub alone: Measurement,
    pub targets: Vec<Target>,
}

/// Node 0 writing at a fixed rate, node 1 reading.
#[derive(Debug, Serialize)]
pub(crate) struct Pair {
    pub writer_execute: Measurement,
    /// Node 1 applying a command minus node 0 applying it, ms.
    pub follower_delay_p50_ms: Option<f64>,
    pub follower_delay_p99_ms: Option<f64>,
    pub follower_delay_samples: usize,
    /// Send -> applied on node 1, ms.
    pub follower_lag_p50_ms: Option<f64>,
    pub follower_lag_p99_ms: Option<f64>,
    /// `Linearizable` reads on node 1, which did not write.
    pub reader: Measurement,
}

/// One node of the `spread` phase.
#[derive(Debug, Serialize)]
pub(crate) struct NodeFigures {
    pub node: u32,
    pub execute: Measurement,
    pub lag_p50_ms: Option<f64>,
    pub lag_p99_ms: Option<f64>,
    /// This node's commands among all the commands of the phase.
    pub share: f64,
}

/// A target of issue #21, met or missed in this run.
#[derive(Debug, Serialize)]
pub(crate) struct Target {
    pub target: String,
    pub met: bool,
    pub measured: String,
}

/// What the cluster tier runs on.
struct Backend {
    name: String,
    kind: NodeBackend,
    target: String,
    address: Option<String>,
    properties: Vec<String>,
    settle: Duration,
}

/// Runs the tier on every backend available.
pub(crate) async fn run(plan: &Plan, args: &BenchArgs, work: &Path) -> Extra {
    let nodes = args.cluster_nodes.max(2);
    let seconds = match plan.budget {
        Budget::Time { measure, .. } => measure.as_secs_f64(),
        Budget::Count(_) => 3.0,
    };
    let mut cluster = Cluster {
        nodes,
        clients: args.cluster_clients.max(1),
        pair_rate_per_sec: args.cluster_rate,
        seconds_per_phase: seconds,
        backends: Vec::new(),
    };
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut backends = vec![Backend {
        name: "file".into(),
        kind: NodeBackend::File,
        target: work.join("cluster-file").display().to_string(),
        address: None,
        properties: Vec::new(),
        settle: Duration::from_millis(500),
    }];
    if let Some(bootstrap) = EndpointArgs::given(&args.endpoints.bootstrap) {
        let variants: Vec<Vec<String>> = std::iter::once(Vec::new())
            .chain(args.cluster_kafka_variant.iter().map(|v| {
                v.split(';')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect()
            }))
            .collect();
        for (i, properties) in variants.into_iter().enumerate() {
            let name = if properties.is_empty() {
                "kafka".to_owned()
            } else {
                format!("kafka {}", properties.join(" "))
            };
            backends.push(Backend {
                name,
                kind: NodeBackend::Kafka,
                target: format!("memstate-bench-cluster-{i}-{run_id}"),
                address: Some(bootstrap.to_owned()),
                properties,
                settle: Duration::from_secs(1),
            });
        }
    } else {
        cluster
            .backends
            .push(not_run("kafka", "MEMSTATE_KAFKA_BOOTSTRAP is not set"));
    }
    if let Some(endpoint) = EndpointArgs::given(&args.endpoints.endpoint) {
        backends.push(Backend {
            name: "kinesis".into(),
            kind: NodeBackend::Kinesis,
            target: format!("memstate-bench-cluster-{run_id}"),
            address: Some(endpoint.to_owned()),
            properties: Vec::new(),
            settle: Duration::from_secs(2),
        });
    } else {
        cluster
            .backends
            .push(not_run("kinesis", "MEMSTATE_KINESIS_ENDPOINT is not set"));
    }
    cluster.backends.push(not_run(
        "eventstore",
        "no EventStoreDB/KurrentDB server runs on this machine",
    ));
    for backend in &backends {
        plan.progress(&format!(
            "cluster {}: {nodes} node processes, {} clients",
            backend.name, cluster.clients
        ));
        let outcome = match prepare(backend).await {
            Ok(()) => {
                let result = run_backend(plan, &cluster, backend).await;
                cleanup(backend).await;
                Section::from_result(result)
            }
            Err(e) => Section::Failed { error: e },
        };
        cluster.backends.push(ClusterBackend {
            backend: backend.name.clone(),
            outcome,
        });
    }
    let failed = cluster.backends.iter().any(|b| b.outcome.failed());
    let table = table(&cluster);
    Extra::new("cluster", serde_json::to_value(&cluster), table, failed)
}

fn not_run(backend: &str, reason: &str) -> ClusterBackend {
    ClusterBackend {
        backend: backend.into(),
        outcome: Section::NotRun {
            reason: reason.into(),
        },
    }
}

/// Creates the topic or stream the nodes share.
async fn prepare(backend: &Backend) -> Result<(), String> {
    match backend.kind {
        NodeBackend::File => Ok(()),
        NodeBackend::Kafka => {
            let config = kafka_config(backend)?;
            memstate_kafka::KafkaStream::create_topic(&config, 1)
                .await
                .map(drop)
                .map_err(|e| format!("creating topic {}: {e}", config.topic))
        }
        NodeBackend::Kinesis => {
            let config = kinesis_config(backend)?;
            memstate_kinesis::KinesisStream::connect(config)
                .await
                .map(drop)
                .map_err(|e| format!("creating stream {}: {e}", backend.target))
        }
    }
}

async fn cleanup(backend: &Backend) {
    let result = match backend.kind {
        NodeBackend::File => tokio::fs::remove_dir_all(&backend.target)
            .await
            .map_err(|e| e.to_string()),
        NodeBackend::Kafka => match kafka_config(backend) {
            Ok(config) => memstate_kafka::KafkaStream::delete_topic(&config)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        },
        NodeBackend::Kinesis => match kinesis_config(backend) {
            Ok(config) => match memstate_kinesis::KinesisStream::connect(config).await {
                Ok(stream) => stream.delete().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        tracing::warn!(target = %backend.target, error = %e, "could not remove a cluster benchmark stream");
    }
}

fn kafka_config(backend: &Backend) -> Result<memstate_kafka::KafkaConfig, String> {
    let address = backend.address.clone().ok_or("no Kafka bootstrap")?;
    Ok(memstate_kafka::KafkaConfig::new(
        address,
        backend.target.clone(),
    ))
}

fn kinesis_config(backend: &Backend) -> Result<memstate_kinesis::KinesisConfig, String> {
    let address = backend.address.clone().ok_or("no Kinesis endpoint")?;
    Ok(memstate_kinesis::KinesisConfig::emulator(
        address,
        backend.target.clone(),
    ))
}

/// A running node process.
struct NodeProcess {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl NodeProcess {
    async fn spawn(backend: &Backend, node: usize) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
        let mut command = tokio::process::Command::new(exe);
        command
            .arg("bench-node")
            .args(["--backend", backend_arg(backend.kind)])
            .args(["--target", &backend.target])
            .args(["--node", &node.to_string()]);
        if let Some(address) = &backend.address {
            command.args(["--address", address]);
        }
        for property in &backend.properties {
            command.args(["--property", property]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting node {node}: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(format!("node {node} has no pipes"));
        };
        Ok(Self {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        })
    }

    async fn line(&mut self, within: Duration) -> Result<String, String> {
        match tokio::time::timeout(within, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => Ok(line),
            Ok(Ok(None)) => Err("the node process exited".into()),
            Ok(Err(e)) => Err(format!("reading from the node process: {e}")),
            Err(_) => Err(format!("the node process did not answer within {within:?}")),
        }
    }

    async fn send(&mut self, line: &str) -> Result<(), String> {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| format!("writing to the node process: {e}"))
    }

    async fn stop(mut self) {
        let _ = self.send("stop").await;
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

fn backend_arg(kind: NodeBackend) -> &'static str {
    match kind {
        NodeBackend::File => "file",
        NodeBackend::Kafka => "kafka",
        NodeBackend::Kinesis => "kinesis",
    }
}

async fn run_backend(
    plan: &Plan,
    cluster: &Cluster,
    backend: &Backend,
) -> Result<ClusterFigures, String> {
    let mut nodes = Vec::new();
    // One at a time: the first one writes the Genesis record.
    for i in 0..cluster.nodes {
        let mut node = NodeProcess::spawn(backend, i).await?;
        node.line(NODE_TIMEOUT)
            .await
            .map_err(|e| format!("node {i} did not start: {e}"))?;
        nodes.push(node);
    }
    let result = phases(plan, cluster, backend, &mut nodes).await;
    for node in nodes {
        node.stop().await;
    }
    result
}

async fn phases(
    plan: &Plan,
    cluster: &Cluster,
    backend: &Backend,
    nodes: &mut [NodeProcess],
) -> Result<ClusterFigures, String> {
    let n = nodes.len();
    let secs = cluster.seconds_per_phase;
    let settle = backend.settle.as_secs_f64();
    let idle = |track| Phase {
        writers: 0,
        rate: None,
        readers: 0,
        seconds: secs,
        settle_seconds: settle,
        track,
    };
    let spread = |i: usize, secs: f64| Phase {
        writers: super::load::share(cluster.clients as u64, n, i) as usize,
        seconds: secs,
        ..idle(None)
    };
    // Warm-up: everyone writes a little, unmeasured.
    let warmup: Vec<Phase> = (0..n).map(|i| spread(i, (secs / 5.0).max(0.2))).collect();
    run_phase(nodes, &warmup).await?;

    let pair: Vec<Phase> = (0..n)
        .map(|i| match i {
            0 => Phase {
                rate: Some(cluster.pair_rate_per_sec),
                ..idle(Some(0))
            },
            1 => Phase {
                readers: 1,
                ..idle(Some(0))
            },
            _ => idle(Some(0)),
        })
        .collect();
    let pair = run_phase(nodes, &pair).await?;
    let (writer, follower) = (&pair[0], &pair[1]);
    let mut delays: Vec<Duration> = writer
        .applied
        .iter()
        .filter_map(|(seq, at)| {
            let there = follower.applied.get(seq)?;
            Some(Duration::from_nanos(there.saturating_sub(*at)))
        })
        .collect();
    let samples = delays.len();
    let delay = crate::stats::Latency::of(&mut delays);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pair = Pair {
        writer_execute: writer.execute.clone(),
        follower_delay_p50_ms: delay.map(|l| ms(l.p50)),
        follower_delay_p99_ms: delay.map(|l| ms(l.p99)),
        follower_delay_samples: samples,
        follower_lag_p50_ms: follower.lag_p50_ms,
        follower_lag_p99_ms: follower.lag_p99_ms,
        reader: follower.reads.clone(),
    };
    plan.progress(&format!(
        "cluster {}: pair: writer p50 {} ms, follower delay p99 {} ms, linearizable read p50 {} ms",
        backend.name,
        opt(pair.writer_execute.p50_ms),
        opt(pair.follower_delay_p99_ms),
        opt(pair.reader.p50_ms)
    ));

    let spread_phases: Vec<Phase> = (0..n).map(|i| spread(i, secs)).collect();
    let results = run_phase(nodes, &spread_phases).await?;
    // Every node applies every command: node 0's counts are the log's.
    let total: u64 = results[0].per_origin.values().sum();
    let spread: Vec<NodeFigures> = results
        .iter()
        .map(|r| NodeFigures {
            node: r.node,
            execute: r.execute.clone(),
            lag_p50_ms: r.lag_p50_ms,
            lag_p99_ms: r.lag_p99_ms,
            share: if total == 0 {
                0.0
            } else {
                results[0].per_origin.get(&r.node).copied().unwrap_or(0) as f64 / total as f64
            },
        })
        .collect();
    plan.progress(&format!(
        "cluster {}: spread: {}",
        backend.name,
        spread
            .iter()
            .map(|f| format!(
                "node {} {:.0}/s p99 {} ms lag p99 {} ms",
                f.node,
                f.execute.per_sec,
                opt(f.execute.p99_ms),
                opt(f.lag_p99_ms)
            ))
            .collect::<Vec<_>>()
            .join("; ")
    ));

    let alone: Vec<Phase> = (0..n)
        .map(|i| match i {
            0 => Phase {
                writers: cluster.clients,
                ..idle(None)
            },
            _ => idle(None),
        })
        .collect();
    let alone = run_phase(nodes, &alone).await?.swap_remove(0).execute;

    let targets = targets(&pair, &spread, &alone);
    Ok(ClusterFigures {
        description: format!(
            "{n} node processes on one {}; pair at {} commands/s; {} closed-loop clients",
            backend.name, cluster.pair_rate_per_sec, cluster.clients
        ),
        pair,
        spread,
        alone,
        targets,
    })
}

/// Sends every node its phase and collects the answers.
async fn run_phase(
    nodes: &mut [NodeProcess],
    phases: &[Phase],
) -> Result<Vec<PhaseResult>, String> {
    for (node, phase) in nodes.iter_mut().zip(phases) {
        let line = serde_json::to_string(phase).map_err(|e| e.to_string())?;
        node.send(&line).await?;
    }
    let mut results = Vec::with_capacity(nodes.len());
    for (i, (node, phase)) in nodes.iter_mut().zip(phases).enumerate() {
        let within = NODE_TIMEOUT + Duration::from_secs_f64(phase.seconds + phase.settle_seconds);
        let line = node
            .line(within)
            .await
            .map_err(|e| format!("node {i}: {e}"))?;
        let result: PhaseResult =
            serde_json::from_str(&line).map_err(|e| format!("node {i} answered {line:?}: {e}"))?;
        if let Some(e) = &result.error {
            return Err(format!("node {i}: {e}"));
        }
        results.push(result);
    }
    Ok(results)
}

fn targets(pair: &Pair, spread: &[NodeFigures], alone: &Measurement) -> Vec<Target> {
    let mut out = Vec::new();
    out.push(Target {
        target: "a second process applies a command within 1 ms (p99) of the writer applying it"
            .into(),
        met: pair.follower_delay_p99_ms.is_some_and(|d| d <= 1.0),
        measured: format!("p99 {} ms", opt(pair.follower_delay_p99_ms)),
    });
    out.push(Target {
        target: "Linearizable read p50 on a node that did not write <= the writer's execute p50"
            .into(),
        met: matches!((pair.reader.p50_ms, pair.writer_execute.p50_ms), (Some(r), Some(w)) if r <= w),
        measured: format!(
            "read p50 {} ms, execute p50 {} ms",
            opt(pair.reader.p50_ms),
            opt(pair.writer_execute.p50_ms)
        ),
    });
    let worst = spread
        .iter()
        .filter_map(|f| f.execute.p99_ms)
        .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
    out.push(Target {
        target: "each writer's execute p99 <= 2x one writer alone at the same total load".into(),
        met: matches!((worst, alone.p99_ms), (Some(w), Some(a)) if w <= 2.0 * a),
        measured: format!(
            "worst node p99 {} ms, alone p99 {} ms",
            opt(worst),
            opt(alone.p99_ms)
        ),
    });
    let least = spread.iter().map(|f| f.share).fold(f64::INFINITY, f64::min);
    out.push(Target {
        target: "no writer process gets under a quarter of the commands".into(),
        met: least.is_finite() && least >= 0.25,
        measured: format!("smallest share {:.1}%", least * 100.0),
    });
    out
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

/// The tier's lines of the printed table.
fn table(cluster: &Cluster) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\ncluster: {} node processes, {} clients spread over them, pair at {}/s, {} s per phase",
        cluster.nodes, cluster.clients, cluster.pair_rate_per_sec, cluster.seconds_per_phase
    );
    for backend in &cluster.backends {
        match &backend.outcome {
            Section::Run { result } => {
                let p = &result.pair;
                let _ = writeln!(
                    out,
                    "  {}: pair: writer execute p50/p99 {}/{} ms; follower delay p50/p99 {}/{} ms, lag p50/p99 {}/{} ms; linearizable read on the follower p50/p99 {}/{} ms",
                    backend.backend,
                    opt(p.writer_execute.p50_ms),
                    opt(p.writer_execute.p99_ms),
                    opt(p.follower_delay_p50_ms),
                    opt(p.follower_delay_p99_ms),
                    opt(p.follower_lag_p50_ms),
                    opt(p.follower_lag_p99_ms),
                    opt(p.reader.p50_ms),
                    opt(p.reader.p99_ms),
                );
                for f in &result.spread {
                    let _ = writeln!(
                        out,
                        "    node {}: {:>8.0}/s  execute p50/p99/p999 {}/{}/{} ms  follower lag p50/p99 {}/{} ms  share {:.1}%",
                        f.node,
                        f.execute.per_sec,
                        opt(f.execute.p50_ms),
                        opt(f.execute.p99_ms),
                        opt(f.execute.p999_ms),
                        opt(f.lag_p50_ms),
                        opt(f.lag_p99_ms),
                        f.share * 100.0
                    );
                }
                let _ = writeln!(
                    out,
                    "    alone (node 0, all clients): {:.0}/s  execute p50/p99/p999 {}/{}/{} ms",
                    result.alone.per_sec,
                    opt(result.alone.p50_ms),
                    opt(result.alone.p99_ms),
                    opt(result.alone.p999_ms)
                );
                for t in &result.targets {
                    let _ = writeln!(
                        out,
                        "    [{}] {}: {}",
                        if t.met { "met" } else { "MISSED" },
                        t.target,
                        t.measured
                    );
                }
            }
            Section::NotRun { reason } => {
                let _ = writeln!(out, "  {}: not run ({reason})", backend.backend);
            }
            Section::Failed { error } => {
                let _ = writeln!(out, "  {}: FAILED: {error}", backend.backend);
            }
        }
    }
    out
}
