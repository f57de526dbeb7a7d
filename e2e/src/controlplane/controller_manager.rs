//! kube-controller-manager: every default controller (statefulset, disruption, garbage
//! collector, node lifecycle, service accounts and their tokens, ...), each with its own
//! service-account credentials as in a kubeadm cluster.

use std::path::Path;
use std::process::Command;

use super::certs::{Pki, SERVICE_CIDR};
use crate::Result;
use crate::paths::tool;

pub fn command(pki: &Pki, kubeconfig: &Path, port: u16) -> Result<Command> {
    let mut cmd = Command::new(tool("kube-controller-manager")?);
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
            pki.dir().join("kcm-serving").display()
        ))
        .arg("--controllers=*")
        .arg("--use-service-account-credentials=true")
        .arg(format!(
            "--service-account-private-key-file={}",
            pki.service_account_key().display()
        ))
        .arg(format!("--root-ca-file={}", pki.ca_cert().display()))
        .arg(format!(
            "--cluster-signing-cert-file={}",
            pki.ca_cert().display()
        ))
        .arg(format!(
            "--cluster-signing-key-file={}",
            pki.ca_key().display()
        ))
        .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
        .arg("--cluster-name=sessionguard")
        // One instance per cluster: no need to wait for a lease before working.
        .arg("--leader-elect=false")
        .arg("--profiling=false")
        .arg("--v=1");
    Ok(cmd)
}
