//! Per-query consistency levels.

use std::time::Duration;

/// How fresh the state a query reads must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Consistency {
    /// Whatever this node has applied: a consistent prefix of the log. Always
    /// available, possibly stale.
    Local,
    /// Wait until this session's own acknowledged writes are applied here
    /// (only meaningful on a [`Session`](crate::Session); on an engine handle it
    /// is the engine's own latest acknowledged write).
    ReadYourWrites,
    /// Wait until this node has applied at least this many envelopes (a token
    /// from [`Executed::index`](crate::Executed) carried between nodes).
    AtLeast(u64),
    /// Learn the stream's tail (exact head, or a sync marker appended and
    /// awaited), apply up to it, then read.
    Linearizable,
    /// Answer locally if this node has applied everything the stream held at
    /// least this long ago; otherwise catch up first (bounded by the read timeout).
    BoundedStaleness(Duration),
}
