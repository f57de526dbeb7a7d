//! kube-controller-manager: every default controller (statefulset, disruption, garbage
//! collector, node lifecycle, service accounts and their tokens, ...), each with its own
//! service-account credentials as in a kubeadm cluster.

use std::path::Path;
use std::process::Command;

use super::certs::{Pki, SERVICE_CIDR};
use crate::Result;

pub fn command(pki: &Pki, kubeconfig: &Path, port: u16) -> Result<Command> {
    let mut cmd = super::component::command("kube-controller-manager", pki, kubeconfig, port)?;
    cmd.arg("--controllers=*")
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
        .arg("--cluster-name=sessionguard");
    Ok(cmd)
}
