//! `sessionguard-controller delete-reports`: the last step of an uninstall
//! (the chart's post-delete hook). SessionReports are cluster-scoped objects
//! of a CRD Helm keeps, so without this they would outlive the release, with
//! the users, commands and pod UIDs of every login still in them.
//!
//! 1. Wait until no agent pod is left in the release's namespace. An agent
//!    still running writes its node's report again within a heartbeat; once
//!    its pod is gone its bound token is refused, so nothing recreates one.
//! 2. Delete every SessionReport, each with a UID precondition (a report
//!    recreated meanwhile is a new object, found by the next list).
//! 3. List again until a list is empty (at most a few rounds): a write an
//!    agent had in flight may land after the first round.
//!
//! If agents are still there at `--timeout`, the reports are deleted anyway
//! and the run fails naming them: a failed hook is visible in `helm uninstall`,
//! a silently recreated report is not. Idempotent: a second run deletes nothing.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::{Client, ResourceExt};
use sessionguard_api::SessionReport;

use crate::config::{Config, DeleteReportsArgs};
use crate::error::{Error, Result};
use crate::io::metrics::Metrics;
use crate::io::writer::timed;

/// Rounds of list-and-delete before reports still appearing are an error.
const MAX_ROUNDS: u32 = 5;
/// How often the agents' pods are listed while waiting for them to go.
const POLL: Duration = Duration::from_secs(1);

pub async fn run(config: Config, args: DeleteReportsArgs) -> Result<()> {
    let client = crate::run::connect().await?;
    // Counted for the calls' bookkeeping only: this process serves no metrics.
    let metrics = Metrics::default();
    let started = Instant::now();
    let deadline = started + args.timeout;
    let agents_left = agents_gone(&client, &metrics, &config, &args, deadline).await?;
    let mut deleted = 0u64;
    let mut rounds = 0u32;
    let outcome = loop {
        rounds += 1;
        match delete_round(&client, &metrics, config.write_timeout).await {
            Ok(0) => break Ok(()),
            Ok(n) => deleted += n,
            Err(e) => break Err(e),
        }
        if rounds >= MAX_ROUNDS {
            break Err(Error::Cleanup(format!(
                "SessionReports still appear after {MAX_ROUNDS} rounds of deletion: an agent is still writing"
            )));
        }
    };
    tracing::info!(
        reports_deleted = deleted,
        rounds,
        agents_left = agents_left.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        ok = outcome.is_ok() && agents_left.is_empty(),
        "report cleanup summary"
    );
    outcome?;
    if agents_left.is_empty() {
        Ok(())
    } else {
        Err(Error::Cleanup(format!(
            "agent pods still present after --timeout {:?}: {} (their reports were deleted, \
             but a running agent writes its report again; delete its DaemonSet and run this again)",
            args.timeout,
            agents_left.join(", ")
        )))
    }
}

/// Waits until no pod matches the agent selector; the pods still there at
/// the deadline (none if they all went).
async fn agents_gone(
    client: &Client,
    metrics: &Metrics,
    config: &Config,
    args: &DeleteReportsArgs,
    deadline: Instant,
) -> Result<Vec<String>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &config.lease_namespace);
    let lp = ListParams::default().labels(&args.agent_selector);
    let mut logged = false;
    loop {
        let left: Vec<String> = timed(
            metrics,
            "list agent pods",
            config.write_timeout,
            pods.list(&lp),
        )
        .await?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
        if left.is_empty() || Instant::now() >= deadline {
            return Ok(left);
        }
        if !logged {
            tracing::info!(
                pods = left.len(),
                selector = %args.agent_selector,
                "waiting for the agents' pods to go before deleting their reports"
            );
            logged = true;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One list of every SessionReport and a delete of each; how many were deleted.
async fn delete_round(client: &Client, metrics: &Metrics, timeout: Duration) -> Result<u64> {
    let reports: Api<SessionReport> = Api::all(client.clone());
    let listed = timed(
        metrics,
        "list sessionreports",
        timeout,
        reports.list(&ListParams::default()),
    )
    .await?;
    let mut deleted = 0;
    for r in &listed.items {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: r.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match timed(
            metrics,
            "delete sessionreport",
            timeout,
            reports.delete(&r.name_any(), &dp),
        )
        .await
        {
            Ok(_) => deleted += 1,
            // Gone already, or replaced by a newer object (the next round's).
            Err(e) if matches!(e.status(), Some(404 | 409)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}
