//! Reading a stream's commands, typed, without running an engine.
//!
//! [`History`] subscribes to a stream from its beginning and yields each
//! command envelope as a [`HistoryEntry`]: its applied index (the same number
//! [`Executed::index`](crate::Executed) and
//! [`Consistency::AtLeast`](crate::Consistency::AtLeast) speak), command id,
//! origin node, timestamp, epoch and the command decoded into the model's
//! type. It follows the engine's own log rules (`engine/replicated.rs`): the
//! Genesis record, the bad-record policy, de-duplication and fencing, so each
//! entry says whether every engine applied it ([`Fate`]). Control records are
//! counted in the index but not yielded.
//!
//! What it cannot know without the model: whether the model returned a domain
//! error, or panicked. Node-local rules (an operator's `skip_commands`) are
//! not in the log either; an entry whose id is on that list is reported as
//! [`Fate::Applied`] here. An operator's `skip_records` are given with
//! [`History::skip_records`].
//!
//! # Examples
//!
//! ```
//! # use memstate_core::{CommandContext, Model, MemoryStream, EngineBuilder};
//! # use memstate_core::history::{Fate, History};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Clone, Default)] struct Counter(u64);
//! # #[derive(Debug, PartialEq, Serialize, Deserialize)] struct Add(u64);
//! # impl Model for Counter {
//! #     type Command = Add; type Output = u64; type Error = String;
//! #     fn apply(&mut self, c: Add, _: &mut CommandContext<'_>) -> Result<u64, String> { self.0 += c.0; Ok(self.0) }
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let stream = MemoryStream::new();
//! let engine = EngineBuilder::new(Counter::default(), stream.clone()).start().await?;
//! let done = engine.execute(Add(2)).await?;
//! engine.shutdown().await;
//!
//! let mut history = History::<Add>::open(stream).await?.until_head().await?;
//! let entry = history.next().await?.expect("one command");
//! assert_eq!(entry.index, done.index);
//! assert_eq!(entry.command, Add(2));
//! assert_eq!(entry.fate, Fate::Applied);
//! assert!(history.next().await?.is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::engine::IntoStream;
use crate::engine::replicated::{Admission, ModelVersions, Opened, Replicated};
use crate::envelope::{Body, CommandId, Envelope, NodeId};
use crate::error::Error;
use crate::skip::{RecordSkip, SkipList};
use crate::stream::{Cursor, Stream, Subscription};

/// What every engine did with a command of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fate {
    /// Handed to the model (which may still have returned a domain error).
    Applied,
    /// A later copy of an id decided at `first_index`: dropped.
    Duplicate {
        /// The applied index of the first copy.
        first_index: u64,
    },
    /// Single-leader mode: not from the leader of its epoch; not applied.
    Fenced {
        /// The leader at that point of the log.
        leader: Option<NodeId>,
        /// Its epoch.
        epoch: u64,
    },
}

/// One command of a stream's history.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct HistoryEntry<C> {
    /// Its applied index: the same on every node (control records count too).
    pub index: u64,
    /// The record that holds it.
    pub cursor: Cursor,
    /// Its id.
    pub command_id: CommandId,
    /// The node that wrote it.
    pub origin: NodeId,
    /// Its timestamp (the origin's clock, the command's "now"), ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// The writer's epoch (single-leader mode).
    pub epoch: Option<u64>,
    /// The model version it was written at (`C` decodes it as written: no
    /// upcasting here).
    pub model_version: u32,
    /// What every engine did with it.
    pub fate: Fate,
    /// The command.
    pub command: C,
}

/// A typed reader of a stream's commands; see the [module docs](self).
pub struct History<C> {
    stream: Arc<dyn Stream>,
    subscription: Box<dyn Subscription>,
    state: Replicated,
    pending: VecDeque<(Cursor, Envelope)>,
    until: Option<Cursor>,
    skip: SkipList,
    done: bool,
    _command: PhantomData<fn() -> C>,
}

impl<C> std::fmt::Debug for History<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("stream", &self.stream.describe())
            .field("index", &self.state.applied_index)
            .field("until", &self.until)
            .finish()
    }
}

impl<C: DeserializeOwned> History<C> {
    /// Reads `stream` (a stream value or a shared one, as
    /// [`EngineBuilder::new`](crate::EngineBuilder::new) takes) from its
    /// first record. Without an end ([`History::until`],
    /// [`History::until_head`]), `next` follows the tail and waits for more.
    ///
    /// # Errors
    ///
    /// The stream's errors when subscribing.
    pub async fn open(stream: impl IntoStream) -> Result<Self, Error> {
        let stream = stream.into_stream();
        let subscription = stream.subscribe(None).await?;
        Ok(Self {
            stream,
            subscription,
            state: Replicated::default(),
            pending: VecDeque::new(),
            until: None,
            skip: SkipList::default(),
            done: false,
            _command: PhantomData,
        })
    }

    /// Passes over these records, as the stream's nodes do
    /// ([`EngineBuilder::skip_records`](crate::EngineBuilder::skip_records)).
    pub fn skip_records(mut self, records: impl IntoIterator<Item = RecordSkip>) -> Self {
        self.skip.add_records(records);
        self
    }

    /// Ends after the record at `cursor` (inclusive).
    pub fn until(mut self, cursor: Cursor) -> Self {
        self.until = Some(cursor);
        self
    }

    /// Ends at the stream's head as it is now (an empty stream ends at once).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the stream cannot report its head exactly
    /// (use [`History::until`] with a known cursor); the stream's errors.
    pub async fn until_head(mut self) -> Result<Self, Error> {
        if !self.stream.capabilities().exact_head {
            return Err(Error::Config(format!(
                "{} cannot report its head exactly; read with History::until(cursor)",
                self.stream.describe()
            )));
        }
        match self.stream.head().await? {
            Some(head) => self.until = Some(head),
            None => self.done = true,
        }
        Ok(self)
    }

    /// The applied index of the last envelope read (control records included).
    pub fn index(&self) -> u64 {
        self.state.applied_index
    }

    /// The model versions as the log decides them, as far as read: the
    /// active version and each live node's announcement (what
    /// `memstate upgrade status` prints).
    pub fn model_versions(&self) -> &ModelVersions {
        &self.state.versions
    }

    /// The next command, or `None` at the end set by `until`.
    ///
    /// # Errors
    ///
    /// [`Error::UndecodableCommand`] for a command `C` cannot decode (the
    /// reader moves past it: call `next` again); [`Error::Halted`] when the log
    /// cannot be read under its rules (no Genesis first, a newer format, a bad
    /// record under the `Halt` policy); the stream's errors.
    pub async fn next(&mut self) -> Result<Option<HistoryEntry<C>>, Error> {
        loop {
            while let Some((cursor, envelope)) = self.pending.pop_front() {
                if let Some(entry) = self.admit(cursor, envelope)? {
                    return Ok(Some(entry));
                }
            }
            if self.done {
                return Ok(None);
            }
            let Some(record) = self.subscription.next().await? else {
                self.done = true;
                continue;
            };
            if let Some(until) = &self.until {
                match self.stream.compare_cursors(&record.cursor, until)? {
                    Ordering::Greater => {
                        self.done = true;
                        continue;
                    }
                    Ordering::Equal => self.done = true,
                    Ordering::Less => {}
                }
            }
            match self
                .state
                .open_record(self.stream.as_ref(), &record, &self.skip)
                .map_err(Error::Halted)?
            {
                Opened::Frame(envelopes) => {
                    self.state.cursor = Some(record.cursor.clone());
                    self.pending
                        .extend(envelopes.into_iter().map(|e| (record.cursor.clone(), e)));
                }
                Opened::Redelivery | Opened::SkippedBadRecord => {}
            }
        }
    }

    /// Applies the log's rules to one envelope; `None` for a control record.
    fn admit(
        &mut self,
        cursor: Cursor,
        mut envelope: Envelope,
    ) -> Result<Option<HistoryEntry<C>>, Error> {
        let (_, admission) = self
            .state
            .admit(&mut envelope, &cursor)
            .map_err(Error::Halted)?;
        let index = self.state.applied_index;
        let (fate, value) = match (admission, &envelope.body) {
            (Admission::Control { .. }, _) | (_, Body::Control(_)) => return Ok(None),
            (Admission::Duplicate(seen), Body::Command(value)) => (
                Fate::Duplicate {
                    first_index: seen.index,
                },
                value.clone(),
            ),
            (Admission::Fenced { leader, epoch }, Body::Command(value)) => {
                (Fate::Fenced { leader, epoch }, value.clone())
            }
            (Admission::Command(value), _) => {
                self.state.decide(&envelope, None);
                (Fate::Applied, value)
            }
        };
        let command = value.decode().map_err(|e| Error::UndecodableCommand {
            command_id: envelope.id,
            reason: e.to_string(),
        })?;
        Ok(Some(HistoryEntry {
            index,
            cursor,
            command_id: envelope.id,
            origin: envelope.origin,
            timestamp_ms: envelope.ts,
            epoch: envelope.epoch,
            model_version: envelope.model_version,
            fate,
            command,
        }))
    }
}
