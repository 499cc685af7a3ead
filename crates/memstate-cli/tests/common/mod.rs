//! `memstate serve` processes for tests, a minimal HTTP/1.1 client, and a
//! check of `memstate inspect`'s summary line.

// Test support: a failure here is a test failure.
#![allow(dead_code, clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `memstate serve`; killed when dropped.
pub struct Served {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// Its stderr, collected by a thread (see [`Served::stop`]).
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Served {
    /// Starts a node on the file journal in `dir`, on a free loopback port,
    /// and waits until it prints where it listens.
    pub fn start(dir: &Path, node_id: &str, extra: &[&str], env: &[(&str, &str)]) -> Served {
        let backend = [
            OsStr::new("--backend"),
            OsStr::new("file"),
            OsStr::new("--dir"),
            dir.as_os_str(),
        ];
        Served::start_on(&backend, node_id, extra, env)
    }

    /// Starts a node on the stream `backend` names (`memstate serve`'s
    /// backend options), on a free loopback port, and waits until it prints
    /// where it listens.
    pub fn start_on(
        backend: &[&OsStr],
        node_id: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Served {
        let mut command = Command::new(env!("CARGO_BIN_EXE_memstate"));
        command
            .arg("serve")
            .args(backend)
            .args(["--listen", "127.0.0.1:0", "--node-id", node_id])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("memstate serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut s);
            s
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some((_, url)) = line.split_once("listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "memstate serve did not report its address: {}",
                    stderr.join().unwrap_or_default()
                );
            }
        };
        let addr = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_owned();
        Served {
            child,
            url,
            addr,
            stderr: Some(stderr),
        }
    }

    /// Stops the node and returns what it wrote to stderr.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One request on a fresh connection (`Connection: close`).
pub fn http(method: &str, addr: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Checks the summary line `memstate inspect` prints on stderr: the journal's
/// command codec named, and no record that is not a frame.
pub fn assert_clean_inspect_summary(stderr: &str, codec: impl std::fmt::Display) {
    assert!(
        stderr.contains(&format!("command codec {codec}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("0 record(s) that are not frames"),
        "{stderr}"
    );
}
