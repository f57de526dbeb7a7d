//! What kube-controller-manager and kube-scheduler share: an API-server
//! client from one kubeconfig (also for delegated authn/authz of their own
//! endpoints), a secure port on loopback with a self-signed serving cert, and
//! no leader election (one instance per cluster, nothing to wait for), and client
//! rate limits sized for `make scale`: at their defaults (20 and 50 requests/s) the
//! controller-manager and scheduler alone would take most of half an hour to create
//! and bind 30,000 pods; clusters of that size raise them too.

use std::path::Path;
use std::process::Command;

use super::certs::Pki;
use crate::Result;
use crate::paths::tool;

pub fn command(name: &str, pki: &Pki, kubeconfig: &Path, port: u16) -> Result<Command> {
    let kc = kubeconfig.display();
    let mut cmd = Command::new(tool(name)?);
    cmd.arg(format!("--kubeconfig={kc}"))
        .arg(format!("--authentication-kubeconfig={kc}"))
        .arg(format!("--authorization-kubeconfig={kc}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--secure-port={port}"))
        .arg(format!(
            "--cert-dir={}",
            pki.dir().join(format!("{name}-serving")).display()
        ))
        .arg("--leader-elect=false")
        .arg("--kube-api-qps=300")
        .arg("--kube-api-burst=600")
        .arg("--profiling=false")
        .arg("--v=1");
    Ok(cmd)
}
