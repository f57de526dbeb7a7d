//! Whether the proc root shows the agent every process. A filtered proc
//! (`hidepid=`, an LSM denying reads, another pid namespace's proc) does not
//! fail a scan: it yields fewer sessions, and a report of those would tell
//! the controller that the node's logins ended. So the scanner checks what it
//! sees against two facts no filter can hide, before trusting a scan:
//!
//! - pid 1 exists in every pid namespace for as long as the namespace does,
//!   and its `stat` is world-readable; a proc that lists no pid 1, or denies
//!   reading it, is filtered.
//! - `/proc/loadavg`'s fourth field counts every thread on the machine,
//!   whatever the reader may see; far fewer visible processes than that is a
//!   filter that happens to spare pid 1.
//!
//! The proc mount's options (`<root>/self/mountinfo`) are read only to name
//! the cause. The inputs are literals here; `scan::Scanner` gathers them.

use std::fmt;
use std::path::Path;

use procfs_core::{FromRead, LoadAverage};

use super::ParseError;

/// Above this many threads per visible process, the view is taken as
/// filtered. Real nodes run 1-15 (kernel threads are processes of their own,
/// and every node runs hundreds of them); a filtered view shows a handful of
/// processes against hundreds or thousands of threads. Generous, because a
/// false alarm stops the node's reports.
pub const THREADS_PER_PROCESS_MAX: u64 = 64;

/// What the scanner found out about pid 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pid1 {
    Readable,
    /// Not in the directory listing (`hidepid=invisible`, or not a full proc).
    Missing,
    /// Listed, but reading its `stat` was refused (`hidepid=noaccess`, an LSM).
    Denied,
}

/// What one scan saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub pid1: Pid1,
    /// Processes listed in the proc root.
    pub pids: usize,
    /// Threads on the machine (`/proc/loadavg`), if it could be read.
    pub threads: Option<u32>,
}

/// The options of the proc mount that matter for visibility.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcMount {
    /// `hidepid=` as the kernel shows it: `noaccess`, `invisible`,
    /// `ptraceable` (or 1, 2, 4 before Linux 5.8); `None` when off.
    pub hidepid: Option<String>,
    /// `gid=`: members of this group see every process despite `hidepid`.
    pub gid: Option<u32>,
    /// `subset=pid`: only the pid directories are shown.
    pub subset_pid: bool,
}

/// Why a proc root cannot be trusted; the label of the filtered gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Hidepid,
    Denied,
    NoPid1,
    FewPids,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filtered {
    pub reason: Reason,
    pub view: View,
    pub mount: Option<ProcMount>,
}

// === impl View ===

impl View {
    /// True when nothing suggests a filter; then the mount need not be read.
    pub fn is_complete(&self) -> bool {
        let threads_ok = self.threads.is_none_or(|t| {
            u64::from(t) <= (self.pids as u64).saturating_mul(THREADS_PER_PROCESS_MAX)
        });
        self.pid1 == Pid1::Readable && threads_ok
    }

    /// `None` when the view is complete. A `hidepid` mount is named as the
    /// cause whenever the view is not: it is the usual one, and its fix (run
    /// the agent in the mount's `gid=` group) differs from an LSM's.
    pub fn assess(self, mount: Option<ProcMount>) -> Option<Filtered> {
        if self.is_complete() {
            return None;
        }
        let hidepid = mount.as_ref().is_some_and(|m| m.hidepid.is_some());
        let reason = match self.pid1 {
            _ if hidepid => Reason::Hidepid,
            Pid1::Denied => Reason::Denied,
            Pid1::Missing => Reason::NoPid1,
            Pid1::Readable => Reason::FewPids,
        };
        Some(Filtered {
            reason,
            view: self,
            mount,
        })
    }
}

// === impl Reason ===

impl Reason {
    pub const ALL: [Reason; 4] = [
        Reason::Hidepid,
        Reason::Denied,
        Reason::NoPid1,
        Reason::FewPids,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Hidepid => "hidepid",
            Self::Denied => "denied",
            Self::NoPid1 => "no_pid1",
            Self::FewPids => "few_pids",
        }
    }
}

// === impl Filtered ===

impl fmt::Display for Filtered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seen = match self.view.threads {
            Some(t) => format!(
                "visible processes: {}, threads on the machine: {t}",
                self.view.pids
            ),
            None => format!("visible processes: {}", self.view.pids),
        };
        let m = self.mount.clone().unwrap_or_default();
        match self.reason {
            Reason::Hidepid => {
                let gid = m
                    .gid
                    .map_or("a gid= option".to_string(), |g| format!("gid={g}"));
                write!(
                    f,
                    "proc is mounted with hidepid={}, which hides other users' processes from \
                     the agent ({seen}); mount it with {gid} and run the agent in that group",
                    m.hidepid.as_deref().unwrap_or_default()
                )
            }
            Reason::Denied => write!(
                f,
                "reading pid 1's stat is denied, so other processes are hidden from the agent \
                 ({seen}): an LSM (SELinux, AppArmor) or a seccomp/capability setting refuses it"
            ),
            Reason::NoPid1 => write!(
                f,
                "pid 1 is not listed ({seen}): a filtered proc, or not the host's; \
                 --proc-root must be the host's /proc"
            ),
            Reason::FewPids => write!(
                f,
                "far fewer processes than threads ({seen}): a filtered proc, or another pid \
                 namespace's; --proc-root must be the host's /proc"
            ),
        }
    }
}

/// Threads on the machine: the fourth field of `/proc/loadavg`
/// (`running/total`), which counts every pid namespace's.
pub fn parse_loadavg_threads(loadavg: &[u8]) -> Result<u32, ParseError> {
    LoadAverage::from_read(loadavg)
        .map(|l| l.max)
        .map_err(|e| ParseError::from_procfs_core("/proc/loadavg", e))
}

/// The options of the proc mounted at `mount_point`, from a mountinfo file;
/// the last such line wins, as the last mount is the one on top. `None` when
/// no proc is mounted there (a fake tree, a subdirectory). Lines that do not
/// parse are skipped: they cannot be the proc mount we look for.
pub fn proc_mount(mountinfo: &[u8], mount_point: &Path) -> Option<ProcMount> {
    let want = mount_point.as_os_str().as_encoded_bytes();
    mountinfo
        .split(|&b| b == b'\n')
        .filter_map(parse_line)
        .rfind(|(point, fs, _)| fs == b"proc" && unescape(point) == want)
        .map(|(_, _, options)| proc_options(options))
}

/// `36 25 0:21 / /proc rw,nosuid shared:12 - proc proc rw,hidepid=invisible`
/// → (mount point, fs type, super options). Optional fields end at ` - `.
fn parse_line(line: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let mut fields = line.split(|&b| b == b' ');
    let point = fields.nth(4)?;
    fields.find(|f| *f == b"-")?;
    let fs = fields.next()?;
    let _source = fields.next()?;
    Some((point, fs, fields.next()?))
}

fn proc_options(options: &[u8]) -> ProcMount {
    let mut m = ProcMount::default();
    for opt in String::from_utf8_lossy(options).split(',') {
        match opt.split_once('=') {
            Some(("hidepid", v)) if !matches!(v, "0" | "off") => m.hidepid = Some(v.into()),
            Some(("gid", v)) => m.gid = v.parse().ok(),
            Some(("subset", "pid")) => m.subset_pid = true,
            _ => {}
        }
    }
    m
}

/// The kernel writes space, tab, newline and backslash in a mount point as
/// `\ooo` octal escapes.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field.get(i + 1..i + 4).filter(|d| {
            field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3'
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 22 0:22 / /sys rw,nosuid shared:2 - sysfs sysfs rw
88 22 0:21 / /host/proc ro,nosuid,nodev,noexec,relatime master:12 - proc proc rw,gid=4,hidepid=invisible
90 22 0:40 / /tmp/odd\\040dir rw,relatime - proc proc rw,hidepid=2,subset=pid
garbage line
91 22 0:41 / /tmp/not-proc rw - tmpfs tmpfs rw,hidepid=2
";

    fn mount(point: &str) -> Option<ProcMount> {
        proc_mount(MOUNTINFO.as_bytes(), Path::new(point))
    }

    #[test]
    fn the_proc_mount_at_the_root_is_found_with_its_options() {
        assert_eq!(mount("/proc"), Some(ProcMount::default()));
        assert_eq!(
            mount("/host/proc"),
            Some(ProcMount {
                hidepid: Some("invisible".into()),
                gid: Some(4),
                subset_pid: false,
            })
        );
        // Escaped mount point, pre-5.8 numeric hidepid.
        assert_eq!(
            mount("/tmp/odd dir"),
            Some(ProcMount {
                hidepid: Some("2".into()),
                gid: None,
                subset_pid: true,
            })
        );
        assert_eq!(mount("/tmp/not-proc"), None, "not a proc");
        assert_eq!(mount("/sys"), None);
        assert_eq!(mount("/tmp/fake-proc"), None);
        assert_eq!(proc_mount(b"", Path::new("/proc")), None);
    }

    #[test]
    fn the_mount_on_top_wins_and_hidepid_off_is_no_filter() {
        let text = "23 22 0:21 / /proc rw - proc proc rw,hidepid=invisible\n\
                    95 23 0:50 / /proc rw - proc proc rw,hidepid=off\n";
        assert_eq!(
            proc_mount(text.as_bytes(), Path::new("/proc")),
            Some(ProcMount::default())
        );
        let text = "23 22 0:21 / /proc rw - proc proc rw,hidepid=0\n";
        assert_eq!(
            proc_mount(text.as_bytes(), Path::new("/proc"))
                .unwrap()
                .hidepid,
            None
        );
    }

    #[test]
    fn loadavg_threads() {
        assert_eq!(
            parse_loadavg_threads(b"1.04 4.09 4.77 3/97 16635\n").unwrap(),
            97
        );
        for broken in [
            "",
            "1.0 2.0 3.0 97 1\n",
            "1.0 2.0 3.0 3/x 1\n",
            "a b c 1/2 3",
        ] {
            let e = parse_loadavg_threads(broken.as_bytes()).unwrap_err();
            assert_eq!(e.kind(), "/proc/loadavg", "{broken:?}");
        }
    }

    fn view(pid1: Pid1, pids: usize, threads: Option<u32>) -> View {
        View {
            pid1,
            pids,
            threads,
        }
    }

    #[test]
    fn a_full_view_is_complete_whatever_the_mount_says() {
        let hidepid = ProcMount {
            hidepid: Some("invisible".into()),
            ..ProcMount::default()
        };
        for v in [
            view(Pid1::Readable, 76, Some(97)),
            view(Pid1::Readable, 1, None),
            view(Pid1::Readable, 10, Some(640)),
        ] {
            assert!(v.is_complete(), "{v:?}");
            assert_eq!(v.assess(Some(hidepid.clone())), None, "{v:?}");
        }
    }

    #[test]
    fn each_filter_is_named() {
        let hidepid = Some(ProcMount {
            hidepid: Some("invisible".into()),
            gid: None,
            subset_pid: false,
        });
        let cases = [
            (
                view(Pid1::Missing, 1, Some(97)),
                hidepid.clone(),
                Reason::Hidepid,
            ),
            (
                view(Pid1::Denied, 76, Some(97)),
                hidepid.clone(),
                Reason::Hidepid,
            ),
            (view(Pid1::Readable, 3, Some(900)), hidepid, Reason::Hidepid),
            (view(Pid1::Denied, 76, Some(97)), None, Reason::Denied),
            (view(Pid1::Missing, 76, None), None, Reason::NoPid1),
            (
                view(Pid1::Readable, 10, Some(641)),
                Some(ProcMount::default()),
                Reason::FewPids,
            ),
        ];
        for (v, mount, want) in cases {
            let f = v.assess(mount.clone()).unwrap_or_else(|| panic!("{v:?}"));
            assert_eq!(f.reason, want, "{v:?} {mount:?}");
        }
    }

    #[test]
    fn the_message_says_what_was_seen_and_what_to_do() {
        let f = view(Pid1::Missing, 1, Some(97))
            .assess(Some(ProcMount {
                hidepid: Some("invisible".into()),
                gid: Some(4),
                subset_pid: false,
            }))
            .unwrap();
        let text = f.to_string();
        for part in ["hidepid=invisible", "processes: 1,", "machine: 97", "gid=4"] {
            assert!(text.contains(part), "{part}: {text}");
        }
        let f = view(Pid1::Denied, 5, None).assess(None).unwrap();
        assert!(f.to_string().contains("denied"), "{f}");
    }
}
