//! The harness's plan: start three nodes, keep the clients writing, depose
//! the leader again and again, then account for every command.

use std::sync::Arc;
use std::time::{Duration, Instant};

use memstate_core::DeterministicRng;
use memstate_kafka::KafkaStream;

use crate::clients::Clients;
use crate::cluster::{Cluster, wait_until};
use crate::report::{self, FailoverRecord};
use crate::{Args, Backend, leadership};

/// What happens to the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL; its held writes are appended late by the harness.
    Kill,
    /// SIGSTOP, then SIGCONT after the election: it writes them itself.
    Stop,
}

/// Which copy of a held command lands first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// The late old-epoch copy, then the client's retry: fenced, then applied.
    LateCopyFirst,
    /// The retry (applied), then the late copy: a duplicate.
    RetryFirst,
}

/// Failover `n`'s fault and order: every combination once in four.
fn plan(n: u64, faults: &str) -> (Fault, Order) {
    let fault = match faults {
        "kill" => Fault::Kill,
        "stop" => Fault::Stop,
        _ if n.is_multiple_of(2) => Fault::Kill,
        _ => Fault::Stop,
    };
    let order = if (n / 2).is_multiple_of(2) {
        Order::LateCopyFirst
    } else {
        Order::RetryFirst
    };
    (fault, order)
}

const WAIT: Duration = Duration::from_secs(120);

pub async fn run(args: &Args) -> Result<bool, String> {
    let failovers = args.number("failovers", 4)?;
    let faults = args.get("faults").unwrap_or("mixed").to_owned();
    if !matches!(faults.as_str(), "mixed" | "kill" | "stop") {
        return Err(format!("--faults {faults:?}: mixed, kill or stop"));
    }
    let clients_n = usize::try_from(args.number("clients", 16)?).map_err(|e| e.to_string())?;
    let pause = args.millis("pause-ms", Duration::from_secs(2))?;
    let attempt_timeout = args.millis("attempt-timeout-ms", Duration::from_secs(2))?;
    let seed = args.number("seed", 1)?;
    let config = leadership(args)?;
    let temp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let backend = match args.get("backend").unwrap_or("file") {
        "file" => Backend::File {
            journal: args
                .get("dir")
                .map_or_else(|| temp.path().join("journal"), std::path::PathBuf::from),
        },
        "kafka" => {
            let bootstrap = args.required("bootstrap")?.to_owned();
            let topic = format!("memstate-failover-{}", uuid::Uuid::new_v4().simple());
            let replication =
                i32::try_from(args.number("replication", 1)?).map_err(|e| e.to_string())?;
            KafkaStream::create_topic(&Backend::kafka_config(&bootstrap, &topic), replication)
                .await
                .map_err(|e| format!("creating {topic}: {e}"))?;
            Backend::Kafka { bootstrap, topic }
        }
        other => return Err(format!("--backend {other:?}: file or kafka")),
    };
    println!(
        "torture_failover: {} ; 3 nodes, single leader, heartbeat {:?}, election timeout {:?}; {clients_n} clients; {failovers} failovers ({faults}); seed {seed}",
        backend.describe(),
        config.heartbeat_interval,
        config.election_timeout
    );
    let mut node_args = backend.to_args();
    node_args.extend([
        "--heartbeat-ms".to_owned(),
        config.heartbeat_interval.as_millis().to_string(),
        "--election-timeout-ms".to_owned(),
        config.election_timeout.as_millis().to_string(),
    ]);
    let names: Vec<String> = (0..3).map(|n| format!("node-{n}")).collect();
    let cluster = Cluster::new(&names, node_args)?;
    let late_writer = backend.open().await?;
    for slot in 0..names.len() {
        cluster.start(slot).await?;
    }
    agreed_leader(&cluster).await?;
    let clients = Clients::new(Arc::clone(&cluster), attempt_timeout);
    let tasks = clients.spawn(clients_n);
    let started = Instant::now();

    let mut rng = DeterministicRng::seeded(u128::from(seed));
    let mut records = Vec::new();
    let mut outcome = Ok(());
    for n in 0..failovers {
        let jitter = rng.below(u64::try_from(pause.as_millis()).unwrap_or(0).max(1));
        tokio::time::sleep(pause / 2 + Duration::from_millis(jitter)).await;
        let (fault, order) = plan(n, &faults);
        match failover(&cluster, &clients, late_writer.as_ref(), fault, order).await {
            Ok(mut record) => {
                record.number = n + 1;
                println!("{record}");
                records.push(record);
            }
            Err(e) => {
                outcome = Err(format!("failover {}: {e}", n + 1));
                break;
            }
        }
    }
    tokio::time::sleep(pause).await;
    clients.stop();
    for task in tasks {
        let _ = task.await;
    }
    let load = started.elapsed();
    let result = match outcome {
        Ok(()) => report::account(&cluster, &clients, &backend, &records, load).await,
        Err(e) => Err(e),
    };
    cluster.quit_all().await;
    if let Backend::Kafka { bootstrap, topic } = &backend {
        let _ = KafkaStream::delete_topic(&Backend::kafka_config(bootstrap, topic)).await;
    }
    result
}

/// The leader every live node agrees on: (epoch, its slot).
async fn agreed_leader(cluster: &Cluster) -> Result<(u64, usize), String> {
    wait_until(WAIT, "all nodes agree on one leader", || {
        let views: Vec<_> = cluster.views().into_iter().flatten().collect();
        let first = views.first()?.clone();
        let slot = cluster.slot_of(first.1.as_deref()?)?;
        (views.len() == cluster.slots.len() && views.iter().all(|v| *v == first))
            .then_some((first.0, slot))
    })
    .await
}

async fn failover(
    cluster: &Arc<Cluster>,
    clients: &Arc<Clients>,
    late_writer: &dyn memstate_core::Stream,
    fault: Fault,
    order: Order,
) -> Result<FailoverRecord, String> {
    let (epoch, old) = agreed_leader(cluster).await?;
    let held_before = cluster.held_count(old);
    cluster.held.reset();
    clients.set_gate(order == Order::LateCopyFirst);
    // The leader stops writing and answering from here: its appends are
    // held. The appends already inside the stream finish first (applied,
    // never answered: their retries meet AlreadyApplied), so that a stopped
    // leader never sleeps holding the stream's writer lock.
    let t0 = Instant::now();
    cluster.send(old, "HOLD quiet").await?;
    // A fresh command sent now is certain to be among the held writes (the
    // callers whose answers were swallowed may only resend applied ids).
    let probe = clients.send_one(old);
    wait_until(WAIT, "the leader holds its writes in flight", || {
        (cluster.held_count(old) > held_before && cluster.held.contains(&probe)).then_some(())
    })
    .await?;
    match fault {
        Fault::Kill => cluster.kill(old).await?,
        Fault::Stop => cluster.signal(old, "STOP").await?,
    }
    let (new_epoch, new) = wait_until(WAIT, "a new leader is elected", || {
        cluster.views().iter().enumerate().find_map(|(slot, view)| {
            let (e, leader) = view.as_ref()?;
            (slot != old && *e > epoch)
                .then(|| cluster.slot_of(leader.as_deref()?))
                .flatten()
                .map(|l| (*e, l))
        })
    })
    .await?;
    let elected = t0.elapsed();
    let held = cluster.held.copies();
    let held_ids = held.iter().map(|(id, _)| *id).collect();
    if order == Order::RetryFirst {
        wait_until(
            WAIT,
            "the retries of the held commands are acknowledged",
            || clients.all_acked(&held_ids).then_some(()),
        )
        .await?;
    }
    // The late old-epoch copies land.
    let frames = cluster.held.frames();
    match fault {
        Fault::Kill => {
            for frame in &frames {
                late_writer
                    .append(vec![bytes::Bytes::from(frame.clone())])
                    .await
                    .map_err(|e| format!("appending a held record late: {e}"))?;
            }
        }
        Fault::Stop => {
            let released_before = cluster.released_count(old);
            // Queued before it wakes: the zombie writes at once.
            cluster.send(old, "RELEASE").await?;
            cluster.signal(old, "CONT").await?;
            wait_until(WAIT, "the zombie's held records are appended", || {
                (cluster.released_count(old) > released_before).then_some(())
            })
            .await?;
        }
    }
    clients.set_gate(false);
    let first_ack = wait_until(WAIT, "the new leader acknowledges a command", || {
        clients.first_ack(new, t0)
    })
    .await?;
    if fault == Fault::Kill {
        cluster.start(old).await?;
    }
    agreed_leader(cluster).await?;
    Ok(FailoverRecord {
        number: 0,
        fault,
        order,
        old: cluster.slots[old].name.clone(),
        epoch,
        new: cluster.slots[new].name.clone(),
        new_epoch,
        elected,
        unavailable: first_ack.duration_since(t0),
        held_records: frames.len(),
        held,
    })
}
