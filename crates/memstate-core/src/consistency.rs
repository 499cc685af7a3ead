//! Per-query consistency levels.
//!
//! Every query names how fresh the state it reads must be; the cost grows
//! with the guarantee. See `docs/consistency.md` in the repository for the
//! reasoning, the costs in round trips, and what each level does when a node
//! is cut off from the stream.

use std::time::Duration;

/// How fresh the state a query reads must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Consistency {
    /// Whatever this node has applied: a consistent prefix of the log (every
    /// command up to some point, in log order, none after). Always
    /// available, possibly stale. No round trip.
    Local,
    /// Wait until this handle's own acknowledged writes are applied here:
    /// on a [`Session`](crate::Session), that session's writes (also those
    /// carried in with [`Engine::session_with_token`](crate::Engine::session_with_token));
    /// on an engine handle, the latest write acknowledged through it.
    ReadYourWrites,
    /// Wait until this node has applied at least this many envelopes (a token
    /// from [`Executed::index`](crate::Executed), [`Session::last_write`](crate::Session::last_write)
    /// or [`Engine::last_write`](crate::Engine::last_write), carried between
    /// nodes). The index counts every envelope of the log — control records
    /// included — not commands: to wait for "the n-th command", carry the
    /// index its `execute` returned, never a count of commands.
    AtLeast(u64),
    /// Learn the stream's tail (the exact head where the adapter has one,
    /// else a sync marker appended and read back), apply up to it, then read.
    /// Every write acknowledged before the query began is visible.
    Linearizable,
    /// Answer locally if this node has applied everything the stream held at
    /// least this long ago, by this node's own clock (since it last learned
    /// the tail and applied up to it, or read back a marker of its own);
    /// otherwise catch up as [`Consistency::Linearizable`] does, within the
    /// read timeout, or fail with [`Error::TooStale`](crate::Error::TooStale).
    BoundedStaleness(Duration),
}
