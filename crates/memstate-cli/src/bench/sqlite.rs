//! SQLite, the embedded alternative: the same transfers as SQL transactions
//! on one database file in WAL mode with `synchronous=FULL` (every commit is
//! fsynced, as every memstate command is).
//!
//! Concurrency: one connection per client, each transfer a `BEGIN IMMEDIATE`
//! transaction, `busy_timeout` of 30 s. This is how an application with
//! several threads would use SQLite without writing its own queue; SQLite
//! lets one writer in at a time, and the others wait in its busy handler
//! (which sleeps and retries). No client-side batching: SQLite has no group
//! commit, so each transfer pays its own WAL fsync.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, TransactionBehavior, params};

use super::Plan;
use super::load::closed_loop;
use super::tiers::TierPoint;
use super::workload::{INITIAL_BALANCE, account, transfer_indices};

const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn connect(path: &Path) -> Result<Connection, String> {
    let conn = Connection::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| format!("setting busy_timeout: {e}"))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| format!("setting WAL mode: {e}"))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| format!("setting synchronous=FULL: {e}"))?;
    Ok(conn)
}

/// Creates the accounts table with the plan's accounts.
fn create(path: &Path, accounts: u64) -> Result<(), String> {
    let mut conn = connect(path)?;
    let fail = |e: rusqlite::Error| format!("creating the accounts: {e}");
    conn.execute_batch(
        "CREATE TABLE accounts (name TEXT PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0)) WITHOUT ROWID",
    )
    .map_err(fail)?;
    let tx = conn.transaction().map_err(fail)?;
    {
        let mut insert = tx
            .prepare("INSERT INTO accounts (name, balance) VALUES (?1, ?2)")
            .map_err(fail)?;
        for i in 0..accounts {
            insert
                .execute(params![account(i), INITIAL_BALANCE as i64])
                .map_err(fail)?;
        }
    }
    tx.commit().map_err(fail)
}

/// One transfer: refused (rolled back) when the source lacks the money or
/// either account is missing, as the bank model refuses it.
fn transfer(conn: &mut Connection, from: &str, to: &str, amount: u64) -> Result<bool, String> {
    let fail = |e: rusqlite::Error| format!("transfer failed: {e}");
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    let debited = tx
        .prepare_cached(
            "UPDATE accounts SET balance = balance - ?2 WHERE name = ?1 AND balance >= ?2",
        )
        .and_then(|mut s| s.execute(params![from, amount as i64]))
        .map_err(fail)?;
    let credited = tx
        .prepare_cached("UPDATE accounts SET balance = balance + ?2 WHERE name = ?1")
        .and_then(|mut s| s.execute(params![to, amount as i64]))
        .map_err(fail)?;
    if debited == 1 && credited == 1 {
        tx.commit().map_err(fail)?;
        Ok(true)
    } else {
        tx.rollback().map_err(fail)?;
        Ok(false)
    }
}

/// Runs the transfers at each concurrency of the plan on a database under `work`.
///
/// # Errors
///
/// SQLite failures, as text.
pub(crate) async fn run(plan: &Plan, work: &Path) -> Result<Vec<TierPoint>, String> {
    let path = work.join("bank.sqlite");
    let accounts = plan.accounts;
    {
        let path = path.clone();
        tokio::task::spawn_blocking(move || create(&path, accounts))
            .await
            .map_err(|e| format!("creating the database: {e}"))??;
    }
    let mut points = Vec::new();
    for &clients in &plan.clients {
        let mut connections = Vec::with_capacity(clients);
        for _ in 0..clients {
            connections.push(Arc::new(Mutex::new(connect(&path)?)));
        }
        let connections = Arc::new(connections);
        let measured = closed_loop(clients, plan.budget, move |client, seq| {
            let conn = connections.get(client).cloned();
            async move {
                let conn = conn.ok_or("no connection for this client")?;
                tokio::task::spawn_blocking(move || {
                    let (from, to, amount) = transfer_indices(accounts, client, seq);
                    transfer(&mut conn.lock(), &account(from), &account(to), amount).map(|_| ())
                })
                .await
                .map_err(|e| format!("a transfer task failed: {e}"))?
            }
        })
        .await?;
        plan.progress(&format!(
            "sqlite   {clients:>3} clients: {:>9.0} transfers/s",
            measured.per_sec
        ));
        points.push(TierPoint::plain(measured));
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_transfers_move_money_and_refuse_overdrafts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite");
        create(&path, 2).unwrap();
        let mut conn = connect(&path).unwrap();
        let (a, b) = (account(0), account(1));
        assert!(transfer(&mut conn, &a, &b, 10).unwrap());
        assert!(!transfer(&mut conn, &a, &b, INITIAL_BALANCE).unwrap());
        assert!(!transfer(&mut conn, &a, "nobody", 1).unwrap());
        let balance = |name: &str| -> i64 {
            conn.query_row(
                "SELECT balance FROM accounts WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(balance(&a), INITIAL_BALANCE as i64 - 10);
        assert_eq!(balance(&b), INITIAL_BALANCE as i64 + 10);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
