//! Two `memstate serve` processes on one file journal, driven by a client
//! that is not Rust (Python's standard library), and what the processes log.

mod common;

use std::process::Command;

use common::{Served, http};

#[test]
fn a_python_client_sees_one_cluster_of_two_serve_processes() {
    let dir = tempfile::tempdir().unwrap();
    let a = Served::start(dir.path(), "node-a", &["--body-limit", "4096"], &[]);
    let b = Served::start(dir.path(), "node-b", &["--body-limit", "4096"], &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/serve_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&a.url)
        .arg(&b.url)
        .output()
        .expect("python3 is installed (.ci/run installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the Python client failed:\n{stdout}\n{stderr}\nnode a: {}\nnode b: {}",
        a.stop(),
        b.stop()
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

#[test]
fn the_bearer_token_is_required_and_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let token = "tok-5f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let node = Served::start(
        dir.path(),
        "guarded",
        &[],
        &[("MEMSTATE_TOKEN", token), ("RUST_LOG", "trace")],
    );
    let put = "{\"key\":\"a\",\"value\":1}";
    let denied = http("POST", &node.addr, "/commands/put", &[], put);
    assert_eq!(denied.status, 401, "{}", denied.body);
    let wrong = http(
        "POST",
        &node.addr,
        "/commands/put",
        &[("Authorization", "Bearer tok-wrong")],
        put,
    );
    assert_eq!(wrong.status, 401);
    let bearer = format!("Bearer {token}");
    let ok = http(
        "POST",
        &node.addr,
        "/commands/put",
        &[("Authorization", &bearer)],
        put,
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    let read = http(
        "GET",
        &node.addr,
        "/queries/get?key=a",
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(read.json()["value"], 1);
    assert_eq!(http("GET", &node.addr, "/healthz", &[], "").status, 200);
    let logs = node.stop();
    assert!(
        logs.contains("/commands/put") && logs.to_lowercase().contains("authorization"),
        "trace logging was on, so the requests and their headers are logged: {logs}"
    );
    assert!(!logs.contains(token), "the token appeared in the logs");
    assert!(
        !logs.contains("tok-wrong"),
        "an offered token appeared in the logs"
    );
}
