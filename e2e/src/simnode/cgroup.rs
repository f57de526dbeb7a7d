//! The cgroup directories a kubelet (systemd cgroup driver) with containerd creates
//! for pods and containers, and their removal.
//!
//! ```text
//! <root>/[<node prefix>/]kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/cri-containerd-<id>.scope
//! <root>/[<node prefix>/]kubepods.slice/kubepods-pod<uid_>.slice/cri-containerd-<id>.scope     (Guaranteed)
//! ```
//!
//! Only the cgroup2 hierarchy is touched, and only directories made here are removed.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::Context;
use crate::{Error, Result};

/// The mount point of the cgroup2 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupRoot(PathBuf);

/// A pod's QoS class, which picks its slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

// === impl CgroupRoot ===

impl CgroupRoot {
    /// Pure cgroup2 (`/sys/fs/cgroup/cgroup.controllers` exists) or the hybrid layout's
    /// `/sys/fs/cgroup/unified`.
    pub fn detect() -> Result<Self> {
        for dir in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            let d = Path::new(dir);
            if d.join("cgroup.controllers").is_file() {
                return Ok(Self(d.to_path_buf()));
            }
        }
        Err(Error::Invalid(
            "no cgroup2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified; simulated nodes need one"
                .into(),
        ))
    }

    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Whether this process may create directories here (root, writable mount).
    pub fn writable(&self) -> bool {
        nix::unistd::access(&self.0, nix::unistd::AccessFlags::W_OK).is_ok()
    }
}

// === impl Qos ===

impl Qos {
    /// From `status.qosClass` as the API server sets it.
    pub fn from_class(class: &str) -> Option<Self> {
        match class {
            "Guaranteed" => Some(Self::Guaranteed),
            "Burstable" => Some(Self::Burstable),
            "BestEffort" => Some(Self::BestEffort),
            _ => None,
        }
    }
}

/// The per-node parent directory that keeps several simulated nodes apart on one host.
pub fn node_prefix(node: &str) -> String {
    format!("sessionguard-sim-{node}.slice")
}

/// The pod's slice, relative to the (prefixed) root: systemd escapes `-` in the UID as `_`.
pub fn pod_slice(qos: Qos, uid: &str) -> PathBuf {
    let uid = uid.replace('-', "_");
    let mut p = PathBuf::from("kubepods.slice");
    match qos {
        Qos::Guaranteed => p.push(format!("kubepods-pod{uid}.slice")),
        Qos::Burstable => {
            p.push("kubepods-burstable.slice");
            p.push(format!("kubepods-burstable-pod{uid}.slice"));
        }
        Qos::BestEffort => {
            p.push("kubepods-besteffort.slice");
            p.push(format!("kubepods-besteffort-pod{uid}.slice"));
        }
    }
    p
}

/// containerd's scope for a container, below its pod slice.
pub fn container_scope(container_id: &str) -> String {
    format!("cri-containerd-{container_id}.scope")
}

/// Creates `dir` and any missing parents below `root`; returns the ones it created,
/// outermost first, so the caller can remove exactly those.
pub fn create(root: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    let rel = dir
        .strip_prefix(root)
        .map_err(|_| Error::Invalid(format!("{} is outside {}", dir.display(), root.display())))?;
    let mut made = Vec::new();
    let mut cur = root.to_path_buf();
    for part in rel.components() {
        cur.push(part);
        match std::fs::create_dir(&cur) {
            Ok(()) => made.push(cur.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).ctx(|| format!("creating cgroup {}", cur.display())),
        }
    }
    Ok(made)
}

/// The `cgroup.procs` path as a C string, prepared before fork so the child only has to
/// open and write (async-signal-safe).
pub fn procs_file(dir: &Path) -> Result<CString> {
    CString::new(
        dir.join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .map_err(|e| Error::Invalid(e.to_string()))
}

/// In a forked child before exec: moves the calling process into the cgroup (writing
/// "0" to cgroup.procs moves the writer).
pub fn enter_from_child(procs: &CString) -> std::io::Result<()> {
    // SAFETY: plain syscalls on a valid NUL-terminated path and a static buffer.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = libc::write(fd, b"0".as_ptr().cast(), 1);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if n != 1 {
            return Err(err);
        }
    }
    Ok(())
}

/// Pids in one cgroup directory (not its children).
pub fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Pids in `dir` and every directory below it.
pub fn procs_below(dir: &Path) -> Vec<i32> {
    let mut pids = procs(dir);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(procs_below(&entry.path()));
            }
        }
    }
    pids
}

/// Removes `dir` and everything below it, deepest first. Processes still inside can
/// only be ones a simulated node started (containers, sessions): they get SIGKILL.
pub fn remove_tree(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))?;
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    remove_dir(dir)
}

/// Removes one (leaf) cgroup directory, killing what remains in it first.
pub fn remove_dir(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = procs(dir);
        if pids.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::Invalid(format!(
                "cgroup {} still holds {pids:?} after SIGKILL",
                dir.display()
            )));
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx(|| format!("removing cgroup {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0b6e1f4e-4f5b-4a39-9d8e-2f4c1c6a7b10";

    #[test]
    fn besteffort_and_burstable_pods_sit_below_their_qos_slice() {
        assert_eq!(
            pod_slice(Qos::BestEffort, UID),
            Path::new(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0b6e1f4e_4f5b_4a39_9d8e_2f4c1c6a7b10.slice"
            )
        );
        assert_eq!(
            pod_slice(Qos::Burstable, UID),
            Path::new(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b6e1f4e_4f5b_4a39_9d8e_2f4c1c6a7b10.slice"
            )
        );
    }

    #[test]
    fn guaranteed_pods_have_no_qos_level() {
        assert_eq!(
            pod_slice(Qos::Guaranteed, UID),
            Path::new("kubepods.slice/kubepods-pod0b6e1f4e_4f5b_4a39_9d8e_2f4c1c6a7b10.slice")
        );
    }

    #[test]
    fn scope_and_prefix_names() {
        assert_eq!(container_scope("ab12"), "cri-containerd-ab12.scope");
        assert_eq!(node_prefix("n1"), "sessionguard-sim-n1.slice");
        assert_eq!(Qos::from_class("Burstable"), Some(Qos::Burstable));
        assert_eq!(Qos::from_class("bogus"), None);
    }

    #[test]
    fn create_reports_only_new_directories() {
        let tmp = std::env::temp_dir().join(format!("sg-cgroup-unit-{}", std::process::id()));
        std::fs::create_dir_all(tmp.join("a")).unwrap();
        let made = create(&tmp, &tmp.join("a/b/c")).unwrap();
        assert_eq!(made, vec![tmp.join("a/b"), tmp.join("a/b/c")]);
        assert!(create(&tmp, Path::new("/elsewhere")).is_err());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
