//! kubectl-sessions: the interaction record and live terminal sessions of
//! pods, and extension requests. Pure parts (`rows`, `output`, `extend`)
//! are tested on literal values; `cli` does the I/O.

pub mod cli;
pub mod error;
pub mod extend;
pub mod output;
pub mod rows;

pub use error::Error;
