//! kubectl-sessions: the interaction record and live terminal sessions of
//! pods, and extension requests. Pure parts (`rows`, `output`, `extend`)
//! are tested on literal values; `cli` does the I/O.

pub mod blocking;
pub mod cli;
pub mod drains;
pub mod error;
pub mod extend;
pub mod kube_flags;
pub mod nodes;
pub mod output;
pub mod rows;
pub mod watch;

pub use error::Error;
