//! `/proc/<pid>/stat`: `pid (comm) state ppid pgrp session tty_nr ... starttime ...`.
//!
//! `comm` may hold spaces, parentheses and tabs (it is whatever the process
//! named itself), so the fields after it are found from the *last* `)`.
//!
//! Hand-written: the one file procfs-core has a parser for that the agent
//! does not use it for. This parser runs for every pid on every full scan,
//! and procfs-core's (a string conversion, an owned `comm`, all 52 fields)
//! made the full scan of a fake 20,000-process node 13-14 % slower; it also
//! panics on some malformed lines this one rejects. Figures in
//! `agent/README.md`.

use super::ParseError;

/// The fields the agent needs from one stat line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat<'a> {
    pub pid: u32,
    pub comm: &'a [u8],
    pub state: u8,
    pub ppid: u32,
    pub session: u32,
    /// Controlling terminal in the kernel's `new_encode_dev` form (see
    /// [`crate::proc::tty`]); 0 when none.
    pub tty_nr: u32,
    /// CPU time in user and kernel mode, clock ticks: with the context
    /// switches in `status`, what tells an active session from an idle one.
    pub utime: u64,
    pub stime: u64,
    /// Clock ticks after boot.
    pub starttime: u64,
}

// Field positions counted from `state` (field 3 in proc(5)).
const SESSION: usize = 3;
const TTY_NR: usize = 4;
const UTIME: usize = 11;
const STIME: usize = 12;
const STARTTIME: usize = 19;

/// Parses one stat line; `comm` borrows from it, so the scanner can reuse
/// one buffer for every pid.
pub fn parse_stat(line: &[u8]) -> Result<Stat<'_>, ParseError> {
    let open = line
        .iter()
        .position(|&b| b == b'(')
        .ok_or_else(|| missing("'('"))?;
    let close = line
        .iter()
        .rposition(|&b| b == b')')
        .ok_or_else(|| missing("')'"))?;
    if close < open {
        return Err(missing("')' after '('"));
    }
    let pid = num::<u32>(trim(&line[..open]), "pid")?;
    let comm = &line[open + 1..close];
    let mut fields = line[close + 1..]
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let mut take =
        |want: usize, seen: &mut usize, name: &'static str| -> Result<&[u8], ParseError> {
            let f = fields
                .nth(want - *seen)
                .ok_or_else(|| ParseError::new("stat", format!("truncated before {name}")))?;
            *seen = want + 1;
            Ok(f)
        };
    let mut seen = 0;
    let state = take(0, &mut seen, "state")?;
    let ppid = num::<u32>(take(1, &mut seen, "ppid")?, "ppid")?;
    let session = num::<i64>(take(SESSION, &mut seen, "session")?, "session")?;
    // The kernel prints the 32-bit encoding with `%d`: a minor of 2^19 or
    // more sets bit 31 and shows as negative, and that is still a terminal.
    let tty_nr = num::<i32>(take(TTY_NR, &mut seen, "tty_nr")?, "tty_nr")? as u32;
    let utime = num::<u64>(take(UTIME, &mut seen, "utime")?, "utime")?;
    let stime = num::<u64>(take(STIME, &mut seen, "stime")?, "stime")?;
    let starttime = num::<u64>(take(STARTTIME, &mut seen, "starttime")?, "starttime")?;
    if state.len() != 1 {
        return Err(ParseError::new("stat", "state is not one character"));
    }
    Ok(Stat {
        pid,
        comm,
        state: state[0],
        ppid,
        session: u32::try_from(session).unwrap_or(0),
        tty_nr,
        utime,
        stime,
        starttime,
    })
}

impl Stat<'_> {
    /// Zombies and dead tasks hold no session any more.
    pub fn is_gone(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }

    pub fn comm_lossy(&self) -> String {
        String::from_utf8_lossy(self.comm).into_owned()
    }
}

fn missing(what: &str) -> ParseError {
    ParseError::new("stat", format!("no {what} around the command name"))
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

fn num<T: std::str::FromStr>(b: &[u8], name: &'static str) -> Result<T, ParseError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            ParseError::new(
                "stat",
                format!("{name} is not a number: {:?}", String::from_utf8_lossy(b)),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASH: &str = "4242 (bash) S 4241 4242 4242 34816 4300 4194560 1234 0 0 0 3 1 0 0 20 0 1 0 987654 8900608 1200 18446744073709551615 1 1 0 0 0 0 65536 3670020 1266777851 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn parses_the_fields_we_use() {
        let s = parse_stat(BASH.as_bytes()).unwrap();
        assert_eq!(
            (s.pid, s.comm, s.state, s.ppid),
            (4242, &b"bash"[..], b'S', 4241)
        );
        assert_eq!((s.session, s.tty_nr, s.starttime), (4242, 34816, 987654));
        assert_eq!((s.utime, s.stime), (3, 1));
        assert!(!s.is_gone());
    }

    #[test]
    fn awkward_command_names() {
        for comm in [
            "a b",
            "x) S 1 2 3 4 5",
            "(sd-pam)",
            "tab\there",
            ") (",
            "",
            "ünï",
        ] {
            let line = BASH.replacen("bash", comm, 1);
            let s = parse_stat(line.as_bytes()).unwrap_or_else(|e| panic!("{comm:?}: {e}"));
            assert_eq!(s.comm, comm.as_bytes());
            assert_eq!((s.tty_nr, s.starttime), (34816, 987654), "{comm:?}");
        }
    }

    #[test]
    fn no_terminal() {
        // tty_nr 0, then tpgid -1.
        let line = "7 (kworker/0:1) I 2 0 0 0 -1 69238880 0 0 0 0 0 0 0 0 20 0 1 0 35 0 0 0";
        let s = parse_stat(line.as_bytes()).unwrap();
        assert_eq!((s.tty_nr, s.session), (0, 0));
    }

    #[test]
    fn negative_tty_nr_is_a_terminal_with_a_large_minor() {
        // /dev/pts/524288: major 136, minor 2^19, whose bit 19 lands in bit 31.
        let line = BASH.replacen(" 34816 ", " -2147448832 ", 1);
        let s = parse_stat(line.as_bytes()).unwrap();
        assert_eq!(s.tty_nr, 0x8000_8800);
        assert_eq!(crate::proc::tty_name(s.tty_nr), "pts/524288");
        // Out of the int range the kernel prints: not a tty_nr at all.
        let line = BASH.replacen(" 34816 ", " 4294967296 ", 1);
        let e = parse_stat(line.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("tty_nr is not a number"), "{e}");
    }

    #[test]
    fn zombies_are_gone() {
        assert!(
            parse_stat(BASH.replacen(") S", ") Z", 1).as_bytes())
                .unwrap()
                .is_gone()
        );
    }

    #[test]
    fn malformed_lines_say_what_is_wrong() {
        let cases = [
            ("", "no '('"),
            ("12 (sh S 1", "no ')'"),
            ("12 )sh( S 1", "')' after '('"),
            ("x (sh) S 1 2 3 4", "pid is not a number"),
            ("12 (sh) S 1 2 3", "truncated before tty_nr"),
            ("12 (sh) S 1 2 3 abc 5", "tty_nr is not a number"),
            ("12 (sh) S 1 2 3 4 5 6 7 8", "truncated before utime"),
            (
                "12 (sh) S 1 2 3 4 5 6 7 8 9 10 11 12",
                "truncated before starttime",
            ),
            (
                "12 (sh) S 1 2 3 4 5 6 7 8 9 10 -1 12 13",
                "utime is not a number",
            ),
            (
                "12 (sh) SS 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19",
                "one character",
            ),
        ];
        for (line, want) in cases {
            let e = parse_stat(line.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{line:?}: {e}");
            assert!(e.starts_with("malformed stat"), "{e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = parse_stat(&bytes);
        }

        #[test]
        fn never_panics_after_a_valid_prefix(
            comm in "[ -~]{0,20}",
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let mut line = format!("42 ({comm}) ").into_bytes();
            line.extend_from_slice(&tail);
            let _ = parse_stat(&line);
        }

        #[test]
        fn never_panics_on_numeric_tails(tail in "[-0-9 SRZ]{0,200}") {
            let _ = parse_stat(format!("42 (sh) {tail}").as_bytes());
        }

        #[test]
        fn any_comm_round_trips(comm in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let mut line = b"99 (".to_vec();
            line.extend_from_slice(&comm);
            line.extend_from_slice(b") R 1 99 99 34817 0 0 0 0 0 0 0 0 0 0 20 0 1 0 555 0 0\n");
            let s = parse_stat(&line).unwrap();
            proptest::prop_assert_eq!(s.comm, &comm[..]);
            proptest::prop_assert_eq!((s.tty_nr, s.starttime), (34817, 555));
        }
    }
}
