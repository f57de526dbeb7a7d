//! Interactive sessions in a container: our `kubectl exec -it`. A real process on a real
//! pty, session leader with the pty as its controlling terminal, placed in the
//! container's cgroup and PID namespace before exec (its keeper, outside, plays the
//! runtime's shim: see [`super::pidns`]), exactly what the agent must find in /proc.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::cgroup::{self, CgroupRoot, Qos};
use super::container::parse_container_id;
use super::node::CGROUP_PARENT_ANNOTATION;
use super::pidns::{Ns, Plan};
use crate::error::Context;
use crate::{Error, Result};

/// An open interactive session; closed (hung up) by [`Session::close`] or on Drop.
#[derive(Debug)]
pub struct Session {
    /// The session leader on the host (`child` is its keeper).
    pid: u32,
    child: Option<Child>,
    master: Option<OwnedFd>,
    tty: PathBuf,
    cgroup: PathBuf,
}

// === impl Session ===

impl Session {
    /// Starts `argv` on a new pty inside the cgroup directory `cgroup_dir`, in the PID
    /// namespace of the processes already there (a new one if there are none).
    pub fn open(cgroup_dir: &Path, argv: &[&str]) -> Result<Self> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| Error::Invalid("a session needs a command".into()))?;
        if !cgroup_dir.join("cgroup.procs").is_file() {
            return Err(Error::Invalid(format!(
                "{} is not a cgroup directory (is the container running?)",
                cgroup_dir.display()
            )));
        }
        let ns = match cgroup::procs(cgroup_dir).first() {
            Some(&pid) => Ns::of(pid as u32)?,
            None => Ns::New,
        };
        let pty = nix::pty::openpty(None, None).ctx(|| "opening a pty".into())?;
        // The child must not inherit the master, or closing ours would not hang it up.
        fcntl(&pty.master, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
            .ctx(|| "marking the pty master close-on-exec".into())?;
        let tty = std::fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd()))
            .ctx(|| "resolving the pty's name".into())?;
        let plan = Plan {
            ns,
            procs: cgroup::procs_file(cgroup_dir)?,
            controlling_tty: true,
            ignore_term: false,
        };
        let stdio = |fd: &OwnedFd| -> Result<Stdio> {
            Ok(Stdio::from(
                fd.try_clone().ctx(|| "duplicating the pty".into())?,
            ))
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("TERM", "xterm")
            .stdin(stdio(&pty.slave)?)
            .stdout(stdio(&pty.slave)?)
            .stderr(stdio(&pty.slave)?);
        let (pre_exec, pid_pipe) = plan.pre_exec()?;
        // SAFETY: the closure makes async-signal-safe calls only (see `pidns`); std has
        // already dup2'd the pty slave onto fds 0-2.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(pre_exec);
        }
        let child = cmd
            .spawn()
            .ctx(|| format!("starting {program} in {}", cgroup_dir.display()))?;
        drop(pty.slave);
        let pid = pid_pipe.pid()?;
        Ok(Self {
            pid,
            child: Some(child),
            master: Some(pty.master),
            tty,
            cgroup: cgroup_dir.to_path_buf(),
        })
    }

    /// Opens a session in `container` of pod `ns/name`, finding its cgroup from the pod's
    /// status and its node's cgroup parent, like `kubectl exec -it` finds the container.
    pub async fn open_in_pod(
        client: &kube::Client,
        ns: &str,
        name: &str,
        container: &str,
        argv: &[&str],
    ) -> Result<Self> {
        let dir = container_cgroup(client, ns, name, container).await?;
        Self::open(&dir, argv)
    }

    /// The session leader's pid on the host.
    pub fn pid(&self) -> u32 {
        if self.child.is_some() { self.pid } else { 0 }
    }

    /// The terminal's path, e.g. `/dev/pts/3`.
    pub fn tty(&self) -> &Path {
        &self.tty
    }

    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// The pty master: write to type into the session, read to see its output.
    pub fn master(&self) -> Option<BorrowedFd<'_>> {
        self.master.as_ref().map(|m| m.as_fd())
    }

    /// Hangs up the terminal (the session gets SIGHUP, as when a user disconnects), then
    /// SIGKILLs whatever is left after two seconds.
    pub fn close(mut self) -> Result<ExitStatus> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<ExitStatus> {
        drop(self.master.take());
        let Some(mut child) = self.child.take() else {
            return Err(Error::Invalid("session already closed".into()));
        };
        // To the keeper, which passes it on.
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().ctx(|| "waiting for the session".into())? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        child.wait().ctx(|| "waiting for the session".into())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.shutdown();
        }
    }
}

/// The cgroup directory of `container` in pod `ns/name`, as a simulated node made it.
pub async fn container_cgroup(
    client: &kube::Client,
    ns: &str,
    name: &str,
    container: &str,
) -> Result<PathBuf> {
    let pod = Api::<Pod>::namespaced(client.clone(), ns).get(name).await?;
    let status = pod.status.as_ref();
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let qos = status
        .and_then(|s| s.qos_class.as_deref())
        .and_then(Qos::from_class)
        .ok_or_else(|| Error::Invalid(format!("pod {ns}/{name} has no QoS class yet")))?;
    let id = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == container))
        .and_then(|c| c.container_id.as_deref())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "pod {ns}/{name} has no running container {container:?}"
            ))
        })?;
    let id = parse_container_id(id)?;
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .ok_or_else(|| Error::Invalid(format!("pod {ns}/{name} is not bound to a node")))?;
    let node = Api::<Node>::all(client.clone()).get(node).await?;
    let parent = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CGROUP_PARENT_ANNOTATION))
        .ok_or_else(|| {
            Error::Invalid(format!(
                "node {} is not a simulated node (no {CGROUP_PARENT_ANNOTATION} annotation)",
                node.metadata.name.as_deref().unwrap_or_default()
            ))
        })?;
    let root = CgroupRoot::detect()?;
    Ok(root
        .path()
        .join(parent)
        .join(cgroup::pod_slice(qos, uid))
        .join(cgroup::container_scope(id)))
}
