//! The reconciles against a scripted API server: each scenario states the
//! cluster as the caches see it, then the writes the reconcile must make, in
//! order, with the fields that carry the decision.

mod evict;
mod pod;
mod rollout;

use serde_json::Value;

const POD: &str = "/api/v1/namespaces/ops/pods/web-0";
const PDBS: &str = "/apis/policy/v1/namespaces/ops/poddisruptionbudgets";
const OUR_PDB: &str = "/apis/policy/v1/namespaces/ops/poddisruptionbudgets/sessionguard-web-0";
const MERGE_PATCH: &str = "application/merge-patch+json";

/// A merge patch removes `key` (sets it to null; absent would keep it).
fn removes(map: &Value, key: &str) -> bool {
    map.get(key) == Some(&Value::Null)
}
