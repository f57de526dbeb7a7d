//! etcd: single member, loopback only, data in the state directory.

use std::path::Path;
use std::process::Command;

use crate::Result;
use crate::paths::tool;

pub fn command(data_dir: &Path, client_port: u16, peer_port: u16) -> Result<Command> {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut cmd = Command::new(tool("etcd")?);
    cmd.arg("--name=sessionguard")
        .arg(format!("--data-dir={}", data_dir.display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=sessionguard={peer}"))
        // Throwaway data: skipping fsync keeps a 2-core machine responsive.
        .arg("--unsafe-no-fsync")
        .arg("--log-level=warn");
    Ok(cmd)
}
