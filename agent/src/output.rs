//! `scan` output: JSON for machines, a table for people.

use std::fmt::Write;

use serde::Serialize;
use sessionguard_core::Session;
use sessionguard_core::printable::printable;

#[derive(Serialize)]
struct Doc<'a> {
    sessions: &'a [Session],
}

pub fn json(sessions: &[Session]) -> String {
    serde_json::to_string_pretty(&Doc { sessions }).expect("sessions always serialise")
}

pub fn table(sessions: &[Session]) -> String {
    let rows: Vec<[String; 10]> = sessions
        .iter()
        .map(|s| {
            [
                s.pod_name.clone().map_or_else(
                    || s.pod_uid.to_string(),
                    |p| format!("{}/{p}", s.namespace.as_deref().unwrap_or("?")),
                ),
                s.container_name
                    .clone()
                    .unwrap_or_else(|| s.container_id.short().to_string()),
                s.tty.clone(),
                s.pid.to_string(),
                s.uid.to_string(),
                s.processes.to_string(),
                s.started_at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                sessionguard_core::duration::format(std::time::Duration::from_secs(u64::from(
                    s.idle_seconds,
                ))),
                if s.console { "console" } else { "login" }.to_string(),
                printable(&command_line(s), 60),
            ]
            // Every cell may hold what a tenant chose (argv, a tty name).
            .map(|cell| printable(&cell, 253))
        })
        .collect();
    let header = [
        "POD",
        "CONTAINER",
        "TTY",
        "PID",
        "UID",
        "PROCS",
        "STARTED",
        "IDLE",
        "KIND",
        "COMMAND",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let last = cells.len() - 1;
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let _ = if i == last {
                write!(out, "{cell}")
            } else {
                write!(out, "{cell:<w$}  ")
            };
        }
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    if rows.is_empty() {
        out.push_str("(no terminal sessions in pods)\n");
    }
    out
}

/// The full argv, or the command name for a leader without one (cmdline
/// unreadable or empty, as for zombies and some kernel-spawned helpers).
fn command_line(s: &Session) -> String {
    if s.argv.iter().all(String::is_empty) {
        s.command.clone()
    } else {
        s.argv.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(argv: &[&str]) -> Session {
        Session {
            command: "bash (login)".into(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            ..crate::testing::session()
        }
    }

    /// The COMMAND column of the first row (ASCII tables only).
    fn command_cell(table: &str) -> &str {
        let mut lines = table.lines();
        let at = lines.next().unwrap().find("COMMAND").unwrap();
        &lines.next().unwrap()[at..]
    }

    #[test]
    fn table_shows_argv() {
        let t = table(&[session(&["/bin/bash", "-l"])]);
        assert_eq!(command_cell(&t), "/bin/bash -l");
    }

    #[test]
    fn table_falls_back_to_the_command_without_argv() {
        for argv in [&[][..], &[""][..]] {
            let t = table(&[session(argv)]);
            assert_eq!(command_cell(&t), "bash (login)", "{argv:?}");
        }
    }
}
