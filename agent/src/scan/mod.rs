//! The I/O half of the agent: reads /proc (or a fake tree under
//! `--proc-root`) and turns it into sessions with the pure parsers.

mod clock;
mod command;
pub mod cursor;
mod fetch;
mod first;
mod group;
pub mod idle;
mod procfs;
mod scanner;
mod stats;

pub use group::{Candidate, Group, group_by_terminal};
pub use procfs::{ProcFs, Terminal};
pub use scanner::{Scanner, ScannerConfig};
pub use stats::ScanStats;
