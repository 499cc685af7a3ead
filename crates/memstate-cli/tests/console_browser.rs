//! The web console in a real browser: headless Chromium, driven through
//! chromedriver, against a running `memstate serve`. Chromium absent: the
//! test shows as ignored with the reason (a failure when `MEMSTATE_REQUIRE`
//! names `browser`). It leaves a screenshot at `target/tmp/console.png`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use libtest_mimic::{Arguments, Failed, Trial};

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn required() -> bool {
    std::env::var("MEMSTATE_REQUIRE")
        .map(|v| v.split(',').any(|s| s.trim() == "browser"))
        .unwrap_or(false)
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_chromedriver(binary: &Path) -> Result<(Driver, u16), Failed> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let mut child = Command::new(binary)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let driver = Driver(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("started successfully") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .map_err(|_| "chromedriver did not report that it started")?;
    Ok((driver, port))
}

async fn text_of(client: &fantoccini::Client, id: &str) -> Result<String, Failed> {
    let element = client
        .find(Locator::Id(id))
        .await
        .map_err(|e| format!("#{id} not found: {e}"))?;
    Ok(element.text().await.map_err(|e| format!("#{id}: {e}"))?)
}

/// Polls the page until `check` holds; the deadline only guards against a hang.
async fn wait_until(
    client: &fantoccini::Client,
    what: &str,
    mut check: impl AsyncFnMut(&fantoccini::Client) -> Result<bool, Failed>,
) -> Result<(), Failed> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if check(client).await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the page never showed {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn console_shows_the_node_and_its_numbers_move(
    chromium: PathBuf,
    chromedriver: PathBuf,
) -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let node = common::Served::start(dir.path(), "console-node", &[], &[]);
    let (_driver, port) = start_chromedriver(&chromedriver)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1300,1000"],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .map_err(|e| format!("cannot open a browser session: {e}"))?;
        let result = async {
            client.goto(&format!("{}/", node.url)).await.map_err(|e| e.to_string())?;
            wait_until(&client, "the node id", async |c| Ok(text_of(c, "node-id").await? == "console-node")).await?;
            wait_until(&client, "the running status", async |c| Ok(text_of(c, "status").await? == "running")).await?;
            let before: u64 = text_of(&client, "applied-index").await?.parse().map_err(|e| format!("applied index: {e}"))?;

            for i in 0..40 {
                let body = format!("{{\"key\":\"k{i}\",\"value\":{i}}}");
                let a = common::http("POST", &node.addr, "/commands/put", &[], &body);
                assert_eq!(a.status, 200, "{}", a.body);
            }
            let a = common::http("POST", &node.addr, "/commands/compare_and_set", &[], "{\"key\":\"k1\",\"expected\":99,\"value\":0}");
            assert_eq!(a.status, 409, "{}", a.body);
            let last = before + 41;

            wait_until(&client, "the applied index moving", async |c| {
                Ok(text_of(c, "applied-index").await?.parse::<u64>().unwrap_or(0) >= last)
            })
            .await?;
            wait_until(&client, "the commands posted", async |c| {
                let rows = text_of(c, "commands").await?;
                Ok(rows.contains("compare_and_set") && rows.contains("rejected") && rows.contains("put"))
            })
            .await?;
            wait_until(&client, "a latency figure", async |c| Ok(text_of(c, "latency").await?.ends_with(" ms"))).await?;
            let applied: u64 = text_of(&client, "commands-applied").await?.parse().map_err(|e| format!("commands applied: {e}"))?;
            assert!(applied >= 41, "commands applied {applied}");
            assert!(!text_of(&client, "lag").await?.is_empty());
            // Let the chart take in a few more seconds before the picture.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let png = client.screenshot().await.map_err(|e| format!("screenshot: {e}"))?;
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
            std::fs::write(&out, &png).map_err(|e| format!("writing {}: {e}", out.display()))?;
            eprintln!("console screenshot: {}", out.display());
            Ok::<(), Failed>(())
        }
        .await;
        let _ = client.close().await;
        result
    })
}

fn main() {
    let args = Arguments::from_args();
    let chromium = find(&["chromium", "chromium-browser", "google-chrome"]);
    let chromedriver = find(&["chromedriver"]);
    let name = "console_shows_the_node_and_its_numbers_move";
    let trial = match (chromium, chromedriver) {
        (Some(chromium), Some(driver)) => Trial::test(name, move || {
            console_shows_the_node_and_its_numbers_move(chromium, driver)
        }),
        _ if required() => Trial::test(name, || {
            Err("MEMSTATE_REQUIRE names browser but chromium or chromedriver is not installed (apt-get install chromium chromium-driver)".into())
        }),
        _ => {
            eprintln!(
                "{name}: not run: chromium or chromedriver is not installed (apt-get install chromium chromium-driver)"
            );
            Trial::test(name, || Ok(())).with_ignored_flag(true)
        }
    };
    libtest_mimic::run(&args, vec![trial]).exit();
}
