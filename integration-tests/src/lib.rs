#![doc = include_str!("../README.md")]

pub mod cases;
pub mod fixture;
pub mod model;
pub mod provision;
pub mod runner;

pub use cases::{Case, CaseResult, Outcome};
pub use fixture::{Backend, BoxError, Connect, Fixture};
pub use provision::Provision;
pub use runner::{CaseReport, format_table, run_libtest, run_table};
