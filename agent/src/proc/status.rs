//! `/proc/<pid>/status`: only `Uid:` (real uid) and `NSpid:` (pid in each
//! nested pid namespace, innermost last) are used.

use super::ParseError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub uid: u32,
    /// The pid as seen inside the process's own pid namespace; `None` on
    /// kernels older than 4.1, which lack `NSpid`.
    pub ns_pid: Option<u32>,
}

pub fn parse_status(bytes: &[u8]) -> Result<Status, ParseError> {
    // `Name:` is the process's own choice of bytes; only Uid and NSpid matter.
    let text = String::from_utf8_lossy(bytes);
    let mut uid = None;
    let mut ns_pid = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Uid:") {
            let real = rest
                .split_whitespace()
                .next()
                .ok_or_else(|| bad("Uid line is empty"))?;
            uid = Some(
                real.parse()
                    .map_err(|_| bad(format!("Uid {real:?} is not a number")))?,
            );
        } else if let Some(rest) = line.strip_prefix("NSpid:") {
            let inner = rest
                .split_whitespace()
                .last()
                .ok_or_else(|| bad("NSpid line is empty"))?;
            ns_pid = Some(
                inner
                    .parse()
                    .map_err(|_| bad(format!("NSpid {inner:?} is not a number")))?,
            );
        }
    }
    Ok(Status {
        uid: uid.ok_or_else(|| bad("no Uid line"))?,
        ns_pid,
    })
}

impl Status {
    /// PID 1 of its namespace: the container's init.
    pub fn is_namespace_init(&self) -> bool {
        self.ns_pid == Some(1)
    }
}

fn bad(reason: impl Into<String>) -> ParseError {
    ParseError::new("status", reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHELL: &str = "Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\nPid:\t4242\nPPid:\t4241\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nNSpid:\t4242\t17\nNSpgid:\t4242\t17\n";

    #[test]
    fn reads_uid_and_innermost_pid() {
        assert_eq!(
            parse_status(SHELL.as_bytes()).unwrap(),
            Status {
                uid: 1000,
                ns_pid: Some(17)
            }
        );
        let init = SHELL.replace("NSpid:\t4242\t17", "NSpid:\t4100\t1");
        assert!(parse_status(init.as_bytes()).unwrap().is_namespace_init());
    }

    #[test]
    fn old_kernels_without_nspid() {
        let s = parse_status(b"Name:\tsh\nUid:\t0\t0\t0\t0\n").unwrap();
        assert_eq!(
            s,
            Status {
                uid: 0,
                ns_pid: None
            }
        );
        assert!(!s.is_namespace_init());
    }

    #[test]
    fn malformed() {
        for (text, want) in [
            ("", "no Uid line"),
            ("Uid:\n", "Uid line is empty"),
            ("Uid:\tx\t0\n", "not a number"),
            ("Uid:\t0\nNSpid:\n", "NSpid line is empty"),
            ("Uid:\t0\nNSpid:\t3\tz\n", "NSpid \"z\""),
        ] {
            let e = parse_status(text.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
