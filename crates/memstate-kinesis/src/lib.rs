#![doc = include_str!("../README.md")]

mod config;
mod consumer;
mod credentials;
mod cursor;
mod error;
mod pacing;
mod setup;
mod stats;
mod stream;
mod subscription;

pub use config::{ENDPOINT_ENV, KinesisConfig};
pub use consumer::{MAX_CONSUMERS_PER_STREAM, ReadMode};
pub use credentials::KinesisCredentials;
pub use error::KinesisStreamError;
pub use stats::ReadStats;
pub use stream::{KINESIS_RECORD_LIMIT, KinesisStream, MAX_RECORD_SIZE};
