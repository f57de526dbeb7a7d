//! `/proc/<pid>/cmdline`: NUL-separated argv, usually NUL-terminated; empty for
//! kernel threads and zombies. Processes may rewrite it (setproctitle) into one
//! space-separated string; that comes back as a single argument.

use sessionguard_core::session::{ARG_MAX, ARGV_ITEMS_MAX};

/// How much of a `cmdline` the scanner reads. A tenant sets argv (up to the
/// kernel's 2 MiB or more); the report keeps at most [`ARGV_ITEMS_MAX`] items
/// of [`ARG_MAX`] bytes, so reading past that costs memory for nothing.
pub const CMDLINE_READ_MAX: usize = ARGV_ITEMS_MAX * (ARG_MAX + 1);

pub fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_forms() {
        assert_eq!(parse_cmdline(b"bash\0-l\0"), ["bash", "-l"]);
        assert_eq!(parse_cmdline(b"sshd: ops@pts/0"), ["sshd: ops@pts/0"]);
        assert_eq!(parse_cmdline(b"a\0\0b\0"), ["a", "", "b"]);
        assert!(parse_cmdline(b"").is_empty());
        assert_eq!(parse_cmdline(b"\xff\0"), ["\u{fffd}"]);
    }

    #[test]
    fn the_read_cap_holds_a_full_report_argv() {
        let full = vec![vec![b'a'; ARG_MAX]; ARGV_ITEMS_MAX].join(&0);
        assert!(full.len() < CMDLINE_READ_MAX);
        assert_eq!(parse_cmdline(&full).len(), ARGV_ITEMS_MAX);
    }
}
