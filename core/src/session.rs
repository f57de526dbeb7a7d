//! A terminal session: one controlling terminal inside one container.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::Error;

// Bounds of a session's fields. The SessionReport schema (api/) is generated
// from them, so the API server refuses a longer value with a 422 that names the
// field; the agent's encoder truncates to the same numbers so one long argv
// cannot cost a node its whole report.

/// A dashed pod UID; the 32-hex static pod hash is shorter.
pub const POD_UID_MAX: usize = 36;
pub const CONTAINER_ID_LEN: usize = 64;
/// `pts/N` or `major:minor`.
pub const TTY_MAX: usize = 32;
/// The basename of argv[0], which may be longer than the kernel's 15-byte `comm`.
pub const COMMAND_MAX: usize = 64;
pub const ARGV_ITEMS_MAX: usize = 64;
pub const ARG_MAX: usize = 1024;
/// An RFC 3339 timestamp with nanoseconds and an offset is 35 characters.
pub const TIMESTAMP_MAX: usize = 64;
/// Kubernetes' own limits: a namespace and a container name are DNS labels,
/// a pod name a DNS subdomain.
pub const NAMESPACE_MAX: usize = 63;
pub const POD_NAME_MAX: usize = 253;
pub const CONTAINER_NAME_MAX: usize = 63;

/// What [`PodUid::parse`] accepts, for the schema: dashed or underscored UID,
/// or a static pod's 32-hex hash.
const POD_UID_PATTERN: &str = "^([0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12}|[0-9a-fA-F]{32})$";
/// What [`ContainerId::parse`] accepts.
const CONTAINER_ID_PATTERN: &str = "^[0-9a-fA-F]{64}$";

/// A pod's UID as the kubelet writes it into cgroup paths, normalised to
/// lowercase with dashes. Static pods carry their 32-hex config hash instead
/// (the mirror pod exposes it as `kubernetes.io/config.mirror`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PodUid(String);

/// A container ID: 64 lowercase hex characters, no `containerd://` prefix.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerId(String);

/// One controlling terminal inside one container, as the agent saw it.
///
/// Processes that share the terminal are counted in `processes`; the pid,
/// command and uid are the session leader's (or the oldest process on the
/// terminal when the leader lives outside the container).
//
// In the schema, integers are `int64` (Kubernetes knows no unsigned format)
// with a range that keeps them within `u32`, and the optional strings are plain
// strings (absent, never null: the agent omits them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Session {
    pub pod_uid: PodUid,
    pub container_id: ContainerId,
    /// `pts/N` for Unix98 ptys, `major:minor` otherwise.
    #[schemars(length(max = TTY_MAX))]
    pub tty: String,
    #[schemars(range(max = u32::MAX), extend("format" = "int64"))]
    pub pid: u32,
    #[schemars(length(max = COMMAND_MAX))]
    pub command: String,
    #[serde(default)]
    #[schemars(length(max = ARGV_ITEMS_MAX), inner(length(max = ARG_MAX)))]
    pub argv: Vec<String>,
    #[schemars(range(max = u32::MAX), extend("format" = "int64"))]
    pub uid: u32,
    /// RFC3339, from the boot time and the leader's start time.
    #[schemars(length(max = TIMESTAMP_MAX))]
    pub started_at: jiff::Timestamp,
    #[schemars(range(max = u32::MAX), extend("format" = "int64"))]
    pub processes: u32,
    /// The container's own console, reported for visibility, never a login.
    /// The agent sets it to `init` (it cannot see the pod spec); the
    /// controller decides it again from `init` and the spec
    /// ([`crate::console::is_console`]).
    #[serde(default)]
    pub console: bool,
    /// Seconds since the session's last activity. Exact in the agent's scan
    /// output and /sessions; in a SessionReport rounded down to a step: 0
    /// below the agent's --idle-resolution, then that times a power of two.
    /// 0 from an agent that does not measure it.
    #[serde(default)]
    #[schemars(range(max = u32::MAX), extend("format" = "int64"))]
    pub idle_seconds: u32,
    /// The leader is its container's first process (no process of the
    /// container is older): the init, when the container is not ephemeral.
    /// Absent from older agents' reports, read as false (a login).
    #[serde(default)]
    pub init: bool,
    /// Filled by the agent from its node's pod watch when it knows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = NAMESPACE_MAX))]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = POD_NAME_MAX))]
    pub pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = CONTAINER_NAME_MAX))]
    pub container_name: Option<String>,
}

impl Session {
    /// A login is any terminal session that is not the container's console.
    pub fn is_login(&self) -> bool {
        !self.console
    }

    /// The schema's bounds on this session's strings, counted in characters
    /// as the API server counts `maxLength`. The ids are checked when parsed.
    pub fn validate(&self) -> Result<(), Error> {
        if self.argv.len() > ARGV_ITEMS_MAX {
            return Err(self.invalid(format!(
                "argv has {} items, over {ARGV_ITEMS_MAX}",
                self.argv.len()
            )));
        }
        let fields = [
            ("tty", self.tty.as_str(), TTY_MAX),
            ("command", self.command.as_str(), COMMAND_MAX),
            (
                "namespace",
                self.namespace.as_deref().unwrap_or_default(),
                NAMESPACE_MAX,
            ),
            (
                "pod_name",
                self.pod_name.as_deref().unwrap_or_default(),
                POD_NAME_MAX,
            ),
            (
                "container_name",
                self.container_name.as_deref().unwrap_or_default(),
                CONTAINER_NAME_MAX,
            ),
        ];
        let args = self.argv.iter().map(|a| ("argv item", a.as_str(), ARG_MAX));
        for (field, value, max) in fields.into_iter().chain(args) {
            let n = value.chars().count();
            if n > max {
                return Err(self.invalid(format!("{field} is {n} characters, over {max}")));
            }
        }
        Ok(())
    }

    fn invalid(&self, what: String) -> Error {
        Error::Report(format!(
            "session {} pid {} on {}: {what}",
            self.container_id.short(),
            self.pid,
            self.tty
        ))
    }
}

// === impl PodUid ===

impl PodUid {
    /// Accepts the dashed form, the underscored form systemd slice names use,
    /// and the 32-hex hash of static pods; any case.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bytes = s.as_bytes();
        let ok = match bytes.len() {
            POD_UID_MAX => bytes.iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-' || *b == b'_',
                _ => b.is_ascii_hexdigit(),
            }),
            32 => bytes.iter().all(u8::is_ascii_hexdigit),
            _ => false,
        };
        if !ok {
            return Err(Error::PodUid(s.to_string()));
        }
        Ok(Self(s.to_ascii_lowercase().replace('_', "-")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Static pods are named by their config hash, not an API server UID.
    pub fn is_static(&self) -> bool {
        self.0.len() == 32
    }
}

impl TryFrom<String> for PodUid {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        Self::parse(&s)
    }
}

impl From<PodUid> for String {
    fn from(u: PodUid) -> String {
        u.0
    }
}

impl fmt::Display for PodUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for PodUid {
    fn schema_name() -> Cow<'static, str> {
        "PodUid".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "pattern": POD_UID_PATTERN, "maxLength": POD_UID_MAX})
    }
}

// === impl ContainerId ===

impl ContainerId {
    pub fn parse(s: &str) -> Result<Self, Error> {
        if s.len() == CONTAINER_ID_LEN && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(Error::ContainerId(s.to_string()))
        }
    }

    /// Strips a CRI scheme such as `containerd://` or `cri-o://`, as found in
    /// `status.containerStatuses[].containerID`.
    pub fn from_status(s: &str) -> Result<Self, Error> {
        Self::parse(s.rsplit_once("://").map_or(s, |(_, id)| id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 12-character form people know from `crictl ps`.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl TryFrom<String> for ContainerId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        Self::parse(&s)
    }
}

impl From<ContainerId> for String {
    fn from(c: ContainerId) -> String {
        c.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for ContainerId {
    fn schema_name() -> Cow<'static, str> {
        "ContainerId".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": CONTAINER_ID_PATTERN,
            "maxLength": CONTAINER_ID_LEN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_uid_forms() {
        let dashed = "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0";
        let under = "0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0";
        assert_eq!(
            PodUid::parse(dashed).unwrap().as_str(),
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
        );
        assert_eq!(
            PodUid::parse(under).unwrap(),
            PodUid::parse(dashed).unwrap()
        );
        let hash = PodUid::parse("5b2d8bd2d9a4f2e8e7c5a3a0f9b7e6d1").unwrap();
        assert!(hash.is_static());
        for bad in [
            "",
            "pod",
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1fz",
            "0f1e2d3c4b5a-6978-8796-a5b4c3d2e1f0-",
        ] {
            assert!(PodUid::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn container_id_from_status() {
        let id = "a".repeat(64);
        assert_eq!(
            ContainerId::from_status(&format!("containerd://{id}"))
                .unwrap()
                .as_str(),
            id
        );
        assert_eq!(
            ContainerId::from_status(&format!("cri-o://{id}"))
                .unwrap()
                .short(),
            &id[..12]
        );
        assert!(ContainerId::from_status("containerd://abc").is_err());
    }

    #[test]
    fn session_json_rejects_bad_ids() {
        let json = r#"{"pod_uid":"nope","container_id":"x","tty":"pts/0","pid":1,"command":"sh",
            "uid":0,"started_at":"2026-01-01T00:00:00Z","processes":1}"#;
        let err = serde_json::from_str::<Session>(json)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid pod UID"), "{err}");
    }
}
