#![doc = include_str!("../README.md")]

mod config;
mod cursor;
mod durability;
mod error;
#[cfg(test)]
mod fuzz;
mod properties;
mod stream;
mod subscription;
mod topic;

pub use config::KafkaConfig;
pub use durability::Durability;
pub use error::KafkaStreamError;
pub use stream::KafkaStream;
