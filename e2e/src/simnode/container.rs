//! A container's process. Images cannot be pulled here, so every container runs a
//! stand-in, `sleep infinity`, inside the container's cgroup scope. What matters for
//! sessionguard is real: a pid in the right cgroup and PID namespace (see [`pidns`]),
//! on its own console when the container has `tty: true`, reaped and signalled like
//! a container.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::time::Instant;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::cgroup;
use super::pidns::{self, Ns, Plan};
use crate::error::Context;
use crate::{Error, Result};

/// The stand-in each container runs.
pub const STAND_IN: [&str; 2] = ["sleep", "infinity"];

/// A running container.
#[derive(Debug)]
pub struct Container {
    pub name: String,
    /// 64 hex digits, as containerd's IDs.
    pub id: String,
    pub scope: PathBuf,
    /// The container's process (its init) on the host; `child` is its keeper.
    pid: u32,
    /// The console's pty master (`tty: true`), held as the runtime holds it.
    console: Option<OwnedFd>,
    child: Child,
}

/// How to start a container's process.
#[derive(Debug)]
pub struct Options {
    pub ns: Ns,
    /// `tty: true`: the process runs on a new pty, its controlling terminal.
    pub tty: bool,
    /// With SIGTERM ignored, so a deletion takes the whole grace period.
    pub ignore_term: bool,
}

// === impl Container ===

impl Container {
    /// Creates the scope below `pod_dir` and starts the stand-in inside it.
    pub fn start(name: &str, pod_dir: &Path, opts: Options) -> Result<Self> {
        let id = new_id();
        let scope = pod_dir.join(cgroup::container_scope(&id));
        std::fs::create_dir(&scope).ctx(|| format!("creating cgroup {}", scope.display()))?;
        match Self::spawn(name, &id, &scope, opts) {
            Ok((pid, console, child)) => Ok(Self {
                name: name.to_string(),
                id,
                scope,
                pid,
                console,
                child,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir(&scope);
                Err(e)
            }
        }
    }

    fn spawn(
        name: &str,
        id: &str,
        scope: &Path,
        opts: Options,
    ) -> Result<(u32, Option<OwnedFd>, Child)> {
        let plan = Plan {
            ns: opts.ns,
            procs: cgroup::procs_file(scope)?,
            controlling_tty: opts.tty,
            ignore_term: opts.ignore_term,
        };
        let mut cmd = Command::new(STAND_IN[0]);
        cmd.args(&STAND_IN[1..])
            // Dropping the handle (node stopped, task aborted) never leaks the process.
            .kill_on_drop(true);
        let console = if opts.tty {
            let pty = nix::pty::openpty(None, None).ctx(|| "opening a console pty".into())?;
            nix::fcntl::fcntl(
                &pty.master,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .ctx(|| "marking the console master close-on-exec".into())?;
            let stdio = || -> Result<Stdio> {
                Ok(Stdio::from(
                    pty.slave
                        .try_clone()
                        .ctx(|| "duplicating the console".into())?,
                ))
            };
            cmd.stdin(stdio()?).stdout(stdio()?).stderr(stdio()?);
            tracing::debug!(container = name, master = pty.master.as_raw_fd(), "console");
            Some(pty.master)
        } else {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            None
        };
        let (pre_exec, pid_pipe) = plan.pre_exec()?;
        // SAFETY: the closure makes async-signal-safe calls only (see `pidns`).
        unsafe {
            cmd.pre_exec(pre_exec);
        }
        let child = cmd
            .spawn()
            .ctx(|| format!("starting container {name} ({id}) in {}", scope.display()))?;
        let pid = pid_pipe.pid()?;
        Ok((pid, console, child))
    }

    /// The container's process (not its keeper), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id().map(|_| self.pid)
    }

    /// The PID namespace of this container's process, for sessions and
    /// containers that join it.
    pub fn ns(&self) -> Result<Ns> {
        pidns::Ns::of(self.pid)
    }

    /// SIGTERM (to the keeper), then SIGKILL once the grace period ends (`ends` may move it
    /// earlier while we wait, as a second, shorter delete does); then removes
    /// the scope.
    pub async fn stop(mut self, mut ends: tokio::sync::watch::Receiver<Instant>) -> Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            loop {
                let deadline = *ends.borrow_and_update();
                tokio::select! {
                    _ = self.child.wait() => break,
                    _ = tokio::time::sleep_until(deadline) => {
                        let _ = self.child.start_kill();
                        break;
                    }
                    // A new deadline: wait again with it. (If the sender is
                    // gone this branch is disabled and the deadline stands.)
                    Ok(()) = ends.changed() => {}
                }
            }
        }
        let _ = self.child.wait().await;
        drop(self.console.take());
        cgroup::remove_dir(&self.scope)
    }

    /// Synchronous last resort for Drop paths: SIGKILL and remove the scope.
    pub fn kill_now(mut self) -> Result<()> {
        let _ = self.child.start_kill();
        cgroup::remove_dir(&self.scope)
    }
}

fn new_id() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Validates a container ID read back from a pod status (`containerd://<64 hex>`).
pub fn parse_container_id(status_id: &str) -> Result<&str> {
    let id = status_id.strip_prefix("containerd://").ok_or_else(|| {
        Error::Invalid(format!(
            "container ID {status_id:?} is not containerd://<id>"
        ))
    })?;
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id)
    } else {
        Err(Error::Invalid(format!(
            "container ID {id:?} is not 64 hex digits"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_digits() {
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert_eq!(
            parse_container_id(&format!("containerd://{id}")).unwrap(),
            id
        );
    }

    #[test]
    fn foreign_runtimes_and_short_ids_are_refused() {
        assert!(parse_container_id("docker://abc").is_err());
        assert!(parse_container_id("containerd://abc").is_err());
    }
}
