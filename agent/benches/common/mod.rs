//! procfs-core's stat parser in the agent's parser shape: the alternative to
//! the agent's own, which both scan benches swap into the real scan loop.
//! (The agent uses procfs-core for every other file it has a parser for.)

use procfs_core::FromRead;
use procfs_core::ProcError;
use procfs_core::process::Stat as CoreStat;
use sessionguard_agent::proc::{ParseError, Parsers, Stat};

fn error(file: &'static str, e: ProcError) -> ParseError {
    ParseError::new(file, e.to_string())
}

/// procfs-core's `Stat`, mapped onto the agent's. `comm` is located in the
/// line again (two byte searches, tens of nanoseconds against a gap of
/// hundreds), since procfs-core hands back an owned copy and the agent's
/// `Stat` borrows from the buffer.
pub fn stat(bytes: &[u8]) -> Result<Stat<'_>, ParseError> {
    let s = CoreStat::from_read(bytes).map_err(|e| error("stat", e))?;
    let open = bytes.iter().position(|&b| b == b'(').unwrap_or(0);
    let close = bytes.iter().rposition(|&b| b == b')').unwrap_or(open);
    let num = |v: i32, name: &str| {
        u32::try_from(v).map_err(|_| ParseError::new("stat", format!("{name} {v} is negative")))
    };
    Ok(Stat {
        pid: num(s.pid, "pid")?,
        comm: &bytes[open + 1..close],
        state: u8::try_from(s.state).unwrap_or(b'?'),
        ppid: num(s.ppid, "ppid")?,
        session: u32::try_from(s.session).unwrap_or(0),
        tty_nr: s.tty_nr as u32,
        utime: s.utime,
        stime: s.stime,
        starttime: s.starttime,
    })
}

/// The scanner's parsers with procfs-core's stat.
pub fn with_procfs_core_stat() -> Parsers {
    Parsers {
        stat,
        ..Parsers::default()
    }
}
