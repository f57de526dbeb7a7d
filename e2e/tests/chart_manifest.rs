//! The generated files are what the chart renders today:
//! - deploy/sessionguard.yaml, the plain manifest for `kubectl apply -f` users;
//! - deploy/sessionguard-cleanup.yaml, the chart's pre-delete hook Job, for plain-manifest
//!   users to run before `kubectl delete -f deploy/sessionguard.yaml`;
//! - deploy/prometheus/sessionguard-alerts.yaml, the plain rules file.
//!
//! `make manifests` (SESSIONGUARD_UPDATE_MANIFESTS=1) rewrites them.

mod chart_support;

use std::path::PathBuf;

use chart_support::{self as chart, invalid};
use sessionguard_e2e::{Result, paths};

const NAMESPACE: &str = "sessionguard-system";

/// The plain manifest: the namespace (privileged Pod Security level: the agent mounts
/// the host's /proc), the CRD and every default object of the chart.
fn manifest() -> Result<String> {
    // Hooks apart: applied with the rest, the uninstall Job would run at install.
    let rendered = chart::template("sessionguard", NAMESPACE, &["--include-crds", "--no-hooks"])?;
    Ok(format!(
        "# sessionguard, rendered from charts/sessionguard with default values by `make manifests`.\n\
         # Install: kubectl apply --server-side -f deploy/sessionguard.yaml\n\
         # Do not edit: change the chart and run `make manifests`.\n\
         ---\n\
         apiVersion: v1\n\
         kind: Namespace\n\
         metadata:\n  name: {NAMESPACE}\n  labels:\n\
         \x20   # The agent's hostPath /proc mount is outside the baseline Pod Security level.\n\
         \x20   pod-security.kubernetes.io/enforce: privileged\n\
         \x20   app.kubernetes.io/part-of: sessionguard\n\
         {rendered}"
    ))
}

fn compare(path: PathBuf, want: String) -> Result<()> {
    if std::env::var_os("SESSIONGUARD_UPDATE_MANIFESTS").is_some() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| invalid(format!("{}: {e}", dir.display())))?;
        }
        std::fs::write(&path, &want).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        eprintln!("wrote {}", path.display());
        return Ok(());
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have != want {
        let line = have
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| have.lines().count().min(want.lines().count()));
        return Err(invalid(format!(
            "{} is out of date with the chart (first difference at line {}); run `make manifests` and commit it",
            path.display(),
            line + 1
        )));
    }
    Ok(())
}

#[test]
fn plain_manifest_is_up_to_date() -> Result<()> {
    compare(
        paths::repo_root().join("deploy/sessionguard.yaml"),
        manifest()?,
    )
}

/// The uninstall Job alone (the chart's pre-delete hook; its hook annotations mean
/// nothing to kubectl).
fn cleanup_manifest() -> Result<String> {
    let rendered = chart::template(
        "sessionguard",
        NAMESPACE,
        &["--show-only", "templates/cleanup-job.yaml"],
    )?;
    Ok(format!(
        "# sessionguard's uninstall Job (the chart's pre-delete hook), rendered by `make manifests`.\n\
         # Before `kubectl delete -f deploy/sessionguard.yaml`, run it and wait for it:\n\
         #   kubectl apply -f deploy/sessionguard-cleanup.yaml && kubectl -n {NAMESPACE} wait --for=condition=complete --timeout=6m job/sessionguard-cleanup\n\
         # It deletes every PodDisruptionBudget of ours and restores the pods' autoscaler annotations.\n\
         # Do not edit: change the chart and run `make manifests`.\n\
         {rendered}"
    ))
}

#[test]
fn plain_cleanup_job_is_up_to_date() -> Result<()> {
    compare(
        paths::repo_root().join("deploy/sessionguard-cleanup.yaml"),
        cleanup_manifest()?,
    )
}

#[test]
fn plain_rules_file_is_up_to_date() -> Result<()> {
    compare(
        paths::repo_root().join("deploy/prometheus/sessionguard-alerts.yaml"),
        chart::rules_file(&[])?,
    )
}
