//! Workspace binaries (the agent, the controller) run as child processes of a test.
//!
//! `env!("CARGO_BIN_EXE_<name>")` only exists for binaries of the test's own package, so
//! binaries are found in the target directory the running test executable lives in,
//! after asking cargo to bring them up to date (a no-op when `cargo test --workspace`
//! already built them; skipped with `SESSIONGUARD_NO_BUILD=1`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use crate::controlplane::{Lifetime, Proc};
use crate::error::Context;
use crate::{Error, Result, paths};

static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);

/// Path of binary `bin` of workspace package `package`, built if needed.
pub fn workspace_bin(package: &str, bin: &str) -> Result<PathBuf> {
    let mut built = BUILT.lock().expect("build cache lock");
    let cache = built.get_or_insert_with(HashMap::new);
    if let Some(p) = cache.get(bin) {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe().ctx(|| "locating the test executable".into())?;
    // <target>/<profile>/deps/<test exe>, or <target>/<profile>/<bin> for a binary
    // of this crate (sg-scale under `make scale`).
    let parent = exe.parent();
    let profile_dir = match parent {
        Some(d) if d.file_name().is_some_and(|n| n == "deps") => d.parent(),
        d => d,
    }
    .ok_or_else(|| Error::Invalid(format!("unexpected test executable path {}", exe.display())))?;
    let target = profile_dir.parent().unwrap_or(profile_dir);
    let profile = profile_dir
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("debug");
    if std::env::var_os("SESSIONGUARD_NO_BUILD").is_none() {
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.current_dir(paths::repo_root())
            .args(["build", "--quiet", "-p", package, "--bin", bin])
            .env("CARGO_TARGET_DIR", target);
        // What cargo set for this binary's own package (CARGO_PKG_NAME and the
        // rest) is not the build's: build scripts that watch such variables
        // (ring's, through cc) would see them change and rebuild the TLS stack
        // and everything above it, minutes in release.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_MANIFEST_")
                || k.starts_with("CARGO_BIN_")
                || ["CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE"].contains(&&*k)
            {
                cmd.env_remove(&key);
            }
        }
        if profile == "release" {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .ctx(|| format!("running cargo build -p {package}"))?;
        if !status.success() {
            return Err(Error::Invalid(format!(
                "cargo build -p {package} --bin {bin} failed"
            )));
        }
    }
    let path = profile_dir.join(bin);
    if !path.is_file() {
        return Err(Error::MissingTool(path));
    }
    cache.insert(bin.to_string(), path.clone());
    Ok(path)
}

/// A child process of a test: output in `log`, stopped (SIGTERM, then SIGKILL) on Drop.
#[derive(Debug)]
pub struct Child {
    proc: Proc,
}

// === impl Child ===

impl Child {
    /// Starts `program` with `args` and extra environment, logging to `log`.
    pub fn spawn(program: &Path, args: &[&str], env: &[(&str, &str)], log: &Path) -> Result<Self> {
        let mut cmd = Command::new(program);
        cmd.args(args).envs(env.iter().copied());
        let name = program
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("child");
        Ok(Self {
            proc: Proc::spawn(name, cmd, log, Lifetime::Tied)?,
        })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn log(&self) -> &Path {
        self.proc.log()
    }

    /// An error (naming the log) if the child has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.proc.check_running()
    }

    /// Stops it now, giving it `grace` to exit on SIGTERM.
    pub fn stop(mut self, grace: Duration) {
        self.proc.stop(grace);
    }
}
