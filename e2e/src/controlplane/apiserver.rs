//! kube-apiserver: secure port on loopback, client-certificate and service-account
//! authentication, Node+RBAC authorisation, the default admission plugins plus the ones
//! kubeadm adds (NodeRestriction) and PodNodeSelector (one simulated node per test
//! namespace, see `harness::namespace`), and a client certificate for admission
//! webhooks (`webhook_client`).

use std::process::Command;

use super::certs::{Pki, SERVICE_CIDR};
use super::webhook_client;
use crate::Result;
use crate::paths::tool;

/// The issuer (and audience) of service-account tokens.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

pub fn command(pki: &Pki, port: u16, etcd_port: u16) -> Result<Command> {
    let serving = pki.serving();
    let sa_key = pki.service_account_key();
    let sa_pub = pki.service_account_pub();
    let admission = webhook_client::write(pki.dir())?;
    let mut cmd = Command::new(tool("kube-apiserver")?);
    cmd.arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        // Since v1.37 the endpoint reconciler refuses a loopback address for the
        // `kubernetes` Service's endpoints. Nothing here reaches the API server through
        // that Service (every client has a kubeconfig naming 127.0.0.1), so none.
        .arg("--endpoint-reconciler-type=none")
        .arg(format!("--secure-port={port}"))
        .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
        .arg(format!("--cert-dir={}", pki.dir().display()))
        .arg(format!("--tls-cert-file={}", serving.cert.display()))
        .arg(format!("--tls-private-key-file={}", serving.key.display()))
        .arg(format!("--client-ca-file={}", pki.ca_cert().display()))
        .arg(format!("--service-account-key-file={}", sa_pub.display()))
        .arg(format!(
            "--service-account-signing-key-file={}",
            sa_key.display()
        ))
        .arg(format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"))
        .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
        .arg("--authorization-mode=Node,RBAC")
        .arg("--enable-admission-plugins=NodeRestriction,PodNodeSelector")
        .arg(format!(
            "--admission-control-config-file={}",
            admission.display()
        ))
        .arg("--allow-privileged=true")
        .arg("--anonymous-auth=false")
        .arg("--profiling=false")
        .arg("--v=1");
    Ok(cmd)
}
