//! What a test checks about a process in /proc: its cgroup2 path and its terminal.
//! Parsers are pure functions over the files' text.

/// The cgroup2 path (the `0::` line) of `/proc/<pid>/cgroup` text.
pub fn parse_cgroup_v2(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// `tty_nr` (field 7) of `/proc/<pid>/stat` text; fields counted after the last ')'.
pub fn parse_tty_nr(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace()
        .nth(4)?
        .parse::<i64>()
        .ok()
        .map(|n| n as u32)
}

/// The parent pid (field 4) of `/proc/<pid>/stat` text.
pub fn parse_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Whether a `tty_nr` is a Unix98 pty slave (/dev/pts/N: majors 136-143).
pub fn is_pts(tty_nr: u32) -> bool {
    let major = (tty_nr >> 8) & 0xfff;
    (136..=143).contains(&major)
}

/// The pts number of a `tty_nr`, as in /dev/pts/<n>: the minor, whose bits above the
/// low 8 sit in bits 20-31 of the encoding.
pub fn pts_number(tty_nr: u32) -> u32 {
    (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00)
}

/// Reads and parses /proc/<pid>/cgroup.
pub fn cgroup_v2(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    parse_cgroup_v2(&text).map(str::to_string)
}

/// Reads and parses /proc/<pid>/stat's parent pid.
pub fn ppid(pid: u32) -> Option<u32> {
    parse_ppid(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Reads and parses /proc/<pid>/stat's tty_nr.
pub fn tty_nr(pid: u32) -> Option<u32> {
    parse_tty_nr(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// argv of a process, from /proc/<pid>/cmdline.
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v2_line_is_picked_from_a_hybrid_file() {
        let text = "9:name=systemd:/\n4:memory:/x\n0::/a.slice/b.scope\n";
        assert_eq!(parse_cgroup_v2(text), Some("/a.slice/b.scope"));
        assert_eq!(parse_cgroup_v2("1:cpu:/\n"), None);
    }

    #[test]
    fn tty_nr_of_a_pts_and_of_no_terminal() {
        // /dev/pts/3: major 136, minor 3 => 136 << 8 | 3 = 34819.
        let stat = "77 (sh (x)) S 1 77 77 34819 77 0";
        let nr = parse_tty_nr(stat).unwrap();
        assert_eq!(nr, 34819);
        assert!(is_pts(nr));
        assert_eq!(pts_number(nr), 3);
        let none = "78 (sleep) S 1 78 78 0 -1 0";
        assert!(!is_pts(parse_tty_nr(none).unwrap()));
    }

    #[test]
    fn parent_pid_after_a_name_with_parentheses() {
        assert_eq!(parse_ppid("77 (sh (x) y) S 4242 77 77 0"), Some(4242));
        assert_eq!(parse_ppid("77 (truncated"), None);
    }

    #[test]
    fn high_pts_numbers_use_the_extended_minor() {
        // /dev/pts/300: major 136, minor 300 (low 8 bits, then bits 20+).
        let nr = (136 << 8) | (300 & 0xff) | ((300 & !0xff) << 12);
        assert!(is_pts(nr));
        assert_eq!(pts_number(nr), 300);
    }
}
