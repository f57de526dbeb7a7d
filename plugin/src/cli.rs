//! Flags and the two commands' I/O.

use std::collections::BTreeMap;
use std::io::Write;

use clap::{Args, Parser, Subcommand};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use sessionguard_api::SessionReport;
use sessionguard_core::interaction::{Interaction, rfc3339};
use sessionguard_core::printable::printable;
use sessionguard_core::readback::off_reason;
use sessionguard_core::{Report, duration, keys};

use crate::error::{Error, Result};
pub use crate::kube_flags::{KubeFlags, client, read_kubeconfig};
use crate::output::{self, Format};
use crate::rows::{self, Row, relative};
use crate::{drains, extend};

/// Who is in which pod, since when, and when it will be evicted (sessionguard).
#[derive(Debug, Parser)]
#[command(name = "kubectl-sessions", bin_name = "kubectl sessions", version)]
pub struct Cli {
    #[command(flatten)]
    pub kube: KubeFlags,
    #[command(subcommand)]
    pub command: Command,
}

/// How `get` and `nodes` print: the same two flags, defined once.
#[derive(Debug, Clone, Copy, Args)]
pub struct Display {
    /// Output format (for `nodes`, `wide` is `table`).
    #[arg(
        short = 'o',
        long,
        value_enum,
        default_value = "table",
        env = "SESSIONGUARD_OUTPUT"
    )]
    pub output: Format,
    /// Watch: print the table again whenever it changes.
    #[arg(short = 'w', long, env = "SESSIONGUARD_WATCH")]
    pub watch: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show interacted pods (or the named ones): sessions, interaction record, eviction time.
    Get {
        /// Pods to show (default: every interacted pod in the namespace).
        pods: Vec<String>,
        /// All namespaces.
        #[arg(short = 'A', long, env = "SESSIONGUARD_ALL_NAMESPACES")]
        all_namespaces: bool,
        /// Every pod of the namespace, interacted or not.
        #[arg(long, env = "SESSIONGUARD_ALL")]
        all: bool,
        #[command(flatten)]
        display: Display,
    },
    /// Per node: protected pods, who is logged in, idle time, and whether a drain would block now.
    Nodes {
        #[command(flatten)]
        display: Display,
    },
    /// Push back the eviction time of interacted pods by DURATION.
    Extend {
        pods: Vec<String>,
        /// How much later, e.g. 30m, 1h30m, 2d.
        #[arg(short = 'd', long, env = "SESSIONGUARD_DURATION")]
        duration: String,
        /// Every interacted pod of the namespace (not together with POD names:
        /// one of them would be ignored).
        #[arg(long, env = "SESSIONGUARD_ALL", conflicts_with = "pods")]
        all: bool,
    },
}

fn kube_err(op: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let op = op.into();
    move |source| Error::Kube { op, source }
}

fn interacted() -> ListParams {
    ListParams::default().labels(&format!("{}=true", keys::INTERACTED))
}

async fn select(
    api: &Api<Pod>,
    ns: &str,
    names: &[String],
    all: bool,
    every_pod: bool,
) -> Result<Vec<Pod>> {
    if !names.is_empty() && !all {
        let mut out = vec![];
        for n in names {
            let p = api
                .get_opt(n)
                .await
                .map_err(kube_err(format!("getting pod {ns}/{n}")))?
                .ok_or_else(|| Error::PodNotFound {
                    namespace: ns.into(),
                    pod: n.clone(),
                })?;
            out.push(p);
        }
        return Ok(out);
    }
    let lp = if every_pod {
        ListParams::default()
    } else {
        interacted()
    };
    Ok(api
        .list(&lp)
        .await
        .map_err(kube_err(format!("listing pods in {ns}")))?
        .items)
}

/// `get POD... -A`: each name looked up in every namespace (a name can be
/// in several; all are shown).
async fn named_anywhere(api: &Api<Pod>, names: &[String]) -> Result<Vec<Pod>> {
    let mut out = vec![];
    for n in names {
        let found = api
            .list(&ListParams::default().fields(&format!("metadata.name={n}")))
            .await
            .map_err(kube_err(format!(
                "listing pods named {n} in all namespaces"
            )))?
            .items;
        if found.is_empty() {
            return Err(Error::PodNotFoundAnywhere { pod: n.clone() });
        }
        out.extend(found);
    }
    Ok(out)
}

/// The node's report, if readable (RBAC may not allow it, or no agent runs there).
async fn report(
    client: &Client,
    node: &str,
    cache: &mut BTreeMap<String, Option<Report>>,
) -> Option<Report> {
    if let Some(r) = cache.get(node) {
        return r.clone();
    }
    // An unreadable or undecodable report shows as unknown, like a missing one.
    let api: Api<SessionReport> = Api::all(client.clone());
    let r = api
        .get_opt(node)
        .await
        .ok()
        .flatten()
        .map(SessionReport::into_report);
    cache.insert(node.to_string(), r.clone());
    r
}

pub async fn get(
    flags: &KubeFlags,
    pods: &[String],
    all_namespaces: bool,
    all: bool,
    format: Format,
    watch_changes: bool,
    out: &mut impl Write,
) -> Result<()> {
    let (client, ns) = client(flags).await?;
    let render = || render_get(&client, &ns, pods, all_namespaces, all, format);
    if !watch_changes {
        let text = render().await?;
        out.write_all(text.as_bytes()).ok();
        return Ok(());
    }
    let watched = crate::watch::Watched {
        namespace: (!all_namespaces).then(|| ns.clone()),
        pod_label: None,
        nodes: false,
    };
    crate::watch::run(&client, &watched, out, render).await
}

async fn render_get(
    client: &Client,
    ns: &str,
    pods: &[String],
    all_namespaces: bool,
    all: bool,
    format: Format,
) -> Result<String> {
    let api: Api<Pod> = if all_namespaces {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), ns)
    };
    let selected = if all_namespaces && !pods.is_empty() {
        named_anywhere(&api, pods).await?
    } else {
        select(&api, ns, pods, false, all).await?
    };
    let mut cache = BTreeMap::new();
    let mut rows: Vec<Row> = vec![];
    let now = Timestamp::now();
    let events = drains::blocked_events(client, (!all_namespaces).then_some(ns)).await;
    let waits = drains::waits_on(&events, &selected, now);
    for p in &selected {
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
        let rep = match &node {
            Some(n) => report(client, n, &mut cache).await,
            None => None,
        };
        let mut row = rows::row(p, rep.as_ref());
        // A refusal counts only while the pod is still protected.
        if row.protected {
            row.blocking = waits
                .get(&(row.namespace.clone(), row.pod.clone()))
                .cloned();
        }
        rows.push(row);
    }
    rows.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
    if rows.is_empty() && matches!(format, Format::Table | Format::Wide) {
        let where_ = if all_namespaces {
            "any namespace".to_string()
        } else {
            format!("namespace {ns}")
        };
        return Ok(format!("No interacted pods found in {where_}.\n"));
    }
    output::render(&rows, format, now, all_namespaces)
}

/// Extends each pod; reports every failure and returns the first.
pub async fn extend(
    flags: &KubeFlags,
    pods: &[String],
    duration_arg: &str,
    all: bool,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<()> {
    let by = extend::requested(duration_arg)?;
    if pods.is_empty() && !all {
        return Err(Error::Usage(
            "name at least one pod, or pass --all for every interacted pod of the namespace".into(),
        ));
    }
    let (client, ns) = client(flags).await?;
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let targets: Vec<String> = if all {
        select(&api, &ns, &[], true, false)
            .await?
            .iter()
            .map(|p| p.name_any())
            .collect()
    } else {
        pods.to_vec()
    };
    let mut failed = 0;
    for name in &targets {
        match extend_one(&api, &ns, name, by).await {
            // The line names the requester and the eviction-off reason, both
            // from the pod's annotations: text someone else chose.
            Ok(line) => {
                writeln!(out, "{}", printable(&line, 4096)).ok();
            }
            Err(e) => {
                writeln!(err, "error: {}", printable(&e.to_string(), 4096)).ok();
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(Error::Partial {
            failed,
            total: targets.len(),
        });
    }
    Ok(())
}

async fn extend_one(
    api: &Api<Pod>,
    ns: &str,
    name: &str,
    by: std::time::Duration,
) -> Result<String> {
    for _ in 0..5 {
        let pod = api
            .get_opt(name)
            .await
            .map_err(kube_err(format!("getting pod {ns}/{name}")))?
            .ok_or_else(|| Error::PodNotFound {
                namespace: ns.into(),
                pod: name.into(),
            })?;
        let value = extend::new_extension(ns, name, pod.annotations(), by)?;
        let patch = json!({
            "metadata": {
                "resourceVersion": pod.resource_version(),
                "annotations": { keys::EXTENSION: value },
            }
        });
        let updated = match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(p) => p,
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(kube::Error::Api(s)) => {
                return Err(Error::Pod {
                    namespace: ns.into(),
                    pod: name.into(),
                    reason: s.message,
                });
            }
            Err(e) => return Err(kube_err(format!("patching pod {ns}/{name}"))(e)),
        };
        let record = Interaction::from_annotations(updated.annotations())?.ok_or_else(|| {
            Error::NeverInteracted {
                namespace: ns.into(),
                pod: name.into(),
            }
        })?;
        let when = match updated
            .annotations()
            .get(keys::EVICTION)
            .and_then(|v| off_reason(v))
        {
            // Recorded all the same, for when eviction is turned on.
            Some(why) => format!("eviction is off ({why})"),
            None => {
                let at = record.evict_at(rows::UNCAPPED);
                format!(
                    "new eviction time {} ({})",
                    rfc3339(at),
                    relative(Timestamp::now(), at)
                )
            }
        };
        let by_whom = match updated.annotations().get(keys::EXTENDED_BY) {
            Some(u) => format!("requested by {u}"),
            None => "requester NOT recorded: is the sessionguard webhook running?".into(),
        };
        return Ok(format!(
            "pod/{name} extended by {} (total extension {value}, {by_whom}); {when}",
            duration::format(by),
        ));
    }
    Err(Error::Pod {
        namespace: ns.into(),
        pod: name.into(),
        reason: "the pod kept changing while extending; try again".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn extend_all_and_pod_names_conflict() {
        let e = Cli::try_parse_from(["kubectl-sessions", "extend", "web-0", "--all", "-d", "1h"])
            .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict, "{e}");
        assert_eq!(e.exit_code(), 2);
        assert!(Cli::try_parse_from(["kubectl-sessions", "extend", "--all", "-d", "1h"]).is_ok());
        assert!(Cli::try_parse_from(["kubectl-sessions", "extend", "a", "b", "-d", "1h"]).is_ok());
    }

    fn kubeconfig(dir: &std::path::Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.yaml"));
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: {name}\n\
             clusters: [{{name: {name}, cluster: {{server: 'https://{name}.example:6443'}}}}]\n\
             users: [{{name: {name}, user: {{token: t}}}}]\n\
             contexts: [{{name: {name}, context: {{cluster: {name}, user: {name}, namespace: ns-{name}}}}}]\n"
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn an_explicit_kubeconfig_list_is_read_and_merged() {
        let dir =
            std::env::temp_dir().join(format!("kubectl-sessions-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (kubeconfig(&dir, "a"), kubeconfig(&dir, "b"));
        let list = std::env::join_paths([&a, &b]).unwrap();
        let kc = read_kubeconfig(Some(std::path::Path::new(&list))).unwrap();
        let contexts: Vec<&str> = kc.contexts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(contexts, ["a", "b"], "both files, in order");
        assert_eq!(
            kc.current_context.as_deref(),
            Some("a"),
            "the first file wins"
        );
        // One file: exactly that file, whatever KUBECONFIG says.
        let kc = read_kubeconfig(Some(&b)).unwrap();
        assert_eq!(kc.current_context.as_deref(), Some("b"));
        let e = read_kubeconfig(Some(&dir.join("missing.yaml"))).unwrap_err();
        assert!(e.to_string().contains("missing.yaml"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
