//! Three `memstate serve` processes on one Kafka topic, and three on one
//! Kinesis stream, driven by the Python client of `serve_cluster`
//! (`serve_client.py`): writes through one node, read-your-writes on the
//! others by the write's index, a retry sent to another node applied once,
//! concurrent writers converging on every node, every bad-input status.
//!
//! A backend whose endpoint variable (`MEMSTATE_KAFKA_BOOTSTRAP`,
//! `MEMSTATE_KINESIS_ENDPOINT`) is not set shows as ignored, with the reason
//! on stderr; when `MEMSTATE_REQUIRE` names it, it fails instead. Each run
//! uses a topic or stream of its own (`memstate-serve-test-<uuid>`), left on
//! the server afterwards.

mod common;

use std::ffi::OsStr;
use std::process::Command;

use common::Served;
use libtest_mimic::{Arguments, Failed, Trial};

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

struct Backend {
    /// `memstate serve --backend` and `MEMSTATE_REQUIRE`'s name.
    name: &'static str,
    /// The variable naming the endpoint, and the option that passes it.
    variable: &'static str,
    option: &'static str,
    /// How to start the server when the variable is not set.
    hint: &'static str,
}

const BACKENDS: [Backend; 2] = [
    Backend {
        name: "kafka",
        variable: "MEMSTATE_KAFKA_BOOTSTRAP",
        option: "--bootstrap",
        hint: "integration-tests/scripts/kafka.sh start, or make backends-up",
    },
    Backend {
        name: "kinesis",
        variable: "MEMSTATE_KINESIS_ENDPOINT",
        option: "--endpoint",
        hint: "integration-tests/scripts/kinesis.sh start, or make backends-up",
    },
];

fn required(name: &str) -> bool {
    std::env::var("MEMSTATE_REQUIRE")
        .map(|v| v.split(',').any(|s| s.trim() == name))
        .unwrap_or(false)
}

/// Starts the three nodes one after the other (the first creates the topic
/// or stream) and runs the Python client against them.
fn three_nodes_on_one_stream(backend: &Backend, endpoint: &str) -> Result<(), Failed> {
    let stream = format!("memstate-serve-test-{}", uuid::Uuid::new_v4().simple());
    let args = [
        "--backend",
        backend.name,
        backend.option,
        endpoint,
        "--stream-name",
        &stream,
    ]
    .map(OsStr::new);
    let nodes: Vec<Served> = NODES
        .iter()
        .map(|id| {
            // The client's 413 check needs node A's small body limit.
            Served::start_on(&args, id, &["--body-limit", "4096"], &[])
        })
        .collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/serve_client.py");
    let out = Command::new("python3")
        .arg(script)
        .args(nodes.iter().map(|n| &n.url))
        .output()
        .map_err(|e| format!("cannot run python3 (.ci/run installs it): {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{} {stream}:\n{stdout}", backend.name);
    if !out.status.success() || !stdout.contains(" passed, 0 failed") {
        let logs: Vec<String> = nodes
            .into_iter()
            .zip(NODES)
            .map(|(node, id)| format!("{id}: {}", node.stop()))
            .collect();
        return Err(format!(
            "the Python client failed on {} {stream}:\n{stdout}\n{stderr}\n{}",
            backend.name,
            logs.join("\n")
        )
        .into());
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let trials = BACKENDS
        .into_iter()
        .map(|backend| {
            let name = format!("{}_three_serve_processes_on_one_stream", backend.name);
            let endpoint = std::env::var(backend.variable)
                .ok()
                .filter(|v| !v.trim().is_empty());
            match endpoint {
                Some(endpoint) => {
                    Trial::test(name, move || three_nodes_on_one_stream(&backend, &endpoint))
                }
                None if required(backend.name) => Trial::test(name, move || {
                    Err(format!(
                        "MEMSTATE_REQUIRE names {} but {} is not set ({})",
                        backend.name, backend.variable, backend.hint
                    )
                    .into())
                }),
                None => {
                    let reason = format!("{} is not set ({})", backend.variable, backend.hint);
                    eprintln!("{name}: not run: {reason}");
                    // Run anyway (--include-ignored), it fails: nothing was tested.
                    Trial::test(name, move || Err(reason.into())).with_ignored_flag(true)
                }
            }
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
