//! `/proc/<pid>/status`: `Uid:` (real uid) and `NSpid:` (pid in each nested
//! pid namespace, innermost last) of session leaders, parsed by procfs-core,
//! which wants every line a kernel since 2.6 writes; it runs only for session
//! leaders, so its cost does not show in a scan (see `agent/README.md`).
//!
//! And the context switch counters of every process on a session's terminal,
//! on every tick ([`parse_switches`]): hand-written, since it only needs the
//! file's last two lines and runs far more often.

use procfs_core::FromRead;

use super::ParseError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub uid: u32,
    /// The pid as seen inside the process's own pid namespace; `None` on
    /// kernels older than 4.1, which lack `NSpid`.
    pub ns_pid: Option<u32>,
}

pub fn parse_status(bytes: &[u8]) -> Result<Status, ParseError> {
    // `Name:` is whatever bytes the process chose; they must not cost its uid.
    let text = String::from_utf8_lossy(bytes);
    let status = procfs_core::process::Status::from_read(text.as_bytes())
        .map_err(|e| ParseError::from_procfs_core("status", e))?;
    let ns_pid = match status.nspid.as_deref().and_then(<[i32]>::last) {
        Some(&pid) => Some(
            u32::try_from(pid)
                .map_err(|_| ParseError::new("status", format!("NSpid {pid} is negative")))?,
        ),
        None => None,
    };
    Ok(Status {
        uid: status.ruid,
        ns_pid,
    })
}

/// `voluntary_ctxt_switches` + `nonvoluntary_ctxt_switches`. A process
/// blocked in `read` on its terminal wakes (one voluntary switch) for each
/// keystroke, while its CPU time, counted in 10 ms ticks, may not move.
pub fn parse_switches(bytes: &[u8]) -> Result<u64, ParseError> {
    let mut voluntary = None;
    let mut nonvoluntary = None;
    // The counters are the last lines the kernel writes.
    for line in bytes.split(|&b| b == b'\n').rev() {
        let (slot, name, value) = if let Some(v) = line.strip_prefix(b"voluntary_ctxt_switches:") {
            (&mut voluntary, "voluntary_ctxt_switches", v)
        } else if let Some(v) = line.strip_prefix(b"nonvoluntary_ctxt_switches:") {
            (&mut nonvoluntary, "nonvoluntary_ctxt_switches", v)
        } else {
            continue;
        };
        let text = std::str::from_utf8(value).unwrap_or_default().trim();
        *slot =
            Some(text.parse::<u64>().map_err(|_| {
                ParseError::new("status", format!("{name} is not a number: {text:?}"))
            })?);
        if voluntary.is_some() && nonvoluntary.is_some() {
            break;
        }
    }
    match (voluntary, nonvoluntary) {
        (Some(v), Some(n)) => Ok(v.saturating_add(n)),
        _ => Err(ParseError::new(
            "status",
            "no voluntary_ctxt_switches / nonvoluntary_ctxt_switches lines",
        )),
    }
}

/// `Tgid:`, the process a thread belongs to: a tid equal to its tgid is a
/// process, any other a thread of one. Hand-written: it is the fifth line,
/// and only pids found without a listing are asked (see `scan/cursor.rs`).
pub fn parse_tgid(bytes: &[u8]) -> Result<u32, ParseError> {
    let line = bytes
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"Tgid:"))
        .ok_or_else(|| ParseError::new("status", "no Tgid line"))?;
    let text = std::str::from_utf8(line).unwrap_or_default().trim();
    text.parse()
        .map_err(|_| ParseError::new("status", format!("Tgid is not a number: {text:?}")))
}

impl Status {
    /// PID 1 of its namespace: the container's init.
    pub fn is_namespace_init(&self) -> bool {
        self.ns_pid == Some(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shell in a container (pid 17 inside, 4242 on the host), as 6.x writes it.
    const SHELL: &str = "Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\n\
        Pid:\t4242\nPPid:\t4241\nTracerPid:\t0\nUid:\t1000\t1001\t1002\t1003\nGid:\t1000\t1000\t1000\t1000\n\
        FDSize:\t256\nGroups:\t4 27 \nNStgid:\t4242\t17\nNSpid:\t4242\t17\nNSpgid:\t4242\t17\nNSsid:\t4242\t17\n\
        Kthread:\t0\nVmPeak:\t    8692 kB\nVmSize:\t    8692 kB\nVmLck:\t       0 kB\nVmPin:\t       0 kB\n\
        VmHWM:\t    4800 kB\nVmRSS:\t    4800 kB\nRssAnon:\t    1024 kB\nRssFile:\t    3776 kB\n\
        RssShmem:\t       0 kB\nVmData:\t    1200 kB\nVmStk:\t     132 kB\nVmExe:\t     892 kB\n\
        VmLib:\t    2100 kB\nVmPTE:\t      56 kB\nVmSwap:\t       0 kB\nHugetlbPages:\t       0 kB\n\
        CoreDumping:\t0\nTHP_enabled:\t1\nuntag_mask:\t0xffffffffffffffff\nThreads:\t1\nSigQ:\t0/96365\n\
        SigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\nSigBlk:\t0000000000010000\n\
        SigIgn:\t0000000000380004\nSigCgt:\t000000004b817efb\nCapInh:\t0000000000000000\n\
        CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\n\
        CapAmb:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t0\nSeccomp_filters:\t0\n\
        Speculation_Store_Bypass:\tthread vulnerable\nSpeculationIndirectBranch:\tconditional enabled\n\
        Cpus_allowed:\t3\nCpus_allowed_list:\t0-1\nMems_allowed:\t00000000,00000001\nMems_allowed_list:\t0\n\
        voluntary_ctxt_switches:\t150\nnonvoluntary_ctxt_switches:\t3\n";

    fn parse(text: &str) -> Result<Status, ParseError> {
        parse_status(text.as_bytes())
    }

    #[test]
    fn reads_the_real_uid_and_innermost_pid() {
        let s = parse(SHELL).unwrap();
        assert_eq!(
            s,
            Status {
                uid: 1000,
                ns_pid: Some(17)
            }
        );
        assert!(!s.is_namespace_init());
        let init = SHELL.replace("NSpid:\t4242\t17", "NSpid:\t4100\t1");
        assert!(parse(&init).unwrap().is_namespace_init());
        let on_the_host = SHELL.replace("NSpid:\t4242\t17", "NSpid:\t1");
        assert!(parse(&on_the_host).unwrap().is_namespace_init());
    }

    #[test]
    fn old_kernels_without_nspid() {
        let old: String = SHELL
            .lines()
            .filter(|l| !l.starts_with("NS"))
            .map(|l| format!("{l}\n"))
            .collect();
        let s = parse(&old).unwrap();
        assert_eq!(
            s,
            Status {
                uid: 1000,
                ns_pid: None
            }
        );
        assert!(!s.is_namespace_init());
    }

    #[test]
    fn a_name_that_is_not_utf8_keeps_the_uid() {
        let mut bytes = b"Name:\t\xff\xfe(\n".to_vec();
        bytes.extend_from_slice(SHELL.split_once('\n').unwrap().1.as_bytes());
        assert_eq!(parse_status(&bytes).unwrap().uid, 1000);
    }

    #[test]
    fn malformed() {
        for (text, want) in [
            (String::new(), "a field is missing"),
            (
                "Name:\tsh\nUid:\t0\t0\t0\t0\n".to_string(),
                "a field is missing",
            ),
            (SHELL.replace("Uid:\t1000", "Uid:\tx"), "\"x\""),
            (
                SHELL.replace("NSpid:\t4242\t17", "NSpid:\t4242\tz"),
                "\"z\"",
            ),
            (SHELL.replace("NSpid:\t4242\t17", "NSpid:\t-3"), "NSpid -3"),
        ] {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.kind(), "status");
            assert!(e.to_string().contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_thread_group_of_a_tid() {
        assert_eq!(parse_tgid(SHELL.as_bytes()), Ok(4242));
        // NStgid is not Tgid.
        assert!(parse_tgid(b"Name:\tx\nNStgid:\t7\t1\n").is_err());
        let e = parse_tgid(b"Tgid:\tmany\n").unwrap_err();
        assert!(e.to_string().contains("\"many\""), "{e}");
    }

    #[test]
    fn context_switches() {
        assert_eq!(parse_switches(SHELL.as_bytes()).unwrap(), 153);
        // Names the kernel might put after them one day are ignored.
        let more = format!("{SHELL}x_ctxt_switches:\t9\n");
        assert_eq!(parse_switches(more.as_bytes()).unwrap(), 153);
        for (text, want) in [
            (String::new(), "no voluntary_ctxt_switches"),
            (
                SHELL.replace("nonvoluntary_ctxt_switches:\t3\n", ""),
                "no voluntary_ctxt_switches",
            ),
            (
                SHELL.replace(
                    "voluntary_ctxt_switches:\t150",
                    "voluntary_ctxt_switches:\t-1",
                ),
                "voluntary_ctxt_switches is not a number: \"-1\"",
            ),
        ] {
            let e = parse_switches(text.as_bytes()).unwrap_err();
            assert_eq!(e.kind(), "status");
            assert!(e.to_string().contains(want), "{text:?}: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = parse_status(&bytes);
            let _ = parse_switches(&bytes);
        }

        #[test]
        fn never_panics_on_a_mangled_line(at in 0usize..57, junk in "[ -~\t]{0,30}") {
            let text: String = SHELL
                .lines()
                .enumerate()
                .map(|(i, l)| if i == at { format!("{junk}\n") } else { format!("{l}\n") })
                .collect();
            let _ = parse(&text);
        }
    }
}
