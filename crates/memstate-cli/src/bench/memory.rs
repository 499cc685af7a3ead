//! Resident memory per million accounts: `VmRSS` before and after building a
//! bank directly through `Model::apply` (the model alone, as every node holds
//! it; the engine adds its de-duplication window, measured under replay).
//! It runs first, before other phases leave freed memory in the allocator
//! that the bank would reuse without growing the process.

use serde::Serialize;

use super::Plan;
use super::workload::{INITIAL_BALANCE, account};
use crate::bank::{Bank, BankCommand};
use memstate_core::{CommandContext, CommandId, Model, NodeId};

/// The figure and how it was taken.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Memory {
    /// Accounts built.
    pub accounts: u64,
    /// `VmRSS` before, KiB.
    pub rss_before_kib: u64,
    /// `VmRSS` after, KiB.
    pub rss_after_kib: u64,
    /// Growth per account, bytes.
    pub bytes_per_account: f64,
    /// Growth scaled to a million accounts, MiB.
    pub mib_per_million_accounts: f64,
}

/// `VmRSS` of this process in bytes, from `/proc/self/status` (Linux only).
pub(crate) fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    vm_rss_kib(&status).map(|kib| kib * 1024)
}

/// The `VmRSS:` line of a `/proc/<pid>/status` text, in KiB.
pub(crate) fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Builds a bank of `plan.memory_accounts` accounts and reports the growth.
///
/// # Errors
///
/// When `/proc/self/status` cannot be read, or an account cannot be opened.
pub(crate) fn run(plan: &Plan) -> Result<Memory, String> {
    let accounts = plan.memory_accounts.max(1);
    plan.progress(&format!("memory: building a bank of {accounts} accounts"));
    let before = rss_bytes().ok_or("cannot read VmRSS from /proc/self/status")?;
    let mut bank = Bank::default();
    let node = NodeId::new("bench-memory");
    for i in 0..accounts {
        let mut ctx = CommandContext::new(CommandId::random(), &node, 0, i + 1);
        bank.apply(
            BankCommand::Open {
                account: account(i),
                initial: INITIAL_BALANCE,
            },
            &mut ctx,
        )
        .map_err(|e| format!("opening account {i}: {e}"))?;
    }
    let after = rss_bytes().ok_or("cannot read VmRSS from /proc/self/status")?;
    if bank.len() as u64 != accounts {
        return Err(format!(
            "the bank holds {} accounts, not {accounts}",
            bank.len()
        ));
    }
    drop(std::hint::black_box(bank));
    let growth = after.saturating_sub(before) as f64;
    let per_account = growth / accounts as f64;
    Ok(Memory {
        accounts,
        rss_before_kib: before / 1024,
        rss_after_kib: after / 1024,
        bytes_per_account: per_account,
        mib_per_million_accounts: per_account * 1_000_000.0 / (1024.0 * 1024.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_from_the_status_text() {
        let status = "Name:\tmemstate\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(vm_rss_kib(status), Some(12345));
        assert_eq!(vm_rss_kib("Name: x\n"), None);
    }
}
