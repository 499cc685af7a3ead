//! The engine's side of events: subscriptions, reads that name their index,
//! and time travel set up like this engine.
//!
//! The window itself is in [`crate::events`]; the apply loop fills it after
//! each record, once the record's effect is visible to queries.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Engine;
use super::time_travel::TimeTravel;
use crate::consistency::Consistency;
use crate::error::Error;
use crate::events::{EventModel, EventSubscription, EventsFrom};
use crate::model::Model;

impl<M: Model> Engine<M> {
    /// This node's events as JSON, for any model (what a server forwards).
    /// See [`Engine::events`].
    pub fn raw_events(&self, from: EventsFrom) -> EventSubscription<Arc<str>> {
        self.node.applied.events.subscribe_raw(from)
    }

    /// As [`Engine::query`], also returning the applied index the query saw:
    /// the state and the index belong together (no command is applied
    /// between reading one and the other). Subscribe with
    /// [`EventsFrom::After`] that index to follow every later change.
    ///
    /// # Errors
    ///
    /// As [`Engine::query`].
    pub async fn query_with_index<R>(
        &self,
        level: Consistency,
        f: impl FnOnce(&M) -> R,
    ) -> Result<(R, u64), Error> {
        let own = self.node.reads.last_write();
        self.node.wait_for(level, own).await?;
        self.node.check_running()?;
        // The apply loop takes the replicated state before the model: so do we.
        let state = self.node.applied.state.lock();
        let model = self.node.applied.model.read();
        let index = state.applied_index;
        drop(state);
        Ok((f(&model), index))
    }
}

impl<M: Model + Serialize + DeserializeOwned> Engine<M> {
    /// Time travel over this engine's stream, with its settings, skip list
    /// and snapshot store; `initial` is the model the log starts from (the
    /// one this engine was built with). Only reads the stream: this engine
    /// is not disturbed.
    pub fn time_travel(&self, initial: M) -> TimeTravel<M> {
        let travel = TimeTravel::new(initial, Arc::clone(&self.node.info.stream))
            .settings(self.node.info.settings.clone())
            .skip_commands(self.node.applied.skip.commands.iter().copied())
            .skip_records(self.node.applied.skip.records());
        match self.node.snapshots.store() {
            Some(store) => travel.shared_snapshots(store),
            None => travel,
        }
    }
}

impl<M: EventModel> Engine<M> {
    /// This node's events, in log order, from `from`: each with the applied
    /// index and id of the command that emitted it, handed out once the
    /// command's effect is visible to queries here. See [`crate::events`]
    /// for what is delivered and the retained window.
    ///
    /// # Examples
    ///
    /// ```
    /// # use memstate_core::{CommandContext, EventModel, Model, MemoryStream, EngineBuilder, EventsFrom};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Clone, Default)] struct Counter(u64);
    /// # #[derive(Serialize, Deserialize)] struct Add(u64);
    /// # #[derive(Debug, PartialEq, Serialize, Deserialize)] struct Added(u64);
    /// # impl Model for Counter {
    /// #     type Command = Add; type Output = u64; type Error = String;
    /// #     fn apply(&mut self, c: Add, ctx: &mut CommandContext<'_>) -> Result<u64, String> {
    /// #         self.0 += c.0; ctx.emit(Added(c.0)); Ok(self.0)
    /// #     }
    /// # }
    /// # impl EventModel for Counter { type Event = Added; }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let engine = EngineBuilder::new(Counter::default(), MemoryStream::new()).start().await?;
    /// let mut events = engine.events(EventsFrom::Now);
    /// let done = engine.execute(Add(2)).await?;
    /// let event = events.next().await?;
    /// assert_eq!((event.index, event.event), (done.index, Added(2)));
    /// // Later, here or on another node: everything after what was handled.
    /// let resumed = engine.events(EventsFrom::After(events.resume_after()));
    /// engine.shutdown().await;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn events(&self, from: EventsFrom) -> EventSubscription<M::Event> {
        self.node
            .applied
            .events
            .subscribe(from, decoder::<M>(), None)
    }

    /// As [`Engine::events`], keeping only the events `keep` accepts (the
    /// others are dropped here, and the resume point still moves past them).
    pub fn events_filtered(
        &self,
        from: EventsFrom,
        keep: impl Fn(&M::Event) -> bool + Send + Sync + 'static,
    ) -> EventSubscription<M::Event> {
        self.node
            .applied
            .events
            .subscribe(from, decoder::<M>(), Some(Box::new(keep)))
    }
}

type Decoder<E> = Arc<dyn Fn(&Arc<str>) -> Result<E, String> + Send + Sync>;

fn decoder<M: EventModel>() -> Decoder<M::Event> {
    Arc::new(|json: &Arc<str>| serde_json::from_str(json).map_err(|e| e.to_string()))
}
