//! kube-scheduler with the default profile: it binds pods to simulated nodes.

use std::path::Path;
use std::process::Command;

use super::certs::Pki;
use crate::Result;

pub fn command(pki: &Pki, kubeconfig: &Path, port: u16) -> Result<Command> {
    super::component::command("kube-scheduler", pki, kubeconfig, port)
}
