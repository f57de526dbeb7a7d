//! `/proc/<pid>/cmdline`: NUL-separated argv, usually NUL-terminated; empty for
//! kernel threads and zombies. Processes may rewrite it (setproctitle) into one
//! space-separated string; that comes back as a single argument.
//!
//! procfs-core has no parser for this file (the procfs crate splits it while
//! reading), so this one stays. Any bytes are an argv, so it never fails; it
//! returns a `Result` only to share the shape of every other parser.

use sessionguard_core::session::{ARG_MAX, ARGV_ITEMS_MAX};

use super::ParseError;

/// How much of a `cmdline` the scanner reads. A tenant sets argv (up to the
/// kernel's 2 MiB or more); the report keeps at most [`ARGV_ITEMS_MAX`] items
/// of [`ARG_MAX`] bytes, so reading past that costs memory for nothing.
pub const CMDLINE_READ_MAX: usize = ARGV_ITEMS_MAX * (ARG_MAX + 1);

pub fn parse_cmdline(bytes: &[u8]) -> Result<Vec<String>, ParseError> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    Ok(bytes
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(bytes: &[u8]) -> Vec<String> {
        parse_cmdline(bytes).unwrap()
    }

    #[test]
    fn argv_forms() {
        assert_eq!(argv(b"bash\0-l\0"), ["bash", "-l"]);
        assert_eq!(argv(b"sshd: ops@pts/0"), ["sshd: ops@pts/0"]);
        assert_eq!(argv(b"a\0\0b\0"), ["a", "", "b"]);
        assert!(argv(b"").is_empty());
        assert_eq!(argv(b"\xff\0"), ["\u{fffd}"]);
    }

    #[test]
    fn the_read_cap_holds_a_full_report_argv() {
        let full = vec![vec![b'a'; ARG_MAX]; ARGV_ITEMS_MAX].join(&0);
        assert!(full.len() < CMDLINE_READ_MAX);
        assert_eq!(argv(&full).len(), ARGV_ITEMS_MAX);
    }
}
