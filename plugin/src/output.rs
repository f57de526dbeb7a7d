//! Table, wide, JSON and YAML renderings of rows.

use clap::ValueEnum;
use jiff::Timestamp;
use sessionguard_core::duration;
use sessionguard_core::interaction::rfc3339;
use sessionguard_core::printable::printable;

use crate::error::{Error, Result};
use crate::rows::{Row, relative};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Wide,
    Json,
    Yaml,
}

fn or_dash(s: Option<String>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into())
}

fn when(now: Timestamp, t: Option<Timestamp>) -> String {
    t.map(|t| format!("{} ({})", rfc3339(t), relative(now, t)))
        .unwrap_or_else(|| "-".into())
}

pub fn render(
    rows: &[Row],
    format: Format,
    now: Timestamp,
    all_namespaces: bool,
) -> Result<String> {
    match format {
        Format::Json => serde_json::to_string_pretty(&serde_json::json!({ "items": rows }))
            .map(|s| s + "\n")
            .map_err(|e| Error::Encode(e.to_string())),
        Format::Yaml => serde_yaml::to_string(&serde_json::json!({ "items": rows }))
            .map_err(|e| Error::Encode(e.to_string())),
        Format::Table | Format::Wide => {
            Ok(table(rows, format == Format::Wide, now, all_namespaces))
        }
    }
}

fn table(rows: &[Row], wide: bool, now: Timestamp, all_namespaces: bool) -> String {
    let mut header: Vec<&str> = vec![];
    if all_namespaces {
        header.push("NAMESPACE");
    }
    header.extend([
        "POD",
        "CONTAINER",
        "USER",
        "SESSIONS",
        "IDLE",
        "FIRST-INTERACTION",
        "PROTECTED",
        "BLOCKING",
        "EVICTION-TIME",
    ]);
    if wide {
        header.extend([
            "NODE",
            "LAST-INTERACTION",
            "TTL",
            "EXTENSION",
            "EXTENDED-BY",
        ]);
    }
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        let mut l = vec![];
        if all_namespaces {
            l.push(r.namespace.clone());
        }
        l.extend([
            r.pod.clone(),
            or_dash(Some(r.containers.join(","))),
            or_dash(r.user.clone()),
            r.sessions.map_or("-".into(), |n| n.to_string()),
            r.idle_seconds.map_or("-".into(), |s| {
                duration::format(std::time::Duration::from_secs(u64::from(s)))
            }),
            r.first_interaction
                .map(rfc3339)
                .unwrap_or_else(|| "-".into()),
            if r.protected { "yes" } else { "no" }.into(),
            r.blocking
                .as_ref()
                .map_or("-".into(), |b| crate::blocking::describe(b, now)),
            match (&r.record_error, &r.eviction_off) {
                (Some(_), _) => "unreadable record".into(),
                (None, Some(why)) => format!("off ({why})"),
                (None, None) => when(now, r.eviction_time),
            },
        ]);
        if wide {
            l.extend([
                or_dash(r.node.clone()),
                r.last_interaction
                    .map(rfc3339)
                    .unwrap_or_else(|| "-".into()),
                or_dash(r.ttl.clone()),
                or_dash(r.extension.clone()),
                or_dash(r.extended_by.clone()),
            ]);
        }
        // Users, containers and annotation values are other people's text.
        lines.push(l.iter().map(|cell| printable(cell, 253)).collect());
    }
    align(&lines)
}

/// Lines of cells as kubectl prints them: columns padded to their widest
/// cell, three spaces apart, the last one unpadded.
pub fn align(lines: &[Vec<String>]) -> String {
    let cols = lines.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for l in lines {
        let cells: Vec<String> = l
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == cols {
                    c.clone()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row {
            namespace: "ops".into(),
            pod: "web-0".into(),
            node: Some("node-a".into()),
            containers: vec!["app".into()],
            user: Some("alice".into()),
            sessions: Some(1),
            idle_seconds: Some(300),
            first_interaction: Some("2026-11-24T01:00:00Z".parse().unwrap()),
            last_interaction: None,
            protected: true,
            ttl: Some("10m0s".into()),
            extension: None,
            extended_by: None,
            eviction_time: Some("2026-11-24T01:10:00Z".parse().unwrap()),
            eviction_off: None,
            record_error: None,
            blocking: None,
        }
    }

    #[test]
    fn table_has_the_documented_columns() {
        let now = "2026-11-24T01:00:30Z".parse().unwrap();
        let t = render(&[row()], Format::Table, now, false).unwrap();
        let mut lines = t.lines();
        assert_eq!(
            lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
            [
                "POD",
                "CONTAINER",
                "USER",
                "SESSIONS",
                "IDLE",
                "FIRST-INTERACTION",
                "PROTECTED",
                "BLOCKING",
                "EVICTION-TIME"
            ]
        );
        assert_eq!(
            lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
            [
                "web-0",
                "app",
                "alice",
                "1",
                "5m0s",
                "2026-11-24T01:00:00Z",
                "yes",
                "-",
                "2026-11-24T01:10:00Z",
                "(in",
                "9m30s)"
            ]
        );
        let w = render(&[row()], Format::Wide, now, true).unwrap();
        assert!(w.starts_with("NAMESPACE") && w.contains("EXTENDED-BY"));
        let j: serde_json::Value =
            serde_json::from_str(&render(&[row()], Format::Json, now, false).unwrap()).unwrap();
        assert_eq!(j["items"][0]["evictionTime"], "2026-11-24T01:10:00Z");
        assert_eq!(j["items"][0]["blocking"], serde_json::Value::Null);
        let waited = Row {
            blocking: Some(crate::blocking::Blocking {
                node: "node-3".into(),
                since: "2026-11-24T00:48:00Z".parse().unwrap(),
                last: "2026-11-24T01:00:25Z".parse().unwrap(),
                requested_by: Some("admin".into()),
            }),
            ..row()
        };
        let t = render(&[waited], Format::Table, now, false).unwrap();
        let line = t.lines().nth(1).unwrap();
        let cells: Vec<&str> = line
            .split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(cells[6..8], ["yes", "drain of node-3, 12m"], "{t}");
        assert_eq!(j["items"][0]["idleSeconds"], 300);
    }

    #[test]
    fn eviction_off_says_so_and_why() {
        let now = "2026-11-24T01:00:30Z".parse().unwrap();
        let off = Row {
            eviction_time: None,
            eviction_off: Some("--evict-interacted is false".into()),
            ..row()
        };
        let t = render(&[off], Format::Table, now, false).unwrap();
        let line = t.lines().nth(1).unwrap();
        assert!(
            line.split_whitespace().rev().take(4).eq([
                "false)",
                "is",
                "(--evict-interacted",
                "off"
            ]),
            "{line}"
        );
        assert!(!line.contains("(in"), "{line}");
    }
}
