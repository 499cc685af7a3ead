//! A small Wing–Gong linearizability checker for a read/write register.
//!
//! A history is a set of completed operations, each with the moments it was
//! invoked and returned. It is linearizable when the operations can be put in
//! one sequence that (a) respects real time — an operation that returned
//! before another was invoked comes first — and (b) is legal for a register —
//! every read returns the value of the latest write before it (or the initial
//! value). Wing and Gong's search (1993) builds that sequence front to back:
//! any operation invoked before every remaining operation's return may come
//! next; it backtracks on an illegal read. Lowe's memoisation of (set of
//! operations done, register value) keeps it fast on the histories used here.
//!
//! Moments come from one atomic counter shared by every client: a client
//! takes a tick just before it calls the engine and another just after the
//! call returns, so "returned before invoked" in ticks implies it in real
//! time, on any number of threads.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// What an operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Wrote this value.
    Write(u64),
    /// Read this value.
    Read(u64),
}

/// One completed operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub op: Op,
    pub invoked: u64,
    pub returned: u64,
    /// The node it ran on (for messages).
    pub node: usize,
}

/// Records a history from any number of concurrent clients.
#[derive(Debug, Default)]
pub struct Recorder {
    clock: AtomicU64,
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    /// Takes the invocation tick; call just before the operation starts.
    pub fn invoke(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    /// Records a completed operation; call just after it returned.
    pub fn complete(&self, invoked: u64, op: Op, node: usize) {
        let returned = self.clock.fetch_add(1, Ordering::SeqCst);
        self.events.lock().push(Event {
            op,
            invoked,
            returned,
            node,
        });
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().clone()
    }
}

/// Why a history is not linearizable.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    /// The longest prefix of a legal order the search found.
    pub longest_prefix: Vec<Event>,
    /// Operations none of which could come next.
    pub stuck_on: Vec<Event>,
}

/// Checks a register history starting from `initial`. Returns a witness
/// order (indexes into `events`) or the violation.
///
/// At most 128 operations (the set of operations done is a bitset).
pub fn check_register(initial: u64, events: &[Event]) -> Result<Vec<usize>, Violation> {
    assert!(
        events.len() <= 128,
        "the checker handles up to 128 operations, got {}",
        events.len()
    );
    let mut search = Search {
        events,
        failed: HashSet::new(),
        order: Vec::new(),
        best: Vec::new(),
    };
    if search.extend(0, initial) {
        return Ok(search.order);
    }
    let done: u128 = search.best.iter().fold(0, |d, &i| d | (1 << i));
    Err(Violation {
        longest_prefix: search.best.iter().map(|&i| events[i].clone()).collect(),
        stuck_on: (0..events.len())
            .filter(|i| done & (1 << i) == 0)
            .map(|i| events[i].clone())
            .collect(),
    })
}

struct Search<'a> {
    events: &'a [Event],
    /// (operations done, register value) states known to lead nowhere.
    failed: HashSet<(u128, u64)>,
    order: Vec<usize>,
    best: Vec<usize>,
}

impl Search<'_> {
    fn extend(&mut self, done: u128, value: u64) -> bool {
        let n = self.events.len();
        if self.order.len() == n {
            return true;
        }
        if self.failed.contains(&(done, value)) {
            return false;
        }
        let pending = || (0..n).filter(move |i| done & (1 << i) == 0);
        // Only an operation invoked before every pending one returned may be next.
        let first_return = pending()
            .map(|i| self.events[i].returned)
            .min()
            .unwrap_or(u64::MAX);
        let candidates: Vec<usize> = pending()
            .filter(|&i| self.events[i].invoked < first_return)
            .collect();
        for i in candidates {
            let next = match self.events[i].op {
                Op::Write(v) => v,
                Op::Read(v) if v == value => value,
                Op::Read(_) => continue,
            };
            self.order.push(i);
            if self.order.len() > self.best.len() {
                self.best = self.order.clone();
            }
            if self.extend(done | (1 << i), next) {
                return true;
            }
            self.order.pop();
        }
        self.failed.insert((done, value));
        false
    }
}
