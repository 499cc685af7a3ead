//! The [`Model`] trait and the context a command is applied with.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::envelope::{CommandId, NodeId};
use crate::events::Emitted;

/// The application's in-memory state, mutated only by its commands.
///
/// `apply` must be deterministic: the same command applied to the same state
/// with the same context gives the same result and the same new state on every
/// node. Take time and randomness from the [`CommandContext`], never from the
/// host.
///
/// **Error contract**: a command that returns `Err` must leave the model
/// unchanged. Models that cannot guarantee it run with
/// [`ApplyMode::Safe`](crate::settings::ApplyMode::Safe).
///
/// # Examples
///
/// ```
/// use memstate_core::{CommandContext, Model};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Default)]
/// struct Counter(u64);
///
/// #[derive(Serialize, Deserialize)]
/// struct Add(u64);
///
/// impl Model for Counter {
///     type Command = Add;
///     type Output = u64;
///     type Error = String;
///
///     fn apply(&mut self, cmd: Add, _ctx: &mut CommandContext<'_>) -> Result<u64, String> {
///         self.0 = self.0.checked_add(cmd.0).ok_or("overflow")?;
///         Ok(self.0)
///     }
/// }
/// ```
///
/// Commands that return nothing use `()` as their output; a model whose
/// commands cannot fail uses [`Infallible`](std::convert::Infallible) as its
/// error. A model with several commands of different results returns an enum,
/// or `()` from those that have nothing to say:
///
/// ```
/// use memstate_core::{CommandContext, Model};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Default)]
/// struct Log(Vec<String>);
///
/// #[derive(Serialize, Deserialize)]
/// struct Append(String);
///
/// impl Model for Log {
///     type Command = Append;
///     type Output = ();
///     type Error = std::convert::Infallible;
///
///     fn apply(&mut self, cmd: Append, _ctx: &mut CommandContext<'_>) -> Result<(), Self::Error> {
///         self.0.push(cmd.0);
///         Ok(())
///     }
/// }
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let engine = memstate_core::EngineBuilder::new(Log::default(), memstate_core::MemoryStream::new())
///     .start()
///     .await?;
/// let done = engine.execute(Append("hello".into())).await?;
/// assert_eq!(done.output, ());
/// engine.shutdown().await;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub trait Model: Clone + Send + Sync + 'static {
    /// A serializable, deterministic mutation.
    type Command: Serialize + DeserializeOwned + Send + 'static;
    /// What a command returns to its caller.
    type Output: Send + 'static;
    /// A domain error ("insufficient funds"): the model is left unchanged.
    type Error: fmt::Debug + fmt::Display + Send + 'static;

    /// Applies one command.
    ///
    /// # Errors
    ///
    /// A domain error; the model must be unchanged when one is returned.
    fn apply(
        &mut self,
        command: Self::Command,
        ctx: &mut CommandContext<'_>,
    ) -> Result<Self::Output, Self::Error>;

    /// The model version this build implements: the newest version of
    /// commands and snapshots it reads. Raise it by one whenever the
    /// serialized form of a command or of the model changes in a way the
    /// previous build cannot read (a new variant, a rename, a removed
    /// field); see `docs/upgrades.md`. Default 1.
    const VERSION: u32 = 1;

    /// The lowest model version at which `command` exists: a build refuses
    /// to write it ([`Error::VersionNotActive`](crate::Error::VersionNotActive))
    /// until the stream's active version reaches it, because nodes of older
    /// builds could not read it. Default 1 (every command is as old as the model).
    fn command_version(command: &Self::Command) -> u32 {
        let _ = command;
        1
    }

    /// One upcasting step: turns a command encoded at model version `from`
    /// into its encoding at `from + 1`. Applied step by step, before
    /// decoding, to every command written at a version below
    /// [`Model::VERSION`], so the newest build replays any history. Must be
    /// deterministic. Default: unchanged.
    ///
    /// # Errors
    ///
    /// A message; the engine stops applying there and names the command.
    fn upcast(from: u32, command: serde_json::Value) -> Result<serde_json::Value, String> {
        let _ = from;
        Ok(command)
    }

    /// One downcasting step, for writing while the active version is below
    /// [`Model::VERSION`]: turns a command encoded at version `to + 1` into
    /// its encoding at `to`. Only commands whose
    /// [`command_version`](Model::command_version) is at most the active
    /// version are downcast. Default: unchanged.
    ///
    /// # Errors
    ///
    /// A message; the command is refused and nothing is written.
    fn downcast(to: u32, command: serde_json::Value) -> Result<serde_json::Value, String> {
        let _ = to;
        Ok(command)
    }

    /// One snapshot migration step: turns the model serialized at version
    /// `from` into its serialization at `from + 1`, when a snapshot taken by
    /// an older build is restored. Default: unchanged.
    ///
    /// # Errors
    ///
    /// A message; the engine refuses to start from that snapshot and says so.
    fn migrate_snapshot(from: u32, model: serde_json::Value) -> Result<serde_json::Value, String> {
        let _ = from;
        Ok(model)
    }
}

/// Brings a command encoded at model version `from` to [`Model::VERSION`],
/// one [`Model::upcast`] step at a time.
pub(crate) fn upcast_to_current<M: Model>(
    from: u32,
    mut command: serde_json::Value,
) -> Result<serde_json::Value, String> {
    for version in from..M::VERSION {
        command = M::upcast(version, command)
            .map_err(|e| format!("upcasting from model version {version} failed: {e}"))?;
    }
    Ok(command)
}

/// Everything a command may know besides the model: deterministic time,
/// randomness and identity, identical on every node.
#[derive(Debug)]
pub struct CommandContext<'a> {
    pub(crate) id: CommandId,
    pub(crate) origin: &'a NodeId,
    pub(crate) timestamp_ms: u64,
    pub(crate) index: u64,
    pub(crate) rng: DeterministicRng,
    pub(crate) emitted: Emitted,
}

impl<'a> CommandContext<'a> {
    /// A context for applying a command outside an engine (tests, tools).
    pub fn new(id: CommandId, origin: &'a NodeId, timestamp_ms: u64, index: u64) -> Self {
        Self {
            id,
            origin,
            timestamp_ms,
            index,
            rng: DeterministicRng::seeded(id.as_u128()),
            emitted: Emitted::default(),
        }
    }

    /// The command's id.
    pub fn command_id(&self) -> CommandId {
        self.id
    }

    /// The node that submitted the command.
    pub fn origin(&self) -> &NodeId {
        self.origin
    }

    /// The command's "now": the timestamp its origin stamped on submission.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.timestamp_ms)
    }

    /// [`CommandContext::now`] as milliseconds since the Unix epoch.
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }

    /// The command's applied index: the same on every node.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// A random generator seeded from the command id: the same numbers on every node.
    pub fn rng(&mut self) -> &mut DeterministicRng {
        &mut self.rng
    }

    /// Emits a domain event (see [`crate::events`]). It reaches subscribers
    /// only if the command succeeds, after its effect is visible to queries;
    /// the events of a command that fails, is fenced or rolled back are dropped.
    ///
    /// The event is serialized to JSON now. If that fails, the command fails
    /// with [`Error::EventEncode`](crate::Error::EventEncode) on every node
    /// alike and none of its events are published; as with any failure, the
    /// model must then be unchanged: emit before mutating (or check with
    /// [`try_emit`](CommandContext::try_emit)), or run in
    /// [`ApplyMode::Safe`](crate::settings::ApplyMode::Safe), which discards
    /// the command's changes.
    ///
    /// Serialize deterministically (a `BTreeMap`, not a `HashMap`), so every
    /// node hands out the same bytes.
    pub fn emit(&mut self, event: impl Serialize) {
        let _ = self.emitted.push(event);
    }

    /// As [`emit`](CommandContext::emit), telling the model whether the event
    /// could be serialized, so it can refuse the command before mutating.
    ///
    /// # Errors
    ///
    /// The serializer's error; the command fails even if the model ignores it.
    pub fn try_emit(&mut self, event: impl Serialize) -> Result<(), serde_json::Error> {
        self.emitted.push(event)
    }

    /// The JSON of the events emitted so far (for testing a model outside an
    /// engine).
    pub fn emitted(&self) -> &[Arc<str>] {
        &self.emitted.events
    }
}

/// A small deterministic random generator (SplitMix64) seeded from a command id.
#[derive(Clone, Debug)]
pub struct DeterministicRng {
    state: u64,
}

impl DeterministicRng {
    /// A generator seeded with 128 bits.
    pub fn seeded(seed: u128) -> Self {
        Self {
            state: (seed as u64) ^ ((seed >> 64) as u64).rotate_left(17),
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`0` when `bound` is `0`).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        // Multiply-shift keeps the bias negligible for bounds far below 2^64.
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_determined_by_the_command_id() {
        let id = CommandId::random();
        let mut a = DeterministicRng::seeded(id.as_u128());
        let mut b = DeterministicRng::seeded(id.as_u128());
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let mut c = DeterministicRng::seeded(CommandId::random().as_u128());
        assert_ne!(xs[0], c.next_u64());
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = DeterministicRng::seeded(7);
        assert!((0..1000).all(|_| r.below(10) < 10));
        assert_eq!(r.below(0), 0);
    }
}
