//! Fixtures for tests and benchmarks: a fake proc tree written to a
//! directory, readable through `--proc-root` exactly like the real one.
//!
//! ```no_run
//! # use sessionguard_agent::testing::{FakeProc, pts};
//! let fake = FakeProc::create("/tmp/fake-proc".as_ref(), 1_764_000_000).unwrap();
//! fake.process(4242).comm("bash").argv(&["bash", "-l"]).tty(pts(3)).leads_session()
//!     .in_container("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", &"ab".repeat(32)).write().unwrap();
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sessionguard_core::{ContainerId, PodUid, Session};

pub struct FakeProc {
    root: PathBuf,
}

/// The `tty_nr` of `/dev/pts/n` as the kernel writes it: devpts numbers every
/// pty on major 136 with a 20-bit minor, and `new_encode_dev` puts minor bits
/// 0-7 in bits 0-7 and minor bits 8-19 in bits 20-31.
pub fn pts(n: u32) -> u32 {
    (136 << 8) | (n & 0xff) | ((n & 0xfff00) << 12)
}

/// A login session with every field set, for tests to override: `bash` on
/// pts/0 in container `aaaa…` of pod `0f1e2d3c-…`, started at 1764000000 s,
/// not yet named from the API server.
pub fn session() -> Session {
    Session {
        pod_uid: PodUid::parse("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0").unwrap(),
        container_id: ContainerId::parse(&"a".repeat(64)).unwrap(),
        tty: "pts/0".into(),
        pid: 1,
        command: "bash".into(),
        argv: vec!["bash".into()],
        uid: 0,
        started_at: jiff::Timestamp::from_second(1_764_000_000).unwrap(),
        processes: 1,
        console: false,
        idle_seconds: 0,
        init: false,
        namespace: None,
        pod_name: None,
        container_name: None,
    }
}

/// A systemd-driver containerd cgroup line for a pod's container.
pub fn containerd_cgroup(pod_uid: &str, container_id: &str) -> String {
    let u = pod_uid.replace('-', "_");
    format!(
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{container_id}.scope\n"
    )
}

/// `/proc/stat` as a 2-CPU kernel writes it, booted at `btime`.
pub fn kernel_stat(btime: u64) -> String {
    format!(
        "cpu  127809 12644 35893 110127 486 0 165 254 0 0\n\
         cpu0 64149 5911 17396 55996 76 0 18 125 0 0\n\
         cpu1 63660 6733 18496 54131 410 0 147 129 0 0\n\
         intr 1764750 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1 1 15 0 0 0 0 287 137\n\
         ctxt 2902700\nbtime {btime}\nprocesses 47014\nprocs_running 9\nprocs_blocked 0\n\
         softirq 552741 0 86135 6 33257 118356 0 2993 62400 0 249594\n"
    )
}

/// A population shaped like a large node: `processes` pids spread over pods
/// of 100 and containers of 10, one in 500 a shell leading its own terminal.
/// The fake tree the scan benches measure.
pub fn populate_node(fake: &FakeProc, processes: u32) -> io::Result<()> {
    for pid in 1..=processes {
        let pod = format!("{:08x}-0000-4000-8000-{:012x}", pid / 100, pid / 100);
        let cid = format!("{:064x}", pid / 10);
        let p = fake
            .process(pid)
            .comm("worker")
            .argv(&["/usr/bin/worker", "--flag"])
            .in_container(&pod, &cid);
        if pid % 500 == 0 {
            p.tty(pts(pid / 500)).leads_session()
        } else {
            p
        }
        .write()?;
    }
    Ok(())
}

impl FakeProc {
    /// A scanner of this tree that resyncs only when a test asks for it.
    pub fn scanner(&self) -> crate::scan::Scanner {
        crate::scan::Scanner::new(
            crate::scan::ProcFs::open(self.root()).expect("fake tree opens"),
            crate::scan::ScannerConfig {
                resync_every: 1000,
                ..crate::scan::ScannerConfig::default()
            },
        )
        .expect("scanner over a fake tree")
    }

    /// A proc root with `stat` (holding `btime`), `uptime`, and pid 1 (an
    /// init outside any pod): every pid namespace has one, and the scanner
    /// takes a proc without it as filtered.
    pub fn create(root: &Path, btime: u64) -> io::Result<Self> {
        fs::create_dir_all(root)?;
        fs::write(root.join("stat"), kernel_stat(btime))?;
        fs::write(root.join("uptime"), "1000.00 1900.00\n")?;
        let fake = Self {
            root: root.to_path_buf(),
        };
        fake.process(1).comm("init").argv(&["/sbin/init"]).write()?;
        Ok(fake)
    }

    /// Writes a top-level file such as `loadavg` or `self/mountinfo`.
    pub fn write_top(&self, path: &str, contents: &str) -> io::Result<()> {
        let path = self.root.join(path);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(path, contents)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn process(&self, pid: u32) -> FakeProcess<'_> {
        FakeProcess {
            fake: self,
            pid,
            comm: format!("proc{pid}"),
            ppid: 1,
            session: 0,
            tty_nr: 0,
            starttime: 1000 + pid as u64,
            state: 'S',
            uid: 0,
            ns_pid: vec![pid],
            tgid: None,
            cgroup: "0::/system.slice/some.service\n".into(),
            argv: Vec::new(),
            cpu: (1, 1),
            switches: (150, 3),
        }
    }

    /// Points `thread-self` at a tid, as the pid cursor's probe would find
    /// it after the kernel handed out `pid` (see `scan/cursor.rs`). A tree
    /// without it has no cursor: every tick lists.
    pub fn set_newest_pid(&self, pid: u32) -> io::Result<()> {
        let link = self.root.join("thread-self");
        match fs::remove_file(&link) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::os::unix::fs::symlink(format!("1/task/{pid}"), link)
    }

    /// Removes a pid, as if it exited.
    pub fn kill(&self, pid: u32) -> io::Result<()> {
        fs::remove_dir_all(self.root.join(pid.to_string()))
    }

    /// Writes raw text into one of a pid's files (for malformed-input tests).
    pub fn write_raw(&self, pid: u32, file: &str, contents: &[u8]) -> io::Result<()> {
        let dir = self.root.join(pid.to_string());
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(file), contents)
    }
}

/// One fake process, written by [`FakeProcess::write`].
pub struct FakeProcess<'a> {
    fake: &'a FakeProc,
    pid: u32,
    comm: String,
    ppid: u32,
    session: u32,
    tty_nr: u32,
    starttime: u64,
    state: char,
    uid: u32,
    ns_pid: Vec<u32>,
    /// The process a thread belongs to; `None`: this is a process.
    tgid: Option<u32>,
    cgroup: String,
    argv: Vec<String>,
    /// utime, stime (clock ticks).
    cpu: (u64, u64),
    /// Voluntary, nonvoluntary context switches.
    switches: (u64, u64),
}

impl FakeProcess<'_> {
    pub fn comm(mut self, comm: &str) -> Self {
        self.comm = comm.into();
        self
    }
    pub fn argv(mut self, argv: &[&str]) -> Self {
        self.argv = argv.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn parent(mut self, ppid: u32) -> Self {
        self.ppid = ppid;
        self
    }
    pub fn tty(mut self, tty_nr: u32) -> Self {
        self.tty_nr = tty_nr;
        self
    }
    pub fn session(mut self, sid: u32) -> Self {
        self.session = sid;
        self
    }
    /// setsid() was called by this process: its pid is its session id.
    pub fn leads_session(mut self) -> Self {
        self.session = self.pid;
        self
    }
    pub fn started_at_tick(mut self, ticks: u64) -> Self {
        self.starttime = ticks;
        self
    }
    pub fn zombie(mut self) -> Self {
        self.state = 'Z';
        self
    }
    /// A thread of `tgid`: a directory the kernel does not list, whose
    /// `status` names the process it belongs to.
    pub fn thread_of(mut self, tgid: u32) -> Self {
        self.tgid = Some(tgid);
        self
    }
    pub fn uid(mut self, uid: u32) -> Self {
        self.uid = uid;
        self
    }
    /// The container's PID 1 (its init), as `tty: true` consoles are.
    pub fn container_init(mut self) -> Self {
        self.ns_pid = vec![self.pid, 1];
        self
    }
    pub fn in_container(mut self, pod_uid: &str, container_id: &str) -> Self {
        self.cgroup = containerd_cgroup(pod_uid, container_id);
        self
    }
    pub fn cgroup(mut self, text: &str) -> Self {
        self.cgroup = text.into();
        self
    }
    /// CPU time so far: user and system clock ticks.
    pub fn cpu(mut self, utime: u64, stime: u64) -> Self {
        self.cpu = (utime, stime);
        self
    }
    /// Context switches so far: voluntary and nonvoluntary.
    pub fn switches(mut self, voluntary: u64, nonvoluntary: u64) -> Self {
        self.switches = (voluntary, nonvoluntary);
        self
    }

    /// Writes the files into `<root>/<pid>`, over any that are there (the
    /// directory, and so its inode, stays).
    pub fn write(self) -> io::Result<()> {
        let dir = self.fake.root.join(self.pid.to_string());
        self.write_into(&dir)
    }

    /// Replaces `<root>/<pid>` with a new directory, as the kernel does for a
    /// reused pid. The new one is written beside the old and renamed into
    /// place, so it can never get the old directory's inode number back.
    pub fn write_replacing(self) -> io::Result<()> {
        let dir = self.fake.root.join(self.pid.to_string());
        let staging = self.fake.root.join(format!(".new-{}", self.pid));
        self.write_into(&staging)?;
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::rename(staging, dir)
    }

    /// Every line a 6.x kernel writes, so a strict parser reads it too.
    fn status(&self) -> String {
        let ns: Vec<String> = self.ns_pid.iter().map(u32::to_string).collect();
        let ns = ns.join("\t");
        let (p, pp, u) = (self.pid, self.ppid, self.uid);
        let tgid = self.tgid.unwrap_or(p);
        let state = if self.state == 'Z' {
            "Z (zombie)"
        } else {
            "S (sleeping)"
        };
        format!(
            "Name:\t{}\nUmask:\t0022\nState:\t{state}\nTgid:\t{tgid}\nNgid:\t0\nPid:\t{p}\nPPid:\t{pp}\n\
             TracerPid:\t0\nUid:\t{u}\t{u}\t{u}\t{u}\nGid:\t{u}\t{u}\t{u}\t{u}\nFDSize:\t64\nGroups:\t \n\
             NStgid:\t{ns}\nNSpid:\t{ns}\nNSpgid:\t{ns}\nNSsid:\t{ns}\nKthread:\t0\n\
             VmPeak:\t    8692 kB\nVmSize:\t    8692 kB\nVmLck:\t       0 kB\nVmPin:\t       0 kB\n\
             VmHWM:\t    4800 kB\nVmRSS:\t    4800 kB\nRssAnon:\t    1024 kB\nRssFile:\t    3776 kB\n\
             RssShmem:\t       0 kB\nVmData:\t    1200 kB\nVmStk:\t     132 kB\nVmExe:\t     892 kB\n\
             VmLib:\t    2100 kB\nVmPTE:\t      56 kB\nVmSwap:\t       0 kB\nHugetlbPages:\t       0 kB\n\
             CoreDumping:\t0\nTHP_enabled:\t1\nuntag_mask:\t0xffffffffffffffff\nThreads:\t1\n\
             SigQ:\t0/96365\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n\
             SigBlk:\t0000000000010000\nSigIgn:\t0000000000380004\nSigCgt:\t000000004b817efb\n\
             CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n\
             CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t0\n\
             Seccomp_filters:\t0\nSpeculation_Store_Bypass:\tthread vulnerable\n\
             SpeculationIndirectBranch:\tconditional enabled\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\n\
             Mems_allowed:\t00000000,00000001\nMems_allowed_list:\t0\n\
             voluntary_ctxt_switches:\t{}\nnonvoluntary_ctxt_switches:\t{}\n",
            self.comm, self.switches.0, self.switches.1
        )
    }

    fn write_into(self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)?;
        let p = self.pid;
        fs::write(
            dir.join("stat"),
            format!(
                "{p} ({}) {} {} {p} {} {} -1 4194560 100 0 0 0 {} {} 0 0 20 0 1 0 {} 8900608 1200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
                self.comm,
                self.state,
                self.ppid,
                self.session,
                self.tty_nr as i32,
                self.cpu.0,
                self.cpu.1,
                self.starttime
            ),
        )?;
        fs::write(dir.join("status"), self.status())?;
        fs::write(dir.join("cgroup"), &self.cgroup)?;
        let mut cmdline = Vec::new();
        for a in &self.argv {
            cmdline.extend_from_slice(a.as_bytes());
            cmdline.push(0);
        }
        fs::write(dir.join("cmdline"), cmdline)
    }
}
