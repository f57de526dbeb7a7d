//! For the binaries' tests that keep the README's metric tables true: what a
//! registry serves and what a README section lists, each as name → type and
//! label names, so a test can name every difference at once.

use std::collections::{BTreeMap, BTreeSet};

/// One metric family: its type and its label names. Label names are `None`
/// where they cannot be known: a served family without a sample (a labelled
/// family shows its label names only on its samples), or a README row
/// without a labels cell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Family {
    pub kind: String,
    pub labels: Option<BTreeSet<String>>,
}

/// Every family in a Prometheus text exposition: its type as its `# TYPE`
/// line declares it, and the label names of its samples (a histogram's `le`
/// aside). A counter is under the name its samples carry (`_total`), which is
/// the name people query and the README lists.
pub fn served(exposition: &str) -> BTreeMap<String, Family> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            current = rest.split_once(' ').map(|(name, kind)| {
                let name = match kind {
                    "counter" if !name.ends_with("_total") => format!("{name}_total"),
                    _ => name.to_string(),
                };
                out.entry(name.clone()).or_default().kind = kind.to_string();
                name
            });
        } else if !line.starts_with('#')
            && !line.trim().is_empty()
            && let Some(family) = current.as_ref().and_then(|n| out.get_mut(n))
        {
            let names = sample_label_names(line);
            family
                .labels
                .get_or_insert_with(BTreeSet::new)
                .extend(names.into_iter().filter(|n| n != "le"));
        }
    }
    out
}

/// The label names of one sample line (`name{a="x",b="y"} 1`): the keys
/// before each `=`, with quoted values skipped (they may hold `,`, `=` and
/// escaped quotes).
fn sample_label_names(line: &str) -> Vec<String> {
    let Some((_, rest)) = line.split_once('{') else {
        return Vec::new();
    };
    let mut names = Vec::new();
    let mut chars = rest.chars();
    let mut key = String::new();
    while let Some(c) = chars.next() {
        match c {
            '}' => break,
            ',' | ' ' => {}
            '=' => {
                names.push(std::mem::take(&mut key));
                // The value: a quoted string with backslash escapes.
                if chars.next() != Some('"') {
                    break;
                }
                let mut escaped = false;
                for v in chars.by_ref() {
                    match (escaped, v) {
                        (true, _) => escaped = false,
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => {}
                    }
                }
            }
            c => key.push(c),
        }
    }
    names
}

/// Every table row in the README section under `heading` (a whole heading
/// line, `### Controller metrics`), up to the next heading of the same or a
/// higher level, whose first cell is a metric name with `prefix` in
/// backticks: its type (the second cell) and its label names (the third,
/// comma-separated, backticks allowed; empty for none).
pub fn documented(readme: &str, heading: &str, prefix: &str) -> BTreeMap<String, Family> {
    table_rows(readme, heading)
        .into_iter()
        .filter_map(|cells| {
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let kind = cells.get(2)?;
            let labels = cells.get(3).map(|c| {
                c.split(',')
                    .map(|l| l.trim().trim_matches('`').to_string())
                    .filter(|l| !l.is_empty())
                    .collect()
            });
            name.starts_with(prefix).then(|| {
                (
                    name.to_string(),
                    Family {
                        kind: kind.to_string(),
                        labels,
                    },
                )
            })
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
/// line; empty when they agree. Label names are compared for every served
/// family; one without a sample is a difference too, because its labels
/// went unchecked (the caller feeds every family once).
pub fn differences(
    served: &BTreeMap<String, Family>,
    documented: &BTreeMap<String, Family>,
) -> Vec<String> {
    let mut out = Vec::new();
    let names = |l: &BTreeSet<String>| l.iter().cloned().collect::<Vec<_>>().join(", ");
    for (name, s) in served {
        let Some(d) = documented.get(name) else {
            out.push(format!("served, not in the README: {name} ({})", s.kind));
            continue;
        };
        if d.kind != s.kind {
            out.push(format!(
                "{name}: served as a {}, the README says {}",
                s.kind, d.kind
            ));
        }
        match (&s.labels, &d.labels) {
            (Some(sl), Some(dl)) if sl != dl => out.push(format!(
                "{name}: served with labels [{}], the README says [{}]",
                names(sl),
                names(dl)
            )),
            (Some(_), None) => out.push(format!("{name}: the README row has no labels cell")),
            (None, _) => out.push(format!(
                "{name}: no sample served, so its labels went unchecked (feed it in the test)"
            )),
            _ => {}
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
        | Metric | Type | Labels | Meaning |\n\
        |---|---|---|---|\n\
        | `sg_writes_total` | counter | op, `outcome` | writes |\n\
        | `sg_leader` | gauge | | 1 while leading |\n\
        #### Webhook metrics\n\
        | `sg_webhook_seconds` | histogram | webhook | time |\n\
        ### Labels\n\
        | `sg_not_a_metric_here` | gauge | | |\n";

    fn family(kind: &str, labels: &[&str]) -> Family {
        Family {
            kind: kind.into(),
            labels: Some(labels.iter().map(|l| l.to_string()).collect()),
        }
    }

    #[test]
    fn a_section_runs_to_the_next_heading_of_its_level_and_keeps_only_metric_rows() {
        let d = documented(README, "### Controller metrics", "sg_");
        assert_eq!(
            d.into_iter().collect::<Vec<_>>(),
            [
                ("sg_leader".to_string(), family("gauge", &[])),
                (
                    "sg_webhook_seconds".into(),
                    family("histogram", &["webhook"])
                ),
                (
                    "sg_writes_total".into(),
                    family("counter", &["op", "outcome"])
                ),
            ]
        );
        assert!(documented(README, "### Agent metrics", "sg_").is_empty());
    }

    #[test]
    fn label_names_come_from_the_samples_with_quoted_values_skipped() {
        let s = served(
            "# TYPE sg_writes counter\n\
             sg_writes_total{op=\"a,b=\\\"c\\\"\",outcome=\"ok\"} 1\n\
             # TYPE sg_webhook_seconds histogram\n\
             sg_webhook_seconds_sum{webhook=\"connect\"} 0.1\n\
             sg_webhook_seconds_bucket{le=\"0.5\",webhook=\"connect\"} 1\n\
             # TYPE sg_leader gauge\n\
             sg_leader 1\n\
             # TYPE sg_unfed counter\n",
        );
        assert_eq!(s["sg_writes_total"], family("counter", &["op", "outcome"]));
        assert_eq!(s["sg_webhook_seconds"], family("histogram", &["webhook"]));
        assert_eq!(s["sg_leader"], family("gauge", &[]));
        assert_eq!(
            s["sg_unfed_total"].labels, None,
            "no sample, labels unknown"
        );
    }

    #[test]
    fn every_difference_is_named_labels_included() {
        let s = served(
            "# HELP sg_writes Writes.\n# TYPE sg_writes counter\n\
             sg_writes_total{op=\"x\"} 1\n\
             # TYPE sg_leader gauge\nsg_leader 0\n# TYPE sg_new histogram\n",
        );
        let d = documented(README, "### Controller metrics", "sg_");
        assert_eq!(
            differences(&s, &d),
            [
                "served, not in the README: sg_new (histogram)",
                "sg_writes_total: served with labels [op], the README says [op, outcome]",
                "in the README, not served: sg_webhook_seconds",
            ]
        );
        let mut wrong = d.clone();
        wrong.insert("sg_leader".into(), family("counter", &[]));
        assert_eq!(
            differences(&s, &wrong)[0],
            "sg_leader: served as a gauge, the README says counter"
        );
    }

    #[test]
    fn a_family_without_a_sample_is_named_for_its_unchecked_labels() {
        let d = documented(README, "### Controller metrics", "sg_");
        let s = served(
            "# TYPE sg_writes counter\nsg_writes_total{op=\"x\",outcome=\"ok\"} 1\n\
             # TYPE sg_leader gauge\n# TYPE sg_webhook_seconds histogram\n\
             sg_webhook_seconds_count{webhook=\"a\"} 1\n",
        );
        assert_eq!(
            differences(&s, &d),
            ["sg_leader: no sample served, so its labels went unchecked (feed it in the test)"]
        );
    }
}
