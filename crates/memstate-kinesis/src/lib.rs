#![doc = include_str!("../README.md")]

mod config;
mod cursor;
mod error;
mod pacing;
mod stream;
mod subscription;

pub use config::{ENDPOINT_ENV, KinesisConfig, KinesisCredentials};
pub use error::KinesisStreamError;
pub use stream::{KINESIS_RECORD_LIMIT, KinesisStream, MAX_RECORD_SIZE};
