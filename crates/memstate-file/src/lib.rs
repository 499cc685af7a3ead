#![doc = include_str!("../README.md")]

mod config;
mod error;
mod format;
mod fsio;
pub mod inspect;
mod lock;
mod notify;
mod position;
mod reader;
mod recovery;
mod scan;
mod stream;
pub mod truncate;
mod writer;

pub use config::FileStreamConfig;
pub use error::FileStreamError;
pub use format::{
    FORMAT_VERSION, FRAME_HEADER_LEN, MAX_PAYLOAD_LEN, SEAL_LEN, SEGMENT_HEADER_LEN, Watermark,
};
pub use position::Position;
pub use recovery::TornTail;
pub use scan::DataLoss;
pub use stream::{FileStream, OpenReport};
