#![doc = include_str!("../README.md")]

pub mod cases;
pub mod fixture;
pub mod model;
pub mod provision;
pub mod runner;

pub use cases::{Case, CaseResult, Outcome};
pub use fixture::{Backend, BoxError, Cleanup, Connect, Fixture};
pub use provision::Provision;
pub use runner::{
    CaseReport, KEEP_STREAMS_ENV, format_table, keep_streams, run_libtest, run_table,
};
