//! Where the repository, the built tools and the dev state live.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The workspace root, as seen when this crate was compiled.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

/// `SESSIONGUARD_BIN_DIR`, else `<repo>/.dev/bin` (what `make tools` fills).
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("SESSIONGUARD_BIN_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => repo_root().join(".dev/bin"),
    }
}

/// A pinned tool from [`bin_dir`], or a clear error saying how to build it.
pub fn tool(name: &str) -> Result<PathBuf> {
    let p = bin_dir().join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::MissingTool(p))
    }
}

/// `<repo>/.dev`: state of `make dev-up` (kubeconfig, pidfiles, logs).
pub fn dev_dir() -> PathBuf {
    repo_root().join(".dev")
}
