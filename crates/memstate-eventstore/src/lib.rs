#![doc = include_str!("../README.md")]

pub mod container;

mod client;
mod config;
mod connection;
mod cursor;
mod error;
mod event;
#[cfg(test)]
mod fuzz;
mod metadata;
mod stream;
mod subscription;

pub use config::{
    EventIds, EventStoreConfig, SERVER_MAX_APPEND_SIZE_CEILING, SERVER_MAX_EVENT_SIZE,
};
pub use error::EventStoreStreamError;
pub use metadata::HistoryLimits;
pub use stream::EventStoreStream;
pub use subscription::EventStoreSubscription;
