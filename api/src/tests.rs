use std::path::Path;

use kube::Resource;
use serde_json::{Value, json};
use sessionguard_core::{ReportLimits, keys, notice, report, session};

use super::*;

fn schema() -> Value {
    let crd = serde_json::to_value(crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn the_charts_crd_is_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(CHART_CRD_PATH);
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    let want = crd_yaml().unwrap();
    let same = have.lines().zip(want.lines()).take_while(|(a, b)| a == b);
    assert!(
        have == want,
        "{CHART_CRD_PATH} differs from the CRD generated from the SessionReport type \
         (first difference at line {}); run `make manifests` and commit the result",
        same.count() + 1
    );
}

/// The bounds are the core's constants, which the agent's encoder and the
/// controller's limits read too: a field that lost its attribute fails here.
#[test]
fn the_schema_bounds_are_the_core_constants() {
    const SPEC: &str = "/properties/spec/properties";
    const SESSION: &str = "/properties/spec/properties/sessions/items/properties";
    let cases = [
        (format!("{SPEC}/node/maxLength"), report::NODE_NAME_MAX),
        (format!("{SPEC}/node/minLength"), 1),
        (
            format!("{SPEC}/generated_at/maxLength"),
            session::TIMESTAMP_MAX,
        ),
        (format!("{SPEC}/sessions/maxItems"), report::SESSIONS_MAX),
        (format!("{SESSION}/pod_uid/maxLength"), session::POD_UID_MAX),
        (
            format!("{SESSION}/container_id/maxLength"),
            session::CONTAINER_ID_LEN,
        ),
        (format!("{SESSION}/tty/maxLength"), session::TTY_MAX),
        (format!("{SESSION}/command/maxLength"), session::COMMAND_MAX),
        (format!("{SESSION}/argv/maxItems"), session::ARGV_ITEMS_MAX),
        (format!("{SESSION}/argv/items/maxLength"), session::ARG_MAX),
        (
            format!("{SESSION}/started_at/maxLength"),
            session::TIMESTAMP_MAX,
        ),
        (
            format!("{SESSION}/namespace/maxLength"),
            session::NAMESPACE_MAX,
        ),
        (
            format!("{SESSION}/pod_name/maxLength"),
            session::POD_NAME_MAX,
        ),
        (
            format!("{SESSION}/container_name/maxLength"),
            session::CONTAINER_NAME_MAX,
        ),
        (format!("{SESSION}/pid/maximum"), u32::MAX as usize),
        (format!("{SESSION}/uid/maximum"), u32::MAX as usize),
        (format!("{SESSION}/processes/maximum"), u32::MAX as usize),
    ];
    const NOTICE: &str = "/properties/status/properties/notices/items/properties";
    let cases = cases.into_iter().chain([
        (
            "/properties/status/properties/notices/maxItems".to_string(),
            notice::NOTICES_MAX,
        ),
        (format!("{NOTICE}/line/maxLength"), notice::LINE_MAX),
        (format!("{NOTICE}/tty/maxLength"), session::TTY_MAX),
        (format!("{NOTICE}/pod_uid/maxLength"), session::POD_UID_MAX),
        (format!("{NOTICE}/since/maxLength"), session::TIMESTAMP_MAX),
        (format!("{NOTICE}/pid/maximum"), u32::MAX as usize),
    ]);
    let s = schema();
    for (pointer, want) in cases {
        let have = s.pointer(&pointer).and_then(Value::as_f64);
        assert_eq!(have, Some(want as f64), "{pointer}");
    }
    assert_eq!(
        ReportLimits::default().max_sessions,
        report::SESSIONS_MAX,
        "the controller's limit is the schema's"
    );
}

/// Every field the schema leaves optional is absent, never null, on the wire;
/// a `nullable` would let a null through that the agent never writes.
#[test]
fn the_schema_is_structural_and_allows_no_nulls() {
    let text = serde_json::to_string(&schema()).unwrap();
    for banned in [
        "nullable",
        "anyOf",
        "oneOf",
        "$ref",
        "x-kubernetes-preserve-unknown-fields",
    ] {
        assert!(!text.contains(banned), "schema has {banned}: {text}");
    }
    let s = schema();
    let required = |v: &Value| {
        let mut names: Vec<String> = serde_json::from_value(v["required"].clone()).unwrap();
        names.sort();
        names
    };
    let spec = &s["properties"]["spec"];
    assert_eq!(required(&s), ["spec"]);
    assert_eq!(required(spec), ["generated_at", "node", "sessions"]);
    assert_eq!(
        required(&spec["properties"]["sessions"]["items"]),
        [
            "command",
            "container_id",
            "pid",
            "pod_uid",
            "processes",
            "started_at",
            "tty",
            "uid"
        ]
    );
}

#[test]
fn names_and_scope_are_the_ones_agents_and_rbac_use() {
    assert_eq!(SessionReport::group(&()), keys::REPORT_GROUP);
    assert_eq!(SessionReport::version(&()), keys::REPORT_VERSION);
    assert_eq!(SessionReport::kind(&()), keys::REPORT_KIND);
    assert_eq!(SessionReport::plural(&()), keys::REPORT_PLURAL);
    let crd = crd();
    assert_eq!(crd.spec.scope, "Cluster");
    assert_eq!(crd.spec.names.short_names, Some(vec!["sgr".to_string()]));
    let columns: Vec<String> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| format!("{}={}", c.name, c.json_path))
        .collect();
    assert_eq!(
        columns,
        ["Generated=.spec.generated_at", "Sequence=.spec.sequence"]
    );
}

/// The object is the report on the wire, as agents wrote it before the type
/// existed: spec holds the report's own JSON, the name is the node.
#[test]
fn the_wire_form_is_the_agents_report() {
    let spec = json!({
        "node": "node-a", "generated_at": "2026-11-24T01:00:00Z", "sequence": 7,
        "sessions": [{
            "pod_uid": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "container_id": "ab".repeat(32),
            "tty": "pts/3", "pid": 42, "command": "bash", "argv": ["bash", "-l"], "uid": 1000,
            "started_at": "2026-11-24T00:59:00Z", "processes": 2, "console": false, "init": false,
            "idle_seconds": 120, "namespace": "ops", "pod_name": "web-0", "container_name": "app"
        }]
    });
    let report: Report = serde_json::from_value(spec.clone()).unwrap();
    let obj = serde_json::to_value(SessionReport::of(report.clone())).unwrap();
    assert_eq!(obj["apiVersion"], "sessionguard.io/v1alpha1");
    assert_eq!(obj["kind"], "SessionReport");
    assert_eq!(obj["metadata"], json!({"name": "node-a"}));
    assert_eq!(obj["spec"], spec);
    assert!(
        obj.get("status").is_none(),
        "the agent's apply never claims the status (the controller's): {obj}"
    );
    let back: SessionReport = serde_json::from_value(obj).unwrap();
    assert!(back.notices().is_empty());
    assert_eq!(back.into_report(), report);
    // An agent from before idle times: its sessions read as active (0).
    let mut old = spec;
    old["sessions"][0]
        .as_object_mut()
        .unwrap()
        .remove("idle_seconds");
    let report: Report = serde_json::from_value(old).unwrap();
    assert_eq!(report.sessions[0].idle_seconds, 0);
}
