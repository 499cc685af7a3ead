//! The harness's side of the node processes: starting, signalling and
//! killing them, and the requests and reports that travel over their pipes.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memstate_core::CommandId;
use memstate_core::envelope::decode_frame;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{oneshot, watch};

use crate::unhex;

/// A node's answer to `EXEC`, or why there was none.
#[derive(Clone, Debug)]
pub enum Reply {
    Ok,
    AlreadyApplied,
    NotLeader(Option<String>),
    /// An engine error (its kind), or no answer (node down, died, timed out).
    Failed(String),
}

/// A command envelope: its id and its timestamp tell one copy from a later
/// resubmission of the same id.
pub type Copy = (CommandId, u64);

/// Records a leader held back during the current failover.
#[derive(Debug, Default)]
pub struct Held {
    frames: Mutex<Vec<Vec<u8>>>,
    copies: Mutex<HashSet<Copy>>,
}

impl Held {
    pub fn reset(&self) {
        lock(&self.frames).clear();
        lock(&self.copies).clear();
    }

    fn add(&self, frame: Vec<u8>) {
        if let Ok(envelopes) = decode_frame(&frame) {
            let mut copies = lock(&self.copies);
            for e in envelopes.iter().filter(|e| e.kind() == "command") {
                copies.insert((e.id, e.ts));
            }
        }
        lock(&self.frames).push(frame);
    }

    pub fn frames(&self) -> Vec<Vec<u8>> {
        lock(&self.frames).clone()
    }

    pub fn copies(&self) -> HashSet<Copy> {
        lock(&self.copies).clone()
    }

    pub fn contains(&self, id: &CommandId) -> bool {
        lock(&self.copies).iter().any(|(held, _)| held == id)
    }
}

/// A mutex whose poisoning (a panicked holder) does not matter here.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One running node process.
#[derive(Debug)]
struct Proc {
    pid: u32,
    child: tokio::sync::Mutex<Child>,
    stdin: tokio::sync::Mutex<ChildStdin>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    alive: watch::Sender<bool>,
    ready: watch::Sender<bool>,
    /// Its view of the leadership: epoch and leader.
    lead: watch::Sender<(u64, Option<String>)>,
    /// How many `HELD` and `RELEASED` lines it printed.
    held: watch::Sender<u64>,
    released: watch::Sender<u64>,
    state: Mutex<Option<oneshot::Sender<String>>>,
}

/// A node's place in the cluster: its name and current process.
#[derive(Debug)]
pub struct Slot {
    pub name: String,
    proc_: Mutex<Option<Arc<Proc>>>,
}

#[derive(Debug)]
pub struct Cluster {
    pub slots: Vec<Slot>,
    exe: PathBuf,
    node_args: Vec<String>,
    next_req: AtomicU64,
    pub held: Held,
}

/// Polls `done` every 10 ms until it returns `Some`, for at most `within`.
pub async fn wait_until<T>(
    within: Duration,
    what: &str,
    mut done: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = done() {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(format!("not within {within:?}: {what}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Cluster {
    pub fn new(names: &[String], node_args: Vec<String>) -> Result<Arc<Self>, String> {
        Ok(Arc::new(Self {
            slots: names
                .iter()
                .map(|name| Slot {
                    name: name.clone(),
                    proc_: Mutex::new(None),
                })
                .collect(),
            exe: std::env::current_exe().map_err(|e| e.to_string())?,
            node_args,
            next_req: AtomicU64::new(1),
            held: Held::default(),
        }))
    }

    fn proc_(&self, slot: usize) -> Option<Arc<Proc>> {
        lock(&self.slots[slot].proc_).clone()
    }

    pub fn slot_of(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.name == name)
    }

    /// Starts node `slot` and waits until its engine is ready.
    pub async fn start(self: &Arc<Self>, slot: usize) -> Result<(), String> {
        let name = &self.slots[slot].name;
        let mut child = Command::new(&self.exe)
            .arg("node")
            .arg("--name")
            .arg(name)
            .args(&self.node_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {name}: {e}"))?;
        let (Some(stdin), Some(stdout), Some(pid)) =
            (child.stdin.take(), child.stdout.take(), child.id())
        else {
            return Err(format!("{name}: no pipes"));
        };
        let p = Arc::new(Proc {
            pid,
            child: tokio::sync::Mutex::new(child),
            stdin: tokio::sync::Mutex::new(stdin),
            pending: Mutex::new(HashMap::new()),
            alive: watch::channel(true).0,
            ready: watch::channel(false).0,
            lead: watch::channel((0, None)).0,
            held: watch::channel(0).0,
            released: watch::channel(0).0,
            state: Mutex::new(None),
        });
        *lock(&self.slots[slot].proc_) = Some(Arc::clone(&p));
        tokio::spawn(read_replies(Arc::clone(self), Arc::clone(&p), stdout));
        let mut ready = p.ready.subscribe();
        let mut alive = p.alive.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(180), async {
            tokio::select! {
                r = ready.wait_for(|r| *r) => r.is_ok(),
                _ = alive.wait_for(|a| !*a) => false,
            }
        })
        .await;
        match waited {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("{name} exited before it was ready")),
            Err(_) => Err(format!("{name} not ready within 180 s")),
        }
    }

    /// Writes one line to node `slot`.
    pub async fn send(&self, slot: usize, line: &str) -> Result<(), String> {
        let p = self
            .proc_(slot)
            .ok_or_else(|| format!("{} is down", self.slots[slot].name))?;
        let mut stdin = p.stdin.lock().await;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| format!("writing to {}: {e}", self.slots[slot].name))
    }

    /// Asks node `slot` to execute command `token`; waits at most `within`.
    pub async fn execute(&self, slot: usize, token: u64, within: Duration) -> Reply {
        let Some(p) = self.proc_(slot) else {
            return Reply::Failed("NodeDown".into());
        };
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&p.pending).insert(req, tx);
        if !*p.alive.borrow() {
            lock(&p.pending).remove(&req);
            return Reply::Failed("NodeDown".into());
        }
        // The write is inside the timeout too: a stopped node's pipe fills.
        let answer = tokio::time::timeout(within, async {
            if self
                .send(slot, &format!("EXEC {req} {token}"))
                .await
                .is_err()
            {
                return Reply::Failed("NodeDown".into());
            }
            rx.await
                .unwrap_or_else(|_| Reply::Failed("NodeDied".into()))
        })
        .await;
        answer.unwrap_or_else(|_| {
            lock(&p.pending).remove(&req);
            Reply::Failed("NoAnswer".into())
        })
    }

    /// SIGKILLs node `slot` and waits until its output is read to the end.
    pub async fn kill(&self, slot: usize) -> Result<(), String> {
        let p = lock(&self.slots[slot].proc_).take();
        let Some(p) = p else { return Ok(()) };
        let mut child = p.child.lock().await;
        child.start_kill().map_err(|e| e.to_string())?;
        let _ = child.wait().await;
        drop(child);
        let mut alive = p.alive.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(30), alive.wait_for(|a| !*a)).await;
        Ok(())
    }

    /// Sends a signal by name (`STOP`, `CONT`) to node `slot`.
    pub async fn signal(&self, slot: usize, signal: &str) -> Result<(), String> {
        let p = self
            .proc_(slot)
            .ok_or_else(|| format!("{} is down", self.slots[slot].name))?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(p.pid.to_string())
            .status()
            .await
            .map_err(|e| format!("kill -{signal}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -{signal} {}: {status}", p.pid))
        }
    }

    /// Each live node's view of the leadership.
    pub fn views(&self) -> Vec<Option<(u64, Option<String>)>> {
        (0..self.slots.len())
            .map(|s| {
                self.proc_(s)
                    .filter(|p| *p.alive.borrow())
                    .map(|p| p.lead.borrow().clone())
            })
            .collect()
    }

    /// How many `HELD` / `RELEASED` lines node `slot` has printed.
    pub fn held_count(&self, slot: usize) -> u64 {
        self.proc_(slot).map_or(0, |p| *p.held.borrow())
    }

    pub fn released_count(&self, slot: usize) -> u64 {
        self.proc_(slot).map_or(0, |p| *p.released.borrow())
    }

    /// Asks node `slot` for its state line.
    pub async fn state(&self, slot: usize) -> Result<String, String> {
        let p = self
            .proc_(slot)
            .ok_or_else(|| format!("{} is down", self.slots[slot].name))?;
        let (tx, rx) = oneshot::channel();
        *lock(&p.state) = Some(tx);
        self.send(slot, "STATE").await?;
        tokio::time::timeout(Duration::from_secs(120), rx)
            .await
            .map_err(|_| format!("{}: no state within 120 s", self.slots[slot].name))?
            .map_err(|_| format!("{} died", self.slots[slot].name))
    }

    /// Asks every node to stop and waits for it.
    pub async fn quit_all(&self) {
        for slot in 0..self.slots.len() {
            let _ = self.send(slot, "QUIT").await;
            let p = lock(&self.slots[slot].proc_).take();
            if let Some(p) = p {
                let mut child = p.child.lock().await;
                if tokio::time::timeout(Duration::from_secs(30), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
            }
        }
    }
}

fn parse_reply(words: &[&str]) -> Reply {
    match words {
        ["OK", ..] => Reply::Ok,
        ["ALREADY", ..] => Reply::AlreadyApplied,
        ["NOTLEADER", leader, ..] => {
            Reply::NotLeader((*leader != "-").then(|| (*leader).to_owned()))
        }
        ["ERR", kind, ..] => Reply::Failed((*kind).to_owned()),
        _ => Reply::Failed(format!("unreadable answer {words:?}")),
    }
}

async fn read_replies(cluster: Arc<Cluster>, p: Arc<Proc>, stdout: ChildStdout) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["RES", req, rest @ ..] => {
                let sender = req.parse().ok().and_then(|r| lock(&p.pending).remove(&r));
                if let Some(sender) = sender {
                    let _ = sender.send(parse_reply(rest));
                }
            }
            ["LEAD", epoch, leader] => {
                let leader = (*leader != "-").then(|| (*leader).to_owned());
                p.lead.send_replace((epoch.parse().unwrap_or(0), leader));
            }
            ["FRAME", hex] => match unhex(hex) {
                Some(frame) => cluster.held.add(frame),
                None => eprintln!("torture_failover: unreadable frame line"),
            },
            ["HELD", ..] => {
                p.held.send_modify(|n| *n += 1);
            }
            ["RELEASED"] => {
                p.released.send_modify(|n| *n += 1);
            }
            ["READY"] => {
                p.ready.send_replace(true);
            }
            ["STATE", ..] => {
                if let Some(tx) = lock(&p.state).take() {
                    let _ = tx.send(line.clone());
                }
            }
            _ => eprintln!("torture_failover: unexpected node output {line:?}"),
        }
    }
    p.alive.send_replace(false);
    // Dropping the senders answers every waiting request "NodeDied".
    lock(&p.pending).clear();
}
