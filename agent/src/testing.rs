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

impl FakeProc {
    /// A proc root with `stat` (holding `btime`) and `uptime`.
    pub fn create(root: &Path, btime: u64) -> io::Result<Self> {
        fs::create_dir_all(root)?;
        fs::write(
            root.join("stat"),
            format!("cpu  1 2 3 4 5 6 7 0 0 0\nbtime {btime}\nprocesses 1\n"),
        )?;
        fs::write(root.join("uptime"), "1000.00 1900.00\n")?;
        Ok(Self {
            root: root.to_path_buf(),
        })
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
            cgroup: "0::/system.slice/some.service\n".into(),
            argv: Vec::new(),
        }
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
    cgroup: String,
    argv: Vec<String>,
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

    fn write_into(self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)?;
        let p = self.pid;
        fs::write(
            dir.join("stat"),
            format!(
                "{p} ({}) {} {} {p} {} {} -1 4194560 100 0 0 0 1 1 0 0 20 0 1 0 {} 8900608 1200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
                self.comm, self.state, self.ppid, self.session, self.tty_nr as i32, self.starttime
            ),
        )?;
        let ns: Vec<String> = self.ns_pid.iter().map(u32::to_string).collect();
        let u = self.uid;
        fs::write(
            dir.join("status"),
            format!(
                "Name:\t{}\nState:\tS (sleeping)\nPid:\t{p}\nPPid:\t{}\nUid:\t{u}\t{u}\t{u}\t{u}\nNSpid:\t{}\n",
                self.comm,
                self.ppid,
                ns.join("\t")
            ),
        )?;
        fs::write(dir.join("cgroup"), &self.cgroup)?;
        let mut cmdline = Vec::new();
        for a in &self.argv {
            cmdline.extend_from_slice(a.as_bytes());
            cmdline.push(0);
        }
        fs::write(dir.join("cmdline"), cmdline)
    }
}
