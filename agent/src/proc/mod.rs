//! Pure parsers for the few /proc files the agent reads. Every function takes
//! the file's bytes or text and never touches the filesystem, so each awkward
//! case is a literal string in a test.

pub mod boot;
pub mod cgroup;
pub mod cmdline;
pub mod stat;
pub mod status;
pub mod tty;

pub use boot::{parse_btime, parse_uptime};
pub use cgroup::{PodContainer, parse_cgroup};
pub use cmdline::parse_cmdline;
pub use stat::Stat;
pub use status::Status;
pub use tty::tty_name;
