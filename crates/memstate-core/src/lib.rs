//! memstate-core: the engine, the `Model` and `Stream` traits, envelopes and
//! frames, and the in-memory reference stream.

pub mod memory;
pub mod stream;

pub use memory::{MemoryStream, SubscriberFaults};
pub use stream::{Capabilities, Cursor, Record, Stream, StreamError, Subscription};
