//! kube-scheduler with the default profile: it binds pods to simulated nodes.

use std::path::Path;
use std::process::Command;

use super::certs::Pki;
use crate::Result;
use crate::paths::tool;

pub fn command(pki: &Pki, kubeconfig: &Path, port: u16) -> Result<Command> {
    let mut cmd = Command::new(tool("kube-scheduler")?);
    cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!(
            "--authentication-kubeconfig={}",
            kubeconfig.display()
        ))
        .arg(format!(
            "--authorization-kubeconfig={}",
            kubeconfig.display()
        ))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--secure-port={port}"))
        .arg(format!(
            "--cert-dir={}",
            pki.dir().join("scheduler-serving").display()
        ))
        .arg("--leader-elect=false")
        .arg("--profiling=false")
        .arg("--v=1");
    Ok(cmd)
}
