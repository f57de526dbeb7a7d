//! For the binaries' tests that keep the README's flag tables true: every flag
//! a binary takes has a row naming it and the environment variable it reads,
//! and every flag a row names exists.

use std::collections::{BTreeMap, BTreeSet};

use crate::metric_docs::table_rows;

/// One flag as the binary's parser declares it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Flag {
    /// Without the dashes.
    pub long: String,
    pub env: Option<String>,
}

/// What a binary's README test asserts: `cmd`'s flags (at least `min` of
/// them, so an empty read cannot pass) and the README section under
/// `heading` agree; else every difference, one per line.
pub fn check(readme: &str, heading: &str, cmd: &clap::Command, min: usize) -> Result<(), String> {
    let flags = flags(cmd);
    if flags.len() < min {
        return Err(format!(
            "only {} flags read from {}: {flags:?}",
            flags.len(),
            cmd.get_name()
        ));
    }
    let diff = differences(readme, heading, &flags);
    if diff.is_empty() {
        return Ok(());
    }
    Err(format!(
        "README `{heading}` and {}'s flags disagree:\n  {}",
        cmd.get_name(),
        diff.join("\n  ")
    ))
}

/// Every flag of `cmd` and its subcommands that has a long name, but the
/// generated `--help` and `--version`; a global flag once.
pub fn flags(cmd: &clap::Command) -> Vec<Flag> {
    let mut out = BTreeSet::new();
    collect(cmd, &mut out);
    out.into_iter().collect()
}

fn collect(cmd: &clap::Command, out: &mut BTreeSet<Flag>) {
    for a in cmd.get_arguments() {
        if let Some(long) = a.get_long().filter(|l| !["help", "version"].contains(l)) {
            out.insert(Flag {
                long: long.to_string(),
                env: a.get_env().map(|e| e.to_string_lossy().into_owned()),
            });
        }
    }
    for sub in cmd.get_subcommands() {
        collect(sub, out);
    }
}

/// Every `--flag` in the first cell of the rows under `heading`, with the
/// text of each such row's second cell (the environment variable).
pub fn documented(readme: &str, heading: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for cells in table_rows(readme, heading) {
        let (Some(names), Some(env)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        for long in longs(names) {
            out.entry(long).or_default().push(env.to_string());
        }
    }
    out
}

/// The `--name` words of a cell, without the dashes.
fn longs(cell: &str) -> BTreeSet<String> {
    cell.match_indices("--")
        .map(|(i, _)| {
            cell[i + 2..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
                .collect::<String>()
        })
        // A table's `|---|` rule is no flag: a name starts with a letter.
        .filter(|n| n.starts_with(|c: char| c.is_ascii_lowercase()))
        .collect()
}

/// Every difference between the flags and the README section, one per line;
/// empty when they agree.
pub fn differences(readme: &str, heading: &str, flags: &[Flag]) -> Vec<String> {
    let documented = documented(readme, heading);
    let mut out = Vec::new();
    let mut known = BTreeSet::new();
    for f in flags {
        known.insert(f.long.clone());
        match (documented.get(&f.long), &f.env) {
            (None, env) => out.push(format!(
                "takes --{}{}, not in the README",
                f.long,
                env.as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )),
            (Some(rows), Some(env)) if !rows.iter().any(|r| r.contains(&format!("`{env}`"))) => out
                .push(format!(
                    "--{} reads {env}; the README's row says {}",
                    f.long,
                    rows.join(" / ")
                )),
            _ => {}
        }
    }
    for long in documented.keys().filter(|l| !known.contains(*l)) {
        out.push(format!("in the README, not a flag: --{long}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = "intro\n\
        #### Agent flags\n\
        | flag | env | default | meaning |\n\
        |---|---|---|---|\n\
        | `--log` | `SG_LOG` | `info` | filter; not `--gone` here |\n\
        | `scan --proc-root`, `run --proc-root` | `SG_PROC` | `/proc` | proc |\n\
        | `run --old` | `SG_OLD` | | removed |\n\
        #### Agent metrics\n\
        | `--not-a-flag-row` | `X` | | |\n";

    fn flag(long: &str, env: &str) -> Flag {
        Flag {
            long: long.into(),
            env: Some(env.into()),
        }
    }

    #[test]
    fn a_binary_s_flags_are_read_from_its_parser_with_subcommands() {
        let cmd = clap::Command::new("x")
            .arg(clap::Arg::new("log").long("log").env("SG_LOG").global(true))
            .subcommand(
                clap::Command::new("run")
                    .arg(clap::Arg::new("node").long("node-name").env("NODE_NAME")),
            );
        assert_eq!(
            flags(&cmd),
            [flag("log", "SG_LOG"), flag("node-name", "NODE_NAME")]
        );
    }

    #[test]
    fn every_flag_needs_its_row_and_its_variable_and_every_row_a_flag() {
        // Only the first cell names flags: `--gone` in the meaning is prose.
        let flags = [
            flag("log", "SG_LOG"),
            flag("proc-root", "SG_PROC_ROOT"),
            flag("new", "SG_NEW"),
        ];
        assert_eq!(
            differences(README, "#### Agent flags", &flags),
            [
                "--proc-root reads SG_PROC_ROOT; the README's row says `SG_PROC`",
                "takes --new (SG_NEW), not in the README",
                "in the README, not a flag: --old",
            ]
        );
        let right = [
            flag("log", "SG_LOG"),
            flag("proc-root", "SG_PROC"),
            flag("old", "SG_OLD"),
        ];
        assert!(differences(README, "#### Agent flags", &right).is_empty());
    }
}
