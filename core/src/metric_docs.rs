//! For the binaries' tests that keep the README's metric tables true: what a
//! registry serves and what a README section lists, both as name → type, so
//! a test can name every difference at once.

use std::collections::BTreeMap;

/// Name → type of every family in a Prometheus text exposition, as its
/// `# TYPE` line declares it; a counter under the name its samples carry
/// (`_total`), which is the name people query and the README lists.
pub fn served(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| {
            let name = match kind {
                "counter" if !name.ends_with("_total") => format!("{name}_total"),
                _ => name.to_string(),
            };
            (name, kind.to_string())
        })
        .collect()
}

/// Name → type of the table rows in the README section under `heading` (a
/// whole heading line, `### Controller metrics`), up to the next heading of
/// the same or a higher level: every row whose first cell is a metric name
/// with `prefix` in backticks, and whose second cell is its type.
pub fn documented(readme: &str, heading: &str, prefix: &str) -> BTreeMap<String, String> {
    table_rows(readme, heading)
        .into_iter()
        .filter_map(|cells| {
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let kind = cells.get(2)?;
            name.starts_with(prefix)
                .then(|| (name.to_string(), kind.to_string()))
        })
        .collect()
}

/// The table rows of the README section under `heading`, each as its cells
/// trimmed (the first, before the leading `|`, empty).
pub fn table_rows<'a>(readme: &'a str, heading: &str) -> Vec<Vec<&'a str>> {
    section(readme, heading)
        .into_iter()
        .filter(|l| l.starts_with('|'))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect()
}

/// The lines of the README section under `heading` (a whole heading line),
/// up to the next heading of the same or a higher level; none when the
/// heading is not there.
pub fn section<'a>(readme: &'a str, heading: &str) -> Vec<&'a str> {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let Some((_, rest)) = readme.split_once(&format!("\n{heading}\n")) else {
        return Vec::new();
    };
    rest.lines()
        .take_while(|l| {
            let hashes = l.chars().take_while(|c| *c == '#').count();
            !(hashes > 0 && hashes <= level && l[hashes..].starts_with(' '))
        })
        .collect()
}

/// Every difference between what is served and what is documented, one per
/// line; empty when they agree.
pub fn differences(
    served: &BTreeMap<String, String>,
    documented: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (name, kind) in served {
        match documented.get(name) {
            None => out.push(format!("served, not in the README: {name} ({kind})")),
            Some(d) if d != kind => {
                out.push(format!("{name}: served as a {kind}, the README says {d}"))
            }
            Some(_) => {}
        }
    }
    for name in documented.keys().filter(|n| !served.contains_key(*n)) {
        out.push(format!("in the README, not served: {name}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = "intro\n\
        ### Controller metrics\n\
        \n\
        | Metric | Type | Labels |\n\
        |---|---|---|\n\
        | `sg_writes_total` | counter | op |\n\
        | `sg_leader` | gauge | |\n\
        #### Webhook metrics\n\
        | `sg_webhook_seconds` | histogram | webhook |\n\
        ### Labels\n\
        | `sg_not_a_metric_here` | gauge | |\n";

    #[test]
    fn a_section_runs_to_the_next_heading_of_its_level_and_keeps_only_metric_rows() {
        let d = documented(README, "### Controller metrics", "sg_");
        assert_eq!(
            d.into_iter().collect::<Vec<_>>(),
            [
                ("sg_leader".to_string(), "gauge".to_string()),
                ("sg_webhook_seconds".into(), "histogram".into()),
                ("sg_writes_total".into(), "counter".into()),
            ]
        );
        assert!(documented(README, "### Agent metrics", "sg_").is_empty());
    }

    #[test]
    fn counters_are_named_as_their_samples_and_every_difference_is_named() {
        let s = served(
            "# HELP sg_writes Writes.\n# TYPE sg_writes counter\nsg_writes_total{op=\"x\"} 1\n\
             # TYPE sg_leader gauge\n# TYPE sg_new histogram\n",
        );
        let d = documented(README, "### Controller metrics", "sg_");
        assert_eq!(
            differences(&s, &d),
            [
                "served, not in the README: sg_new (histogram)",
                "in the README, not served: sg_webhook_seconds",
            ]
        );
        let mut wrong = d.clone();
        wrong.insert("sg_leader".into(), "counter".into());
        assert_eq!(
            differences(&s, &wrong)[0],
            "sg_leader: served as a gauge, the README says counter"
        );
    }
}
