//! Pure parsers for the few /proc files the agent reads. Every one has the
//! same shape, `fn(&[u8]) -> Result<T, ParseError>`: it takes the file's bytes
//! and never touches the filesystem or the running system, so each awkward
//! case is a literal in a test. Whatever the system must tell (boot time, tick
//! rate) is passed in as a [`SystemInfo`].

pub mod boot;
pub mod cgroup;
pub mod cmdline;
pub mod error;
pub mod stat;
pub mod status;
pub mod tty;
pub mod visibility;

pub use boot::{SystemInfo, parse_btime, parse_uptime, start_time};
pub use cgroup::{PodContainer, parse_cgroup};
pub use cmdline::parse_cmdline;
pub use error::ParseError;
pub use stat::{Stat, parse_stat};
pub use status::{Status, parse_status, parse_switches};
pub use tty::tty_name;
pub use visibility::{Filtered, Pid1, ProcMount, Reason, View};

/// The parser the scanner calls for each file. One shape for all of them is
/// what lets a bench swap any one for another implementation and measure it
/// inside the real scan loop.
#[derive(Clone, Copy, Debug)]
pub struct Parsers {
    pub stat: for<'a> fn(&'a [u8]) -> Result<Stat<'a>, ParseError>,
    pub status: fn(&[u8]) -> Result<Status, ParseError>,
    /// `status` → context switches, for idle time.
    pub switches: fn(&[u8]) -> Result<u64, ParseError>,
    pub cgroup: fn(&[u8]) -> Result<Option<PodContainer>, ParseError>,
    pub cmdline: fn(&[u8]) -> Result<Vec<String>, ParseError>,
    /// `/proc/stat` → boot time in seconds.
    pub btime: fn(&[u8]) -> Result<u64, ParseError>,
    /// `/proc/uptime` → seconds since boot.
    pub uptime: fn(&[u8]) -> Result<f64, ParseError>,
}

impl Default for Parsers {
    fn default() -> Self {
        Self {
            stat: parse_stat,
            status: parse_status,
            switches: parse_switches,
            cgroup: parse_cgroup,
            cmdline: parse_cmdline,
            btime: parse_btime,
            uptime: parse_uptime,
        }
    }
}
