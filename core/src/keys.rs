//! Every label, annotation and name sessionguard reads or writes.

pub const PREFIX: &str = "sessionguard.io/";

/// Opt-in label on a StatefulSet, Deployment, ReplicaSet, pod or namespace.
pub const PROTECT: &str = "sessionguard.io/protect";
/// Pod/owner annotation: never create a PDB for it (ours).
pub const NO_PDB: &str = "sessionguard.io/no-pdb";
/// login-protector's keys, honoured unchanged as aliases.
pub const LP_PREFIX: &str = "login-protector.cybozu.io/";
pub const LP_PROTECT: &str = "login-protector.cybozu.io/protect";
pub const LP_NO_PDB: &str = "login-protector.cybozu.io/no-pdb";

/// Set on every pod someone interacted with (login, exec, attach, debug).
pub const INTERACTED: &str = "sessionguard.io/interacted";
/// Set on PDBs we create, so we never touch anyone else's.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "sessionguard";

pub const FIRST_INTERACTION: &str = "sessionguard.io/first-interaction";
pub const LAST_INTERACTION: &str = "sessionguard.io/last-interaction";
pub const INTERACTOR: &str = "sessionguard.io/interactor";
/// Who interacted most recently (any path: login, exec, attach, debug).
pub const LAST_INTERACTOR: &str = "sessionguard.io/last-interactor";
pub const TTL: &str = "sessionguard.io/ttl";
/// Written only where drift eviction applies (see [`EVICTION`]).
pub const EVICT_AT: &str = "sessionguard.io/evict-at";
/// On an interacted pod where drift eviction does not apply, instead of
/// `evict-at`: `off: <why>` (the flag, the namespace allowlist, or the
/// namespace's exempt label). Written by the controller only.
pub const EVICTION: &str = "sessionguard.io/eviction";
pub const EXTENSION: &str = "sessionguard.io/extension";
pub const EXTENDED_BY: &str = "sessionguard.io/extended-by";
/// Previous autoscaler annotation values, restored after the last logout.
pub const SAVED_ANNOTATIONS: &str = "sessionguard.io/saved-annotations";
pub const PROTECTED_SINCE: &str = "sessionguard.io/protected-since";

/// Namespace annotation: a lower `--max-protection` for the namespace's pods
/// (a duration; it never raises the flag's cap).
pub const MAX_PROTECTION: &str = "sessionguard.io/max-protection";

/// Namespace label that exempts a namespace from drift eviction.
pub const EVICTION_EXEMPT: &str = "sessionguard.io/eviction-exempt";

pub const CA_SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";
pub const KARPENTER_DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";
/// The kubelet's annotation on mirror pods, holding the static pod's config hash.
pub const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";
/// The kubelet's annotation with a pod's config hash: on a mirror pod, the
/// static pod's UID, which its cgroup (and so the agent's report) carries.
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";

/// True for the values Kubernetes users write for yes.
pub fn is_true(v: Option<&str>) -> bool {
    matches!(
        v.map(str::trim),
        Some("true" | "True" | "TRUE" | "yes" | "1")
    )
}

/// Pod label holding the pod's UID: the one selector that matches exactly one
/// pod, whatever created it, so our PDB can never cover a sibling.
pub const POD_UID_LABEL: &str = "sessionguard.io/pod-uid";
/// The StatefulSet controller's revision label on each pod.
pub const REVISION_HASH: &str = "controller-revision-hash";

/// Whether the controller reads this label or annotation key on a pod: ours,
/// login-protector's, the autoscalers' eviction keys it saves and sets, the
/// kubelet's mirror keys and the StatefulSet's revision. The pod cache keeps
/// only these (a pod's other labels and annotations are most of its cached
/// bytes); a new reader of another key on pods must add it here.
pub fn read_on_pods(key: &str) -> bool {
    key.starts_with(PREFIX)
        || key.starts_with(LP_PREFIX)
        || [
            CA_SAFE_TO_EVICT,
            KARPENTER_DO_NOT_DISRUPT,
            CONFIG_MIRROR,
            CONFIG_HASH,
            REVISION_HASH,
            MANAGED_BY,
        ]
        .contains(&key)
}

/// The SessionReport custom resource agents write (one per node).
pub const REPORT_GROUP: &str = "sessionguard.io";
pub const REPORT_VERSION: &str = "v1alpha1";
pub const REPORT_KIND: &str = "SessionReport";
pub const REPORT_PLURAL: &str = "sessionreports";

/// The container of the most recent API interaction (exec, attach, debug),
/// written by the admission webhook's record path.
pub const LAST_CONTAINER: &str = "sessionguard.io/last-container";
/// The command of the most recent API interaction (exec's command, or the
/// ephemeral container's command and args), shell-quoted and truncated to
/// [`LAST_COMMAND_MAX`] bytes; absent for attach, which has none.
pub const LAST_COMMAND: &str = "sessionguard.io/last-command";
/// The groups of the user of the most recent API interaction, comma-separated
/// and truncated to [`LAST_COMMAND_MAX`] bytes.
pub const LAST_GROUPS: &str = "sessionguard.io/last-groups";
/// Bound on each of the free-text annotations above: a pod's annotations
/// share a 256 KiB budget with everything else on it.
pub const LAST_COMMAND_MAX: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_cache_keeps_every_key_read_on_pods_and_no_other() {
        for k in [
            PROTECT,
            NO_PDB,
            LP_PROTECT,
            LP_NO_PDB,
            INTERACTED,
            FIRST_INTERACTION,
            EVICT_AT,
            SAVED_ANNOTATIONS,
            CA_SAFE_TO_EVICT,
            KARPENTER_DO_NOT_DISRUPT,
            CONFIG_MIRROR,
            CONFIG_HASH,
            POD_UID_LABEL,
            REVISION_HASH,
            LAST_INTERACTOR,
        ] {
            assert!(read_on_pods(k), "{k}");
        }
        for k in [
            "app",
            "pod-template-hash",
            "prometheus.io/scrape",
            "kubernetes.io/config.source",
            "sessionguard.io",
            "login-protector.cybozu.io",
        ] {
            assert!(!read_on_pods(k), "{k}");
        }
    }
}
